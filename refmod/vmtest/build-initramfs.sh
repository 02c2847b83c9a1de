#!/bin/sh
# Build a busybox initramfs holding vexfsref.ko, the tools and the guest test
# scripts, for a quick QEMU check without the plugin's image.
#   build-initramfs.sh TRIXIE_ROOT BUILD_DIR OUT.cpio.gz
# TRIXIE_ROOT: unpacked Debian tree holding the guest kernel's modules;
# BUILD_DIR: a refmod tree where `make all` has run.
set -eu
root=$1 build=$2 out=$3
moddir=$(ls -d "$root"/usr/lib/modules/* "$root"/lib/modules/* 2>/dev/null | head -n1)
here=$(cd "$(dirname "$0")" && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
chmod 755 "$stage"
mkdir -p "$stage/bin" "$stage/sbin" "$stage/lib/modules" "$stage/etc" "$stage/proc" \
	"$stage/sys" "$stage/dev" "$stage/tmp" "$stage/mnt" "$stage/root" "$stage/home/vexfs"
chmod 1777 "$stage/tmp"
cp /usr/bin/busybox "$stage/bin/busybox"
for app in $(/usr/bin/busybox --list); do
	[ "$app" = busybox ] || ln -s busybox "$stage/bin/$app"
done
# block drivers the kernel has as modules (6.12: virtio_blk, loop; 6.1: the virtio stack too)
: > "$stage/lib/modules/load.list"
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk loop; do
	f=$(find "$moddir/kernel/drivers" -name "$m.ko" -o -name "$m.ko.xz" | head -n1)
	[ -n "$f" ] || continue
	case $f in *.xz) xz -dc "$f" ;; *) cat "$f" ;; esac > "$stage/lib/modules/$m.ko"
	echo "$m" >> "$stage/lib/modules/load.list"
done
cp "$build/vexfsref.ko" "$stage/lib/modules/"
cp "$build/tools/mkfs.vexfsref" "$build/tools/vexctl" "$stage/bin/"
cp "$here/guest-fs.sh" "$here/guest-faults.sh" "$stage/"
printf 'root:x:0:0:root:/root:/bin/sh\nvexfs:x:1000:1000:vexfs:/home/vexfs:/bin/sh\n' > "$stage/etc/passwd"
printf 'root:x:0:\nvexfs:x:1000:\n' > "$stage/etc/group"
cat > "$stage/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs -o size=256m tmp /tmp
for m in $(cat /lib/modules/load.list); do insmod /lib/modules/$m.ko; done
test=$(sed -n 's/.*vxtest=\([a-z]*\).*/\1/p' /proc/cmdline)
echo "VXT START $test"
sh "/guest-$test.sh"
echo "VXT END $test"
sync
echo o > /proc/sysrq-trigger
sleep 10
INIT
chmod +x "$stage/init" "$stage/guest-fs.sh" "$stage/guest-faults.sh"
(cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1) > "$out"
