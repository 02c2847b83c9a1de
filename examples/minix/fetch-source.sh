#!/bin/sh
# Fetch fs/minix from Debian's linux-source-6.12 (the guest kernel's version) into ./src, with our Kbuild.
# Run by the harness (the profile's `fetch:`) when ./src is missing; safe to run by hand.
# The 150 MB package and the extracted tree are cached under $VEXFS_CACHE_DIR/sources (default
# ~/.cache/pytest-vexfs/sources): only the first run on a machine downloads and unpacks (~30 s).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
package=linux-source-6.12
suite=${VEXFS_MINIX_SUITE:-trixie}
mirror=${VEXFS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${VEXFS_CACHE_DIR:-$HOME/.cache/pytest-vexfs}/sources
mkdir -p "$cache"
exec 9>"$cache/.$package.lock"
flock 9

if [ ! -d "$cache/minix" ]; then
    apt_dir=$(mktemp -d "$cache/.apt.XXXXXX")
    trap 'rm -rf "$apt_dir"' EXIT
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
    echo "deb $mirror $suite main" > "$apt_dir/sources.list"
    set -- -o Dir::Etc::sourcelist="$apt_dir/sources.list" -o Dir::Etc::sourceparts=- \
        -o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache="$apt_dir" -o APT::Sandbox::User=root -q
    echo "fetch-source: downloading $package from $suite" >&2
    apt-get "$@" update >/dev/null
    (cd "$apt_dir" && apt-get "$@" download "$package" >/dev/null)
    deb=$(ls "$apt_dir"/"$package"_*.deb)
    echo "fetch-source: extracting fs/minix from $(basename "$deb")" >&2
    mkdir -p "$apt_dir/tree"
    dpkg-deb --fsys-tarfile "$deb" | tar -xO "./usr/src/$package.tar.xz" \
        | tar -xJ -C "$apt_dir/tree" --wildcards "*/fs/minix/*"
    basename "$deb" > "$apt_dir/tree/VERSION"
    mkdir -p "$apt_dir/minix"
    cp "$apt_dir"/tree/*/fs/minix/*.[ch] "$apt_dir/minix/"
    cp "$apt_dir/tree/VERSION" "$apt_dir/minix/"
    mv "$apt_dir/minix" "$cache/minix"
fi

rm -rf "$here/src.tmp"
mkdir "$here/src.tmp"
cp "$cache"/minix/* "$here/src.tmp/"
cp "$here/Kbuild" "$here/src.tmp/Kbuild"
rm -rf "$here/src"
mv "$here/src.tmp" "$here/src"
echo "fetch-source: $here/src ready ($(cat "$here/src/VERSION"))" >&2
