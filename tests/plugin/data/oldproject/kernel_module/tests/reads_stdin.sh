#!/bin/bash
set -e
echo "This test loads and unloads the module."
read -p "Continue? [y/N] " answer
[ "$answer" = y ]
echo "continuing"
