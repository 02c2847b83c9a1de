#!/bin/bash
# vexfs: user=root
[ "$(id -u)" = 0 ] || { echo "not root: $(id -un)"; exit 1; }
echo "running as root"
