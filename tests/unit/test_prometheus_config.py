"""`meshwright prometheus`: Prometheus' configuration and targets for a mesh, and what Debian's
Prometheus makes of a proxy's stats with them (Istio's metric and label names).

The proxy here is a small HTTP server that answers /stats/prometheus with series in the shape
Envoy writes them for meshwright's stat names (compile/telemetry.py; tests/e2e/test_telemetry_local.py
does the same with real Envoy), so every relabelling rule is checked in a few seconds.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from meshwright.check.pipeline import validate_mesh
from meshwright.cli import main
from meshwright.compile.build import compile_proxy
from meshwright.compile.proxy import find_proxy
from meshwright.compile.prometheus import CONFIG_FILE, TARGETS_FILE, prometheus_files, scrape_targets
from meshwright.model.load import load_paths
from tests.harness import free_port

SEED = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "seed", "mesh")

MESH = """
apiVersion: meshwright.io/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec: {certificates: {}, defaultMtlsMode: STRICT}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9080, name: http, protocol: HTTP}
  - {number: 9090, name: grpc, protocol: GRPC}
  - {number: 5432, name: tcp, protocol: TCP}
  workloadSelector: {labels: {app: reviews}}
---
# reviews-1 serves ratings too, on a port of its own: its proxy's fixed tag lists the service by port.
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: shop}
spec:
  hosts: [ratings.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 7070, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ledger, namespace: payments}
spec:
  hosts: [ledger.corp.internal]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.9}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-1, namespace: shop}
spec: {address: 127.0.0.2, labels: {app: reviews, version: v2}, serviceAccount: reviews}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client, namespace: shop}
spec: {address: 127.0.0.3}
"""

# What the proxy reviews-1 serves (its inbound clusters, reporter destination) and client
# (outbound, reporter source): Envoy's names and the labels its stats_tags extract from the
# clusters' stat names. The proxy's own labels are fixed tags on all its stats: the fixture
# adds those its bootstrap has (with_fixed_tags).
INBOUND = 'cluster_name="inbound|{port}||",reporter="destination",destination_port="{port}"'
OUTBOUND = 'cluster_name="outbound|{port}||{host}",reporter="source",destination_service="{host}",destination_port="{port}"'
REVIEWS_STATS = "\n".join([
    "envoy_cluster_upstream_rq{response_code=\"200\"," + INBOUND.format(port=9080) + "} 7",
    "envoy_cluster_upstream_rq{response_code_class=\"2xx\"," + INBOUND.format(port=9080) + "} 7",
    "envoy_cluster_upstream_rq{response_code=\"200\"," + INBOUND.format(port=9090) + "} 3",
    "envoy_cluster_upstream_rq{response_code=\"201\"," + INBOUND.format(port=7070) + "} 4",
    "envoy_cluster_upstream_cx_total{" + INBOUND.format(port=9080) + "} 2",
    "envoy_cluster_upstream_cx_total{" + INBOUND.format(port=5432) + "} 4",
    "envoy_cluster_upstream_cx_tx_bytes_total{" + INBOUND.format(port=5432) + "} 1000",
    "envoy_cluster_upstream_cx_rx_bytes_total{" + INBOUND.format(port=5432) + "} 5000",
    "envoy_cluster_upstream_rq{response_code=\"200\",cluster_name=\"admin\"} 12",
    "envoy_server_live{} 1",
    "envoy_cluster_upstream_rq_time_bucket{" + INBOUND.format(port=9080) + ",le=\"5\"} 6",
    "envoy_cluster_upstream_rq_time_bucket{" + INBOUND.format(port=9080) + ",le=\"+Inf\"} 7",
    "envoy_cluster_upstream_rq_time_sum{" + INBOUND.format(port=9080) + "} 20",
    "envoy_cluster_upstream_rq_time_count{" + INBOUND.format(port=9080) + "} 7",
    "envoy_cluster_upstream_rq_body_size_bucket{" + INBOUND.format(port=9080) + ",le=\"100\"} 7",
    "envoy_cluster_upstream_rq_body_size_bucket{" + INBOUND.format(port=9080) + ",le=\"+Inf\"} 7",
    "envoy_cluster_upstream_rq_body_size_sum{" + INBOUND.format(port=9080) + "} 350",
    "envoy_cluster_upstream_rq_body_size_count{" + INBOUND.format(port=9080) + "} 7",
    "envoy_cluster_upstream_rs_body_size_bucket{" + INBOUND.format(port=9080) + ",le=\"1000\"} 7",
    "envoy_cluster_upstream_rs_body_size_bucket{" + INBOUND.format(port=9080) + ",le=\"+Inf\"} 7",
    "envoy_cluster_upstream_rs_body_size_sum{" + INBOUND.format(port=9080) + "} 2100",
    "envoy_cluster_upstream_rs_body_size_count{" + INBOUND.format(port=9080) + "} 7",
]) + "\n"
CLIENT_STATS = "\n".join([
    "envoy_cluster_upstream_rq{response_code=\"503\"," + OUTBOUND.format(port=8080, host="ledger.corp.internal") + "} 2",
    "envoy_api_rate_limiter_http_local_rate_limit_enforced{} 5",
    "envoy_api_rate_limiter_http_local_rate_limit_ok{} 50",
]) + "\n"


def with_fixed_tags(body: str, tags: tuple[tuple[str, str], ...]) -> str:
    """Envoy's exposition with fixed tags: every series carries them."""
    text = ",".join(f'{name}="{value}"' for name, value in tags)
    return "".join(line.replace("{}", "{" + text + "}") if "{}" in line else line.replace("} ", "," + text + "} ", 1)
                   for line in body.splitlines(keepends=True))


def load(text: str, tmp_path):
    path = tmp_path / "mesh.yaml"
    path.write_text(text)
    mesh, problems = validate_mesh(load_paths([str(path)]))
    assert not problems, problems
    return mesh


class FakeProxies:
    """Stats endpoints on loopback: path /stats/prometheus, one body per port."""

    def __init__(self, bodies: dict[str, str]):
        self.servers = []
        self.ports = {}
        for name, body in bodies.items():
            class Handler(http.server.BaseHTTPRequestHandler):
                text = body.encode()

                def do_GET(self):
                    ok = urllib.parse.urlsplit(self.path).path == "/stats/prometheus"
                    self.send_response(200 if ok else 404)
                    self.send_header("content-type", "text/plain; version=0.0.4")
                    self.end_headers()
                    self.wfile.write(self.text if ok else b"")

                def log_message(self, *args):
                    pass

            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.servers.append(server)
            self.ports[name] = server.server_address[1]

    def close(self):
        for server in self.servers:
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    """Prometheus scraped the two fake proxies with the configuration of MESH: the series it stored."""
    assert shutil.which("prometheus"), "prometheus (Debian's package, which .ci/run installs) is needed"
    tmp = tmp_path_factory.mktemp("prometheus")
    mesh = load(MESH, tmp)
    tags = {proxy_id: compile_proxy(mesh, find_proxy(mesh, proxy_id)).stat_tags for proxy_id in ("reviews-1.shop", "client.shop")}
    fakes = FakeProxies({"reviews-1.shop": with_fixed_tags(REVIEWS_STATS, tags["reviews-1.shop"]),
                         "client.shop": with_fixed_tags(CLIENT_STATS, tags["client.shop"])})
    files = prometheus_files(mesh, "1s")
    groups = json.loads(files[TARGETS_FILE])
    for group in groups:  # the fakes listen where the proxies' stats ports would be
        group["targets"] = [f"127.0.0.1:{fakes.ports[group['labels']['mesh_proxy']]}"]
    (tmp / "targets").mkdir()
    (tmp / TARGETS_FILE).write_text(json.dumps(groups))
    (tmp / CONFIG_FILE).write_text(files[CONFIG_FILE])
    port = free_port()
    process = subprocess.Popen(["prometheus", f"--config.file={tmp / CONFIG_FILE}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                                f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def series() -> list[dict]:
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": '{job="meshwright-proxies"}'})
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)["data"]["result"]

    try:
        deadline = time.monotonic() + 30
        found = []
        while time.monotonic() < deadline:
            try:
                found = series()
            except OSError:
                found = []
            if {r["metric"].get("mesh_proxy") for r in found if r["metric"]["__name__"].startswith("istio_")} == {"reviews-1.shop", "client.shop"}:
                break
            time.sleep(0.3)
        yield [(r["metric"], float(r["value"][1])) for r in found]
    finally:
        process.terminate()
        process.wait(timeout=20)
        fakes.close()


def named(scraped, name: str, **labels) -> list[tuple[dict, float]]:
    return [(m, v) for m, v in scraped if m["__name__"] == name and all(m.get(k) == want for k, want in labels.items())]


def test_destination_side_requests_carry_istio_labels(scraped):
    [(metric, value)] = named(scraped, "istio_requests_total", reporter="destination", request_protocol="http", destination_port="9080")
    assert value == 7
    assert {k: metric[k] for k in ("response_code", "destination_workload", "destination_workload_namespace", "destination_app",
                                   "destination_version", "destination_service", "destination_service_name",
                                   "destination_service_namespace", "destination_principal", "connection_security_policy",
                                   "destination_canonical_service", "destination_canonical_revision")} == {
        "response_code": "200", "destination_workload": "reviews-1", "destination_workload_namespace": "shop",
        "destination_app": "reviews", "destination_version": "v2", "destination_service": "reviews.shop.svc.cluster.local",
        "destination_service_name": "reviews", "destination_service_namespace": "shop",
        "destination_principal": "spiffe://cluster.local/ns/shop/sa/reviews", "connection_security_policy": "mutual_tls",
        "destination_canonical_service": "reviews", "destination_canonical_revision": "v2"}
    # The caller is known per request only: Istio's "unknown".
    assert all(metric[f"source_{label}"] == "unknown" for label in ("workload", "workload_namespace", "app", "version", "principal"))
    assert "cluster_name" not in metric and not [k for k in metric if k.startswith(("mw_", "mesh_workload", "mesh_app", "mesh_version", "mesh_services"))]


def test_the_service_served_on_each_port(scraped):
    """A workload that serves two services on different ports: each port's requests name its own."""
    by_port = {m["destination_port"]: (m["destination_service"], m["destination_service_name"], v)
               for m, v in named(scraped, "istio_requests_total", reporter="destination") if m["response_code"] in ("200", "201")}
    assert by_port == {"9080": ("reviews.shop.svc.cluster.local", "reviews", 7), "9090": ("reviews.shop.svc.cluster.local", "reviews", 3),
                       "7070": ("ratings.shop.svc.cluster.local", "ratings", 4)}


def test_grpc_port_requests_are_request_protocol_grpc(scraped):
    [(metric, value)] = named(scraped, "istio_requests_total", request_protocol="grpc")
    assert (metric["destination_port"], value) == ("9090", 3)


def test_source_side_requests_to_a_service_entry_host(scraped):
    """A host that is not name.namespace.svc: its name is the host, its namespace the ServiceEntry's;
    the client has no app or version label: its canonical service is the workload, revision latest."""
    [(metric, value)] = named(scraped, "istio_requests_total", reporter="source", response_code="503")
    assert value == 2
    assert (metric["source_workload"], metric["source_app"], metric["source_canonical_service"], metric["source_canonical_revision"]) == (
        "client", "unknown", "client", "latest")
    assert (metric["destination_service_name"], metric["destination_service_namespace"]) == ("ledger.corp.internal", "payments")
    assert (metric["connection_security_policy"], metric["destination_workload"], metric["source_principal"]) == (
        "unknown", "unknown", "spiffe://cluster.local/ns/shop/sa/default")


def test_local_rate_limit_429s(scraped):
    [(metric, value)] = named(scraped, "istio_requests_total", response_code="429")
    assert value == 5
    assert (metric["reporter"], metric["response_flags"], metric["source_workload"], metric["rate_limiter"], metric["destination_service"]) == (
        "source", "RL", "client", "api_rate_limiter", "unknown")


def test_tcp_metrics_only_for_tcp_ports_with_istio_direction(scraped):
    """Istio's received bytes are the request's (what the proxy sent on to the server); an HTTP
    port's connections are not TCP metrics."""
    opened = named(scraped, "istio_tcp_connections_opened_total")
    assert [(m["destination_port"], m["request_protocol"], v) for m, v in opened] == [("5432", "tcp", 4)]
    assert [v for _, v in named(scraped, "istio_tcp_received_bytes_total")] == [1000]
    assert [v for _, v in named(scraped, "istio_tcp_sent_bytes_total")] == [5000]


def test_duration_histogram(scraped):
    buckets = {m["le"]: v for m, v in named(scraped, "istio_request_duration_milliseconds_bucket")}
    assert buckets == {"5": 6, "+Inf": 7}
    assert [v for _, v in named(scraped, "istio_request_duration_milliseconds_count")] == [7]


def test_request_and_response_bytes(scraped):
    """Istio's size histograms from the clusters' body sizes, with the request's labels."""
    for metric, total in (("istio_request_bytes", 350), ("istio_response_bytes", 2100)):
        [(labels, count)] = named(scraped, metric + "_count")
        assert (count, labels["reporter"], labels["destination_service"], labels["request_protocol"], labels["destination_workload"]) == (
            7, "destination", "reviews.shop.svc.cluster.local", "http", "reviews-1")
        assert [v for _, v in named(scraped, metric + "_sum")] == [total]
        assert {m["le"]: v for m, v in named(scraped, metric + "_bucket")} == {"100" if "request" in metric else "1000": 7, "+Inf": 7}


def test_only_istio_metrics_are_kept(scraped):
    """Envoy's other stats, the response-code-class duplicates and non-mesh clusters are dropped."""
    names = {m["__name__"] for m, _ in scraped if m["__name__"] != "up" and not m["__name__"].startswith("scrape_")}
    assert names == {"istio_requests_total", "istio_request_duration_milliseconds_bucket", "istio_request_duration_milliseconds_sum",
                     "istio_request_duration_milliseconds_count", "istio_tcp_connections_opened_total",
                     *(f"istio_{size}_bytes_{part}" for size in ("request", "response") for part in ("bucket", "sum", "count")),
                     "istio_tcp_received_bytes_total", "istio_tcp_sent_bytes_total"}
    assert not [m for m, _ in scraped if "response_code_class" in m]


def test_promtool_accepts_the_seed_config(tmp_path):
    assert main(["prometheus", "--mesh", SEED, "--out", str(tmp_path), "--address", "ingress.default=127.0.0.1"]) == 0
    checked = subprocess.run(["promtool", "check", "config", str(tmp_path / CONFIG_FILE)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    targets = json.loads((tmp_path / TARGETS_FILE).read_text())
    assert sorted(t["targets"][0] for t in targets) == ["127.0.0.1:15190", "127.0.0.1:15290", "127.0.0.1:15390", "127.0.0.1:15490", "127.0.0.1:15590"]


def test_output_is_deterministic_and_second_run_changes_nothing(tmp_path, capsys):
    argv = ["prometheus", "--mesh", SEED, "--out", str(tmp_path)]
    assert main(argv) == 0
    first = {name: (tmp_path / name).read_bytes() for name in (CONFIG_FILE, TARGETS_FILE)}
    assert main(argv) == 0
    assert "0 of 2 files changed" in capsys.readouterr().out
    assert {name: (tmp_path / name).read_bytes() for name in (CONFIG_FILE, TARGETS_FILE)} == first


def test_gateway_without_address_is_named_not_silently_dropped(tmp_path, capsys):
    """The seed's gateway is made from a Gateway alone: the mesh has no address for it."""
    assert main(["prometheus", "--mesh", SEED, "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "ingress.default: not scraped, its address is not in the mesh (give --address ingress.default=HOST)" in err
    mesh, _ = validate_mesh(load_paths([SEED]))
    groups, unaddressed = scrape_targets(mesh)
    assert unaddressed == ["ingress.default"] and len(groups) == 4


def test_bad_address_is_named(tmp_path, capsys):
    assert main(["prometheus", "--mesh", SEED, "--out", str(tmp_path), "--address", "ingress.default"]) == 2
    assert "'ingress.default' is not PROXY=HOST" in capsys.readouterr().err
    assert not (tmp_path / CONFIG_FILE).exists()


def test_address_of_a_proxy_that_left_the_mesh_is_said_and_ignored(tmp_path, capsys):
    """The inventory may still list a host whose proxy left the mesh: its target goes, with a word."""
    assert main(["prometheus", "--mesh", SEED, "--out", str(tmp_path), "--address", "gone.default=10.0.0.9"]) == 0
    assert "--address gone.default: no proxy of that name in the mesh; ignored" in capsys.readouterr().err
    assert "10.0.0.9" not in (tmp_path / TARGETS_FILE).read_text()


def test_invalid_mesh_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(MESH.replace("defaultMtlsMode: STRICT", "defaultMtlsMode: SOMETIMES"))
    assert main(["prometheus", "--mesh", str(bad), "--out", str(tmp_path / "out")]) == 1
    assert "bad.yaml" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_config_is_yaml_with_file_sd(tmp_path):
    mesh = load(MESH, tmp_path)
    config = yaml.safe_load(prometheus_files(mesh, "5s")[CONFIG_FILE])
    [job] = config["scrape_configs"]
    assert job["file_sd_configs"] == [{"files": [TARGETS_FILE], "refresh_interval": "30s"}]
    assert job["params"] == {"usedonly": [""]} and config["global"]["scrape_interval"] == "5s"


def test_targets_name_the_platform_each_workload_runs_on(tmp_path):
    """mesh_platform on a proxy's series (the service graph's marks): vm for a WorkloadEntry of
    the mesh's files, kubernetes or marathon for one a registry of that platform published."""
    from meshwright.registry.published import origin, registry_resource
    loaded = load_paths([str(_written(tmp_path, MESH))])
    for registry, name in (("kubernetes/c1", "cart-7d9f"), ("marathon/main", "shop-cart-1a2b")):
        document = {"apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry", "metadata": {"name": name, "namespace": "shop"},
                    "spec": {"address": "127.0.0.4", "labels": {"app": "cart"}}}
        loaded.resources.append(registry_resource(registry, document, origin(registry, "Pod", "shop", name)))
    mesh, problems = validate_mesh(loaded)
    assert not problems, problems
    groups, unaddressed = scrape_targets(mesh)
    assert not unaddressed
    assert {g["labels"]["mesh_proxy"]: g["labels"]["mesh_platform"] for g in groups} == {
        "reviews-1.shop": "vm", "client.shop": "vm", "cart-7d9f.shop": "kubernetes", "shop-cart-1a2b.shop": "marathon"}


def _written(tmp_path, text: str):
    path = tmp_path / "mesh.yaml"
    path.write_text(text)
    return path
