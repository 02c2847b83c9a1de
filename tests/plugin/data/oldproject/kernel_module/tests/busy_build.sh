#!/bin/bash
# vexfs: hang_timeout=5
# Stands for a build in the guest (cc1 busy for minutes under TCG): three minutes of CPU under a time
# limit (the project's was 60 s; 5 s keeps the self-test short).
timeout 180 bash -c 'while :; do :; done'
echo "built"
