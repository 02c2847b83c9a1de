#!/usr/bin/env bash
# The old framework's deploy command, as its users type it:
#   ./scripts/deploy_infrastructure.sh --environment test [--mode full|terraform-only] [--dry-run]
#   ./scripts/deploy_infrastructure.sh --environment test --force-destroy
# Brings up the environment's hosts (Terraform where its libvirt provider can be installed, else VMs on
# this machine), writes ansible/inventory/<env>/hosts.yml for ansible/playbooks/run_domain_tests.yml.
# See pytest_vexfs/compat/deploy.py.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" -m pytest_vexfs.compat.deploy "$@"
