#!/bin/sh
# Rebuild module + tools in the trixie chroot and the test initramfs.
#   rebuild.sh TRIXIE_ROOT OUTDIR
set -eu
root=$1 out=$2
here=$(cd "$(dirname "$0")/.." && pwd)
kver=$(ls "$root/usr/lib/modules" | head -n1)
rm -rf "$root/tmp/refmod-build"
cp -r "$here" "$root/tmp/refmod-build"
chroot "$root" make -C /tmp/refmod-build KDIR=/usr/src/linux-headers-$kver all > "$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
grep -i "warning" "$out/build.log" || true
"$here/vmtest/build-initramfs.sh" "$root" "$root/tmp/refmod-build" "$out/initrd.gz"
