#!/bin/sh
# Fetch one filesystem of Debian's linux-source-6.12 (the guest kernel's version) into ./src of the
# current directory (an example's), with that example's Kbuild:  ../fetch-kernel-fs.sh minix
# Run by the harness (a profile's `fetch:`) in the profile's directory when ./src is missing; safe to run
# by hand. The 150 MB package and the extracted fs/NAME are cached under $VEXFS_CACHE_DIR/sources
# (default ~/.cache/pytest-vexfs/sources): only the first run on a machine downloads and unpacks (~30 s).
set -eu
fs=${1:?usage: fetch-kernel-fs.sh FS (a directory under fs/ of the kernel tree, e.g. minix or fat)}
here=$(pwd)
package=linux-source-6.12
suite=${VEXFS_KERNEL_FS_SUITE:-${VEXFS_MINIX_SUITE:-trixie}}
mirror=${VEXFS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${VEXFS_CACHE_DIR:-$HOME/.cache/pytest-vexfs}/sources
mkdir -p "$cache"
exec 9>"$cache/.$package.lock"
flock 9

if [ ! -d "$cache/$fs" ]; then
    apt_dir=$(mktemp -d "$cache/.apt.XXXXXX")
    trap 'rm -rf "$apt_dir"' EXIT
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
    echo "deb $mirror $suite main" > "$apt_dir/sources.list"
    set -- -o Dir::Etc::sourcelist="$apt_dir/sources.list" -o Dir::Etc::sourceparts=- \
        -o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache="$apt_dir" -o APT::Sandbox::User=root -q
    echo "fetch-kernel-fs: downloading $package from $suite" >&2
    apt-get "$@" update >/dev/null
    (cd "$apt_dir" && apt-get "$@" download "$package" >/dev/null)
    deb=$(ls "$apt_dir"/"$package"_*.deb)
    echo "fetch-kernel-fs: extracting fs/$fs from $(basename "$deb")" >&2
    mkdir -p "$apt_dir/tree"
    dpkg-deb --fsys-tarfile "$deb" | tar -xO "./usr/src/$package.tar.xz" \
        | tar -xJ -C "$apt_dir/tree" --wildcards "*/fs/$fs/*"
    basename "$deb" > "$apt_dir/tree/VERSION"
    mkdir -p "$apt_dir/$fs"
    cp "$apt_dir"/tree/*/fs/"$fs"/*.[ch] "$apt_dir/$fs/"
    cp "$apt_dir/tree/VERSION" "$apt_dir/$fs/"
    mv "$apt_dir/$fs" "$cache/$fs"
fi

rm -rf "$here/src.tmp"
mkdir "$here/src.tmp"
cp "$cache/$fs"/* "$here/src.tmp/"
cp "$here/Kbuild" "$here/src.tmp/Kbuild"
rm -rf "$here/src"
mv "$here/src.tmp" "$here/src"
echo "fetch-kernel-fs: $here/src ready ($(cat "$here/src/VERSION"))" >&2
