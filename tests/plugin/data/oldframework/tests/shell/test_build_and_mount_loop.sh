#!/bin/bash
# Old-style test: build the module from the repository root, load it with sudo, make an ext4 image in
# /tmp on a loop device, mount it and write to it, then clean up.
set -euo pipefail
cd "$(dirname "$0")/../.."
make module
sudo insmod kernel/oldhello.ko greeting=7
grep -q '^oldhello ' /proc/modules
dmesg | grep -q 'oldhello: hello (greeting=7)'
dd if=/dev/zero of=/tmp/oldtest.img bs=1M count=16 status=none
LOOP=$(sudo losetup -f --show /tmp/oldtest.img)
sudo mkfs.ext4 -q "$LOOP"
sudo mkdir -p /tmp/oldtest.mnt
sudo mount "$LOOP" /tmp/oldtest.mnt
echo "written by the old test" | sudo tee /tmp/oldtest.mnt/hello.txt > /dev/null
sudo umount /tmp/oldtest.mnt
sudo losetup -d "$LOOP"
rm -f /tmp/oldtest.img
sudo rmmod oldhello
echo "PASS: build, load, loop device, mount"
