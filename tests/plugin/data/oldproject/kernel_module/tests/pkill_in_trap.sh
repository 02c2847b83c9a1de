#!/bin/bash
# Cleans up after itself the way the project's scripts do: kill whatever is left of "vexfs".
cleanup() {
    sudo pkill -f "vexfs" || true
}
trap cleanup EXIT
echo "testing"
