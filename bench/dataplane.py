#!/usr/bin/env python3
"""Data-plane latency: what a sidecar pair and the gateway add, measured with real Envoy.

Three paths to the same tiny app (examples/apps/mesh_app.py), each driven by h2load (Debian's
nghttp2-client) at a fixed rate for a fixed time, so bounded in requests:
  direct               load -> app
  bare Envoy pair      load -> Envoy -> Envoy -> app, each a minimal static config (a router
                       and one cluster): what two Envoy hops cost on this machine, the floor
  sidecar pair         load -> client sidecar (outbound) -> app's sidecar (inbound) -> app
  gateway -> sidecar   load -> gateway -> app's sidecar (inbound) -> app
The table gives achieved requests per second, p50 and p99 latency, failures, and what each
path adds over direct at p50 (the target: a sidecar pair adds under 1 ms at 500 rps), and
the sidecar pair against the bare pair (what meshwright's config costs beyond Envoy itself).

  python bench/dataplane.py [--rate 500] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from meshwright.deliver.bundle import bundle_proxy, load_mesh  # noqa: E402
from meshwright.deliver.file_set import write_files  # noqa: E402

APP_PORT, GATEWAY_PORT, BARE_FIRST, BARE_SECOND = 18901, 18902, 18903, 18904
CLIENT_OFFSET, SERVER_OFFSET, GATEWAY_OFFSET = 3100, 3200, 3300

MESH = f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: app, namespace: default}}
spec:
  hosts: [app.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: app}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: server, namespace: default, annotations: {{meshwright.io/port-offset: "{SERVER_OFFSET}"}}}}
spec: {{address: 127.0.0.1, ports: {{http: {15006 + SERVER_OFFSET}}}, labels: {{app: app}}}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: server, namespace: default}}
spec:
  workloadSelector: {{labels: {{app: app}}}}
  ingress:
  - port: {{number: {15006 + SERVER_OFFSET}, protocol: HTTP, name: http}}
    defaultEndpoint: 127.0.0.1:{APP_PORT}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: client, namespace: default, annotations: {{meshwright.io/port-offset: "{CLIENT_OFFSET}"}}}}
spec: {{address: 127.0.0.1, labels: {{app: client}}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gateway, namespace: default, annotations: {{meshwright.io/port-offset: "{GATEWAY_OFFSET}"}}}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {GATEWAY_PORT}, name: http, protocol: HTTP}}
    bind: 127.0.0.1
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: gateway, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [gateway]
  http:
  - route: [{{destination: {{host: app.default.svc.cluster.local}}}}]
"""


def bare_envoy(listen: int, upstream: int, admin: int) -> str:
    """A minimal Envoy bootstrap: listen, route everything to one upstream (JSON is YAML)."""
    import json

    manager = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
               "stat_prefix": "bare", "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]}]},
               "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    address = lambda port: {"socket_address": {"address": "127.0.0.1", "port_value": port}}  # noqa: E731
    return json.dumps({"admin": {"address": address(admin)}, "static_resources": {
        "listeners": [{"name": "bare", "address": address(listen), "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}]}],
        "clusters": [{"name": "upstream", "load_assignment": {"cluster_name": "upstream", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address(upstream)}}]}]}}]}})


def wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"not answering: {url}")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def load(port: int, host: str, rate: int, seconds: int, scratch: str) -> dict:
    """h2load at a fixed rate: 10 clients at rate/10 each, for `seconds`."""
    log = tempfile.mktemp(prefix=f"h2load-{port}-", dir=scratch)
    clients = 10
    command = ["h2load", "--h1", "-c", str(clients), "--rps", str(rate // clients), "-D", str(seconds),
               "--log-file", log, "-H", f":authority: {host}", f"http://127.0.0.1:{port}/"]
    subprocess.run(command, check=True, capture_output=True, timeout=seconds + 30)
    latencies, failures, statuses = [], 0, {}
    with open(log) as handle:
        for line in handle:
            _, status, elapsed_us = line.split("\t")[:3]
            latencies.append(int(elapsed_us) / 1000.0)
            failures += status != "200"
            statuses[status] = statuses.get(status, 0) + 1
    if failures:
        print(f"port {port}: answers by status {statuses}", file=sys.stderr)
    return {"requests": len(latencies), "rps": len(latencies) / seconds, "p50": percentile(latencies, 0.50),
            "p99": percentile(latencies, 0.99), "failures": failures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=500, help="requests per second (default 500)")
    parser.add_argument("--seconds", type=int, default=10, help="seconds per path (default 10)")
    args = parser.parse_args()
    if not shutil.which("h2load"):
        raise SystemExit("h2load not found: apt-get install nghttp2-client")
    envoy = os.path.join(os.path.dirname(sys.executable), "envoy")
    processes = []
    scratch = tempfile.mkdtemp(prefix="meshwright-dataplane-")
    try:
        with open(os.path.join(scratch, "mesh.yaml"), "w") as handle:
            handle.write(MESH)
        mesh = load_mesh([os.path.join(scratch, "mesh.yaml")])
        app = [sys.executable, os.path.join(ROOT, "examples", "apps", "mesh_app.py"), "--service", "app", "--instance", "app-1", "--port", str(APP_PORT)]
        processes.append(subprocess.Popen(app, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for proxy, offset in (("server.default", SERVER_OFFSET), ("client.default", CLIENT_OFFSET), ("gateway.default", GATEWAY_OFFSET)):
            config_dir = os.path.join(scratch, proxy)
            write_files(config_dir, bundle_proxy(mesh, proxy, config_dir).files)
            processes.append(subprocess.Popen([envoy, "-c", os.path.join(config_dir, "bootstrap.yaml"), "-l", "error", "--concurrency", "1",
                                               "--use-dynamic-base-id"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_http(f"http://127.0.0.1:{15021 + offset}/healthz/ready")
        for listen, upstream, admin in ((BARE_SECOND, APP_PORT, BARE_SECOND + 100), (BARE_FIRST, BARE_SECOND, BARE_FIRST + 100)):
            bootstrap = os.path.join(scratch, f"bare-{listen}.yaml")
            with open(bootstrap, "w") as handle:
                handle.write(bare_envoy(listen, upstream, admin))
            processes.append(subprocess.Popen([envoy, "-c", bootstrap, "-l", "error", "--concurrency", "1", "--use-dynamic-base-id"],
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_http(f"http://127.0.0.1:{admin}/ready")
        wait_http(f"http://127.0.0.1:{APP_PORT}/")
        paths = [
            ("direct", APP_PORT, "app"),
            ("bare Envoy pair", BARE_FIRST, "app"),
            ("sidecar pair", 15001 + CLIENT_OFFSET, "app.default.svc.cluster.local"),
            ("gateway -> sidecar", GATEWAY_PORT, "app.example.com"),
        ]
        load(APP_PORT, "app", args.rate, 2, scratch)  # warm up the app
        results = [(name, load(port, host, args.rate, args.seconds, scratch)) for name, port, host in paths]
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=10)
        shutil.rmtree(scratch, ignore_errors=True)
    base = results[0][1]
    print(f"\nData plane at {args.rate} requests/s for {args.seconds} s per path (h2load, 10 HTTP/1.1 connections; Envoy --concurrency 1)\n")
    print(f"{'path':<20} {'requests':>9} {'rps':>7} {'p50 ms':>8} {'p99 ms':>8} {'failed':>7} {'+p50 ms':>8} {'p50 x':>6}")
    for name, result in results:
        print(f"{name:<20} {result['requests']:>9} {result['rps']:>7.0f} {result['p50']:>8.3f} {result['p99']:>8.3f} {result['failures']:>7} "
              f"{result['p50'] - base['p50']:>8.3f} {result['p50'] / base['p50']:>6.2f}")
    bare, pair = results[1][1], results[2][1]
    added = pair["p50"] - base["p50"]
    print(f"\nsidecar pair adds {added:.3f} ms at p50: {'PASS' if added < 1.0 else 'MISS'} (target < 1 ms); "
          f"two bare Envoy hops add {bare['p50'] - base['p50']:.3f} ms, so meshwright's config adds {pair['p50'] - bare['p50']:+.3f} ms")


if __name__ == "__main__":
    main()
