#!/bin/bash
# Old-style test with a planted bug: the module oopses when its proc file is written.
cd "$(dirname "$0")/../.."
make module || exit 1
sudo insmod kernel/oldhello.ko 2>/dev/null || true
echo 1 | sudo tee /proc/oldhello_oops
echo "the write returned (it should not have)"
