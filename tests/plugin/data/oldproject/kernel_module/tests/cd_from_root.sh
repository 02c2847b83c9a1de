#!/bin/bash
# Written to run from the repository root, as CI runs it: bash kernel_module/tests/cd_from_root.sh
set -e
cd kernel_module
test -f Makefile
echo "found the module's Makefile in $(pwd)"
