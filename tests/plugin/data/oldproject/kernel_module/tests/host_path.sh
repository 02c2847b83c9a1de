#!/bin/bash
set -e
MODULE_DIR=/home/alice/src/vexfs/kernel_module
cd "$MODULE_DIR"
make
