#!/usr/bin/env python3
"""Edit a VirtualService weight in the control plane's watched mesh folder and show the traffic
split change, with no playbook run (the demo of `make demo`, whose proxies are delivered by xDS).

    examples/seed/split.py 80      # order-service -> payment-service: 80% to payment-1, 20% to payment-2

It writes split.yaml beside the served mesh config (a DestinationRule with one subset per
payment instance, and a VirtualService weighting them), waits until every proxy has acknowledged
the new routes (`meshwright status`'s source, the control plane's /status), and then sends
requests through the gateway (gateway -> order-service -> payment-service) and counts which
payment instance answered. The next deploy puts the folder back as the controller's mesh config
(removing split.yaml): the controller's folder stays the source of truth.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MESH_DIR = os.path.join(ROOT, "state", "local", "control-plane", "etc", "meshwright", "mesh")
FILE_NAME = "split.yaml"
GATEWAY_PACE = 0.11  # seconds between requests: under the gateway's rate limit of 10 a second
SPLIT = """\
# Written by examples/seed/split.py: order-service's calls to payment-service, split by weight.
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: payment-service, namespace: default}}
spec:
  host: payment-service.default.svc.cluster.local
  subsets:
  - {{name: payment-1, labels: {{instance: payment-1}}}}
  - {{name: payment-2, labels: {{instance: payment-2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: payment-split, namespace: default}}
spec:
  hosts: [payment-service.default.svc.cluster.local]
  http:
  - route:
    - destination: {{host: payment-service.default.svc.cluster.local, subset: payment-1}}
      weight: {first}
    - destination: {{host: payment-service.default.svc.cluster.local, subset: payment-2}}
      weight: {second}
"""


def read_status(address: str) -> dict:
    with urllib.request.urlopen(f"http://{address}/status", timeout=5) as response:
        return json.loads(response.read())


def routes_acked(status: dict) -> dict[str, str]:
    """Proxy -> the routes version it acknowledged (proxies with a stream only)."""
    acked = {}
    for proxy in status["proxies"]:
        for stream in proxy["streams"]:
            routes = stream["types"].get("routes")
            if routes and routes["state"] == "SYNCED":
                acked[proxy["proxy"]] = routes["acked"]
    return acked


def wait_applied(address: str, generation: int, before: dict[str, str], timeout: float) -> dict:
    """The status once the control plane took the edit and every sidecar acknowledged new routes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = read_status(address)
        if status.get("rejection") and status["generation"] == generation:
            problems = "\n  ".join(status["rejection"]["problems"])
            sys.exit(f"the control plane rejected the edit (proxies keep their config):\n  {problems}")
        acked = routes_acked(status)
        callers = [proxy for proxy in before if proxy.startswith("order-")]  # the sidecars that call payment-service
        if status["generation"] > generation and all(acked.get(proxy) not in (None, before[proxy]) for proxy in callers):
            return status
        time.sleep(0.02)
    sys.exit(f"the edit did not reach the proxies within {timeout:g} s: see `meshwright status --server {address}`")


def count_answers(gateway: str, requests: int) -> collections.Counter:
    """Which payment instance answered each request (paced: the gateway allows 10 a second, rate-limits.yaml)."""
    host, _, port = gateway.rpartition(":")
    answers = collections.Counter()
    for _ in range(requests):
        time.sleep(GATEWAY_PACE)
        connection = http.client.HTTPConnection(host, int(port), timeout=5)
        try:
            connection.request("GET", "/order")
            response = connection.getresponse()
            raw = response.read()
            answers[json.loads(raw).get("upstream", {}).get("instance") if response.status == 200 else f"HTTP {response.status}"] += 1
        except (OSError, ValueError) as error:
            answers[f"error: {error}"] += 1
        finally:
            connection.close()
    return answers


def write_and_wait(args: argparse.Namespace, path: str, text: str, before: dict) -> None:
    temporary = path + ".tmp"
    with open(temporary, "w") as handle:  # a whole file or none: the watcher never reads half an edit
        handle.write(text)
    started = time.monotonic()
    os.replace(temporary, path)
    print(f"wrote {path}: payment-1 {args.weight}%, payment-2 {100 - args.weight}% (no playbook run)")
    wait_applied(args.status, before["generation"], routes_acked(before), args.timeout)
    print(f"every order-service sidecar routes by it {time.monotonic() - started:.2f} s after the save")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weight", type=int, help="percent of order-service's calls to payment-1 (the rest to payment-2)")
    parser.add_argument("--mesh-dir", default=MESH_DIR, help="the control plane's watched mesh folder (default: the demo's)")
    parser.add_argument("--status", default="127.0.0.1:15014", help="the control plane's status endpoint")
    parser.add_argument("--gateway", default="127.0.0.1:8080", help="the ingress gateway")
    parser.add_argument("--requests", type=int, default=20, help="requests to count afterwards")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the proxies")
    args = parser.parse_args(argv)
    if not 0 <= args.weight <= 100:
        parser.error(f"weight {args.weight}: a percentage from 0 to 100")
    if not os.path.isdir(args.mesh_dir):
        parser.error(f"--mesh-dir {args.mesh_dir}: no such folder (is the demo up with its proxies on xds? make demo)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    before = read_status(args.status)
    path = os.path.join(args.mesh_dir, FILE_NAME)
    text = SPLIT.format(first=args.weight, second=100 - args.weight)
    if os.path.exists(path) and open(path).read() == text:
        print(f"{path} already says payment-1 {args.weight}%, payment-2 {100 - args.weight}%")
    else:
        write_and_wait(args, path, text, before)
    answers = count_answers(args.gateway, args.requests)
    print(f"{args.requests} requests to {args.gateway}/order answered by: "
          + ", ".join(f"{instance} {count}" for instance, count in sorted(answers.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
