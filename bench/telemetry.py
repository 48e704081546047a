"""Scrape cost of the mesh's metrics: series per proxy and Prometheus' memory for N proxies.

    python bench/telemetry.py [--proxies 200] [--seconds 30] [--scrape-interval 2s]

1. A real two-proxy mesh (client -> reviews, rendered by meshwright, real Envoy) takes bounded
   traffic; the bench reads each sidecar's /stats/prometheus, all of it and `?usedonly`.
2. N stats endpoints replay those two real expositions (half client-like, half server-like),
   each with its own workload names, as N proxies' stats ports would answer.
3. Debian's Prometheus scrapes them for --seconds with the configuration `meshwright prometheus`
   writes, three ways: Istio's metrics (the default), all of Envoy's used stats
   (--envoy-stats), and all of Envoy's stats (what a plain scrape of /stats/prometheus stores).
   For each: series per proxy (Prometheus' own count after relabelling), head series, and the
   resident memory of the Prometheus process at the end.

Runs on loopback only. `targets` is how many proxies had been scraped when measured (the replay is
one Python process: on a busy machine the plain scrape of every stat may not reach them all).
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from meshwright.check.pipeline import validate_mesh  # noqa: E402
from meshwright.compile.prometheus import CONFIG_FILE, TARGETS_FILE, prometheus_files  # noqa: E402
from meshwright.model.load import load_paths  # noqa: E402
from tests.harness import Backend, Envoy, free_offset, free_port, render, request  # noqa: E402

MESH = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: reviews}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: client, namespace: default, annotations: {{meshwright.io/port-offset: "{client_offset}"}}}}
spec: {{address: 127.0.0.1, labels: {{app: client, version: v1}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: reviews, namespace: default, annotations: {{meshwright.io/port-offset: "{reviews_offset}"}}}}
spec:
  address: 127.0.0.1
  ports: {{http: {reviews_inbound}}}
  labels: {{app: reviews, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: reviews, namespace: default}}
spec:
  workloadSelector: {{labels: {{app: reviews}}}}
  ingress:
  - port: {{number: {reviews_inbound}, protocol: HTTP, name: http}}
    bind: 127.0.0.1
    defaultEndpoint: 127.0.0.1:{reviews_app}
"""

MODES = (
    ("Istio's metrics (default)", False, True),
    ("+ Envoy's used stats (--envoy-stats)", True, True),
    ("all Envoy stats, plain scrape", None, False),
)


def real_expositions(folder: str, requests: int) -> dict[str, dict[str, str]]:
    """{"client"|"reviews": {"all": text, "usedonly": text}} from real Envoys after traffic."""
    backend = Backend("reviews", "reviews-1")
    client_offset = free_offset()
    reviews_offset = free_offset((client_offset,))
    mesh_file = os.path.join(folder, "mesh.yaml")
    with open(mesh_file, "w") as handle:
        handle.write(MESH.format(client_offset=client_offset, reviews_offset=reviews_offset, reviews_inbound=free_port(),
                                 reviews_app=backend.port))
    envoys = {}
    try:
        for name, offset in (("reviews", reviews_offset), ("client", client_offset)):
            out = os.path.join(folder, name)
            render(mesh_file, f"{name}.default", out)
            envoys[name] = (Envoy(out, 15000 + offset), 15090 + offset)
        for _ in range(requests):
            status, _, _ = request(15001 + client_offset, "/", host="reviews.default.svc.cluster.local:9080")
            assert status == 200, status
        time.sleep(6)  # Envoy merges histograms into its stats at each flush (every 5 s)
        return {name: {kind: fetch(f"http://127.0.0.1:{port}/stats/prometheus{query}") for kind, query in (("all", ""), ("usedonly", "?usedonly"))}
                for name, (_, port) in envoys.items()}, mesh_file
    finally:
        for envoy, _ in envoys.values():
            envoy.stop()
        backend.close()


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=120) as response:
        return response.read().decode()


def series_lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


class ReplayedProxies:
    """N stats endpoints on loopback, each answering a real exposition with its own names."""

    def __init__(self, expositions: dict[str, dict[str, str]], count: int):
        self.servers, self.targets = [], []
        for index in range(count):
            kind = "client" if index % 2 == 0 else "reviews"
            name = f"{kind}-{index}"
            bodies = {key: re.sub(rf'(_workload=")({kind})"', rf'\g<1>{name}"', text).encode() for key, text in expositions[kind].items()}
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler(bodies))
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.servers.append(server)
            self.targets.append((f"{name}.default", kind, f"127.0.0.1:{server.server_address[1]}"))

    @staticmethod
    def _handler(bodies: dict[str, bytes]):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = bodies["usedonly" if "usedonly" in urllib.parse.urlsplit(self.path).query else "all"]
                self.send_response(200)
                self.send_header("content-type", "text/plain; version=0.0.4")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # Prometheus stopped while scraping (the end of a measurement)

            def log_message(self, *args):
                pass
        return Handler

    def close(self):
        for server in self.servers:
            server.shutdown()
            server.server_close()


def prometheus_folder(folder: str, mesh_file: str, proxies: ReplayedProxies, interval: str, envoy_stats: bool | None, usedonly: bool) -> str:
    mesh, problems = validate_mesh(load_paths([mesh_file]))
    assert not problems, problems
    files = prometheus_files(mesh, interval, bool(envoy_stats))
    template = json.loads(files[TARGETS_FILE])
    labels = {group["labels"]["mesh_proxy"].split(".")[0]: group["labels"] for group in template}
    groups = []
    for proxy_id, kind, address in proxies.targets:
        own = {**labels[kind], "mesh_proxy": proxy_id, "mw_workload": proxy_id.split(".")[0]}
        groups.append({"targets": [address], "labels": own})
    config = files[CONFIG_FILE]
    if envoy_stats is None:  # a plain scrape: every stat, no rules
        config = json.dumps({"global": {"scrape_interval": interval},
                             "scrape_configs": [{"job_name": "plain", "metrics_path": "/stats/prometheus",
                                                 "file_sd_configs": [{"files": [TARGETS_FILE]}]}]})
    os.makedirs(os.path.join(folder, "targets"), exist_ok=True)
    with open(os.path.join(folder, TARGETS_FILE), "w") as handle:
        json.dump(groups, handle)
    with open(os.path.join(folder, CONFIG_FILE), "w") as handle:
        handle.write(config)
    return folder


def resident_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        kb = next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))
    return kb / 1024


def measure(folder: str, seconds: float) -> dict:
    port = free_port()
    process = subprocess.Popen(["prometheus", f"--config.file={folder}/{CONFIG_FILE}", f"--storage.tsdb.path={folder}/tsdb",
                                f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(seconds)
        query = "count by (instance) ({__name__=~\".+\", __name__!~\"up|scrape_.+\"})"
        body = json.loads(fetch(f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})))
        per_target = sorted(int(r["value"][1]) for r in body["data"]["result"])
        head = next(float(line.split()[1]) for line in fetch(f"http://127.0.0.1:{port}/metrics").splitlines()
                    if line.startswith("prometheus_tsdb_head_series "))
        return {"targets": len(per_target), "min": per_target[0], "max": per_target[-1], "head": int(head), "rss": resident_mb(process.pid)}
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxies", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30, help="how long Prometheus scrapes before it is measured")
    parser.add_argument("--scrape-interval", default="5s")
    parser.add_argument("--requests", type=int, default=200, help="requests through the real proxies first")
    args = parser.parse_args()
    if not shutil.which("prometheus"):
        print("prometheus (Debian's package) is needed", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mw-bench-telemetry-") as folder:
        expositions, mesh_file = real_expositions(folder, args.requests)
        print("A real sidecar's /stats/prometheus after traffic (series):")
        for name, texts in expositions.items():
            print(f"  {name:8} all {series_lines(texts['all']):5}   usedonly {series_lines(texts['usedonly']):5}")
        proxies = ReplayedProxies(expositions, args.proxies)
        print(f"\n{args.proxies} proxies, scraped every {args.scrape_interval} for {args.seconds:g} s (Debian's Prometheus):")
        print(f"{'what is stored':40} {'targets':>8} {'series/proxy':>14} {'head series':>12} {'RSS MB':>8}")
        try:
            for index, (label, envoy_stats, usedonly) in enumerate(MODES):
                target = prometheus_folder(os.path.join(folder, f"prom-{index}"), mesh_file, proxies, args.scrape_interval, envoy_stats, usedonly)
                row = measure(target, args.seconds)
                per_proxy = f"{row['min']}-{row['max']}" if row["min"] != row["max"] else str(row["min"])
                print(f"{label:40} {row['targets']:>8} {per_proxy:>14} {row['head']:>12} {row['rss']:>8.0f}", flush=True)
        finally:
            proxies.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
