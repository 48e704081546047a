#!/usr/bin/env python3
"""The seed demo on this machine, no root: `demo.py up` renders every proxy of
examples/seed/mesh with meshwright, starts the apps and the Envoys under state/demo/, waits
until traffic flows through the gateway, and prints what runs where; `demo.py down` stops it.

(`ansible-playbook playbooks/deploy.yml` will take over this job; the mesh config is the same.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MESH = os.path.join(HERE, "mesh")
STATE = os.path.join(ROOT, "state", "demo")
PIDS = os.path.join(STATE, "pids.json")
BIN = os.path.dirname(sys.executable)
GATEWAY = "http://127.0.0.1:8080"

# proxy -> (port offset, app command line or None for the gateway)
APPS = {
    "ingress.default": (100, None),
    "order-1.default": (200, ["--service", "order-service", "--instance", "order-1", "--call", "http://127.0.0.1:15201/payment", "--call-host", "payment-service.default.svc.cluster.local", "--call-prefix", "/order"]),
    "order-2.default": (300, ["--service", "order-service", "--instance", "order-2", "--call", "http://127.0.0.1:15301/payment", "--call-host", "payment-service.default.svc.cluster.local", "--call-prefix", "/order"]),
    "payment-1.default": (400, ["--service", "payment-service", "--instance", "payment-1"]),
    "payment-2.default": (500, ["--service", "payment-service", "--instance", "payment-2"]),
}


def start(command: list[str], log_path: str) -> int:
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    return process.pid


def wait_for(url: str, timeout: float, expect=lambda body: True) -> str:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body = response.read().decode()
                if expect(body):
                    return body
        except (OSError, urllib.error.URLError) as error:
            last = str(error)
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {url}: {last}")


def up() -> None:
    if os.path.exists(PIDS):
        down(quiet=True)
    os.makedirs(STATE, exist_ok=True)
    meshwright = os.path.join(BIN, "meshwright")
    envoy = os.path.join(BIN, "envoy")
    pids = []
    for proxy, (offset, app) in APPS.items():
        config_dir = os.path.join(STATE, proxy, "config")
        subprocess.run([meshwright, "render", "--mesh", MESH, "--proxy", proxy, "--out", config_dir], check=True)
        if app:
            pids.append(start([sys.executable, os.path.join(ROOT, "examples", "apps", "mesh_app.py"), "--port", str(9000 + offset), *app], os.path.join(STATE, proxy, "app.log")))
        pids.append(start([envoy, "-c", os.path.join(config_dir, "bootstrap.yaml"), "-l", "warning", "--use-dynamic-base-id", "--base-id-path", os.path.join(STATE, proxy, "base-id")], os.path.join(STATE, proxy, "envoy.log")))
    with open(PIDS, "w") as handle:
        json.dump(pids, handle)
    for proxy, (offset, _) in APPS.items():
        wait_for(f"http://127.0.0.1:{15021 + offset}/healthz/ready", 30)
    wait_for(f"{GATEWAY}/order", 30, lambda body: '"upstream"' in body)
    print("\nmeshwright seed demo is up (state in state/demo/):\n")
    print(f"  {'proxy':<20} {'admin':>6} {'inbound':>8} {'outbound':>9} {'stats':>6}  app")
    for proxy, (offset, app) in APPS.items():
        inbound = str(15006 + offset) if app else "8080"
        print(f"  {proxy:<20} {15000 + offset:>6} {inbound:>8} {15001 + offset if app else '-':>9} {15090 + offset:>6}  {9000 + offset if app else '-'}")
    print(f"""
Try:
  curl -s {GATEWAY}/order        # gateway -> order-service -> payment-service, all through sidecars
  curl -s {GATEWAY}/payment      # gateway -> payment-service
  for i in $(seq 15); do curl -s -o /dev/null -w '%{{http_code}} ' {GATEWAY}/order; done; echo   # 10/s, then 429
  curl -s 127.0.0.1:15290/stats/prometheus | grep payment-service | head     # order-1's metrics
  tail -n 2 state/demo/order-1.default/envoy.log     # access log lines (JSON)
Stop it with: make demo-down""")


def down(quiet: bool = False) -> None:
    if not os.path.exists(PIDS):
        if not quiet:
            print("demo is not running")
        return
    with open(PIDS) as handle:
        pids = json.load(handle)
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    os.unlink(PIDS)
    if not quiet:
        print(f"stopped {len(pids)} processes")


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "up"
    {"up": up, "down": down}[command]()
