#!/bin/bash
# vexfs: args=--quick "two words"
# make check runs this one as: kernel_module/tests/with_arguments.sh --quick "two words"
[ "$1" = --quick ] && [ "$2" = "two words" ] || { echo "arguments: $*"; exit 1; }
echo "arguments as make check gives them"
