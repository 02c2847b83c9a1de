#!/usr/bin/env bash
# Make this machine its own "remote" libvirt host, reachable as qemu+ssh://root@127.0.0.1/system, so that
# the remote path of the libvirt backend (uploads into a pool, console stream, SSH tunnel) runs for real.
#
#   scripts/loopback-libvirt-host.sh up     key + authorised login + sshd on 127.0.0.1 + client config
#   scripts/loopback-libvirt-host.sh down   undo all of it (stops only the sshd this script started)
#
# What "up" does (idempotent), the same things a real fleet host needs:
#   - a dedicated key pair under the project's cache ($XDG_CACHE_HOME/pytest-vexfs/loopback-host), its
#     public key appended to root's authorized_keys (nothing else there is touched);
#   - sshd listening on 127.0.0.1:22 (started here, without systemd, unless something listens already);
#   - /etc/ssh/ssh_config.d/pytest-vexfs-loopback.conf: for host 127.0.0.1, OpenSSH (libvirt's qemu+ssh
#     transport) and the plugin's tunnel (which reads `ssh -G`) use that key and a known_hosts file
#     holding this sshd's host key, so nothing prompts.
# libvirtd itself must run already (without systemd: virtlogd -d && libvirtd -d). The storage pool is
# created by whoever uses it (the self-tests make and remove their own).
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

cache="${XDG_CACHE_HOME:-$HOME/.cache}/pytest-vexfs/loopback-host"
key="$cache/id_ed25519"
known="$cache/known_hosts"
client_conf=/etc/ssh/ssh_config.d/pytest-vexfs-loopback.conf
pidfile=/run/pytest-vexfs-loopback-sshd.pid
authorized=/root/.ssh/authorized_keys
marker="pytest-vexfs-loopback-host"

listening() { ss -Hltn 'sport = :22' | grep -q .; }

up() {
    mkdir -p "$cache" /root/.ssh /run/sshd
    chmod 700 /root/.ssh "$cache"
    [ -f "$key" ] || ssh-keygen -q -t ed25519 -N "" -C "$marker" -f "$key"
    touch "$authorized"
    chmod 600 "$authorized"
    grep -qF "$(cut -d' ' -f2 "$key.pub")" "$authorized" || cat "$key.pub" >> "$authorized"
    [ -f /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -A
    if ! listening; then
        /usr/sbin/sshd -o ListenAddress=127.0.0.1 -o PermitRootLogin=prohibit-password \
            -o PasswordAuthentication=no -o PidFile="$pidfile"
        for _ in $(seq 50); do listening && break; sleep 0.1; done
        listening || { echo "sshd did not start listening on 127.0.0.1:22" >&2; exit 1; }
    fi
    echo "127.0.0.1 $(cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub)" > "$known"
    cat > "$client_conf" <<EOF
# written by pytest-vexfs scripts/loopback-libvirt-host.sh (removed by its "down")
Host 127.0.0.1
    IdentityFile $key
    UserKnownHostsFile ~/.ssh/known_hosts $known
EOF
    ssh -o BatchMode=yes root@127.0.0.1 true
}

down() {
    if [ -f "$pidfile" ]; then
        kill "$(cat "$pidfile")" 2>/dev/null || true
        rm -f "$pidfile"
    fi
    rm -f "$client_conf"
    if [ -f "$authorized" ] && [ -f "$key.pub" ]; then
        grep -vF "$(cut -d' ' -f2 "$key.pub")" "$authorized" > "$authorized.tmp" || true
        mv "$authorized.tmp" "$authorized"
    fi
    rm -rf "$cache"
}

case "${1:-up}" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
