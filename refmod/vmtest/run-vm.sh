#!/bin/sh
# Boot the test initramfs under TCG with a 512 MiB scratch disk as /dev/vdb.
#   run-vm.sh KERNEL INITRD DISK TEST LOG [TIMEOUT]
# TEST is fs or faults; the console goes to LOG.
set -eu
kernel=$1 initrd=$2 disk=$3 test=$4 log=$5 limit=${6:-900}
exec timeout "$limit" qemu-system-x86_64 -M q35 -accel tcg,tb-size=64 -m 1024 -smp 1 \
	-nographic -no-reboot -kernel "$kernel" -initrd "$initrd" \
	-append "console=ttyS0 panic=-1 loglevel=7 vxtest=$test" \
	-drive "file=$disk,format=raw,if=virtio,cache=unsafe" \
	</dev/null >"$log" 2>&1
