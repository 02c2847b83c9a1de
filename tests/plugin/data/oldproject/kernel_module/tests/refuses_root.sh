#!/bin/bash
if [ "$EUID" -eq 0 ]; then
    echo "Don't run this script as root"
    exit 0
fi
echo "running as $(id -un)"
sudo sh -c 'id -u > /root/sudo-worked'
[ "$(sudo cat /root/sudo-worked)" = 0 ]
echo "sudo works"
