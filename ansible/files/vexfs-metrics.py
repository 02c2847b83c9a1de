#!/usr/bin/env python3
"""Minimal Prometheus exporter for a pytest-vexfs test host (stdlib only, no node_exporter needed).

Serves /metrics: load, memory, kernel taint, loaded vexfs modules and kernel fault counts from dmesg,
labelled with the host's test domain.
"""
import http.server
import os
import re
import subprocess
import sys

DOMAIN = os.environ.get("VEXFS_DOMAIN", "")
FAULTS = {
    "oops": re.compile(r"Oops:|BUG: kernel NULL pointer"),
    "warning": re.compile(r"WARNING: CPU:"),
    "soft_lockup": re.compile(r"soft lockup"),
    "hung_task": re.compile(r"blocked for more than"),
    "rcu_stall": re.compile(r"rcu.*detected stalls"),
}


def metrics() -> str:
    lines = []
    lab = f'domain="{DOMAIN}"'
    with open("/proc/loadavg") as f:
        lines.append(f"vexfs_host_load1{{{lab}}} {f.read().split()[0]}")
    mem = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            mem[key] = int(value.split()[0]) * 1024
    lines.append(f"vexfs_host_memory_available_bytes{{{lab}}} {mem.get('MemAvailable', 0)}")
    with open("/proc/sys/kernel/tainted") as f:
        lines.append(f"vexfs_host_kernel_tainted{{{lab}}} {f.read().strip()}")
    with open("/proc/modules") as f:
        loaded = sum(1 for line in f if line.startswith("vexfs"))
    lines.append(f"vexfs_host_modules_loaded{{{lab}}} {loaded}")
    log = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
    for kind, pattern in FAULTS.items():
        lines.append(f'vexfs_host_kernel_faults{{{lab},kind="{kind}"}} {len(pattern.findall(log))}')
    return "\n".join(lines) + "\n"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path != "/metrics":
            self.send_error(404)
            return
        body = metrics().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9100
    http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
