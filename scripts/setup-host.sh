#!/usr/bin/env bash
# Prepare a Debian 12/13 host for pytest-vexfs: system packages, the Python package, the guest image.
#   sudo scripts/setup-host.sh          developer machine
#   scripts/setup-host.sh --ci          also what the project's own test suite needs (CI)
#   scripts/setup-host.sh --no-image    packages and the Python package only (.ci/run builds the image
#                                       itself, beside the debug kernel)
set -euo pipefail
cd "$(dirname "$0")/.."
ci=false
image=true
for arg in "$@"; do
    case "$arg" in
        --ci) ci=true ;;
        --no-image) image=false ;;
        *) echo "setup-host.sh: unknown option $arg (known: --ci --no-image)" >&2; exit 2 ;;
    esac
done

packages=(qemu-system-x86 qemu-utils debootstrap busybox-static e2fsprogs cpio zstd xz-utils
          openssh-client kmod patch ca-certificates binutils)  # binutils: addr2line, file:line in reports
# The debug kernel flavour (--vexfs-kernel 6.12-debug) is built from linux-source-6.12 on first use.
debug_kernel=(gcc make libc6-dev flex bison bc perl libelf-dev ccache)
if $ci; then
    # PostgreSQL for the results-history tests, promtool for the alert rules, amtool for
    # monitoring/alertmanager.yml, libvirt for the libvirt backend tests, sshd for reaching it as a
    # remote host over loopback.
    packages+=(postgresql prometheus prometheus-alertmanager libvirt-daemon-system libvirt-dev pkg-config
               python3-dev openssh-server "${debug_kernel[@]}")
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${packages[@]}"

extras="dev"
$ci && extras="dev,postgres,plot,libvirt,coverage,kcidb"
python3 -m pip install -q -e ".[${extras}]"
if $ci; then
    python3 -m pip install -q ansible-core python-hcl2
fi

# Build the guest image now (about 2 minutes the first time; cached afterwards).
if $image; then vexfs-vm image build; fi
