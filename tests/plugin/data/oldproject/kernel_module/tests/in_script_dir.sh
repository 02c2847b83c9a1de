#!/bin/bash
# vexfs: cwd=script
# Reads its data relative to its own directory.
set -e
test -f data/input.txt
cat data/input.txt
