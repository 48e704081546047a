"""Istio's standard metrics, end to end: the seed mesh deployed by the playbook on
inventories/local (real Envoy, mutual TLS, the ingress gateway's rate limits), Debian's
Prometheus scraping every proxy with the configuration `meshwright prometheus` writes, and
the queries Istio's dashboards and Kiali run, in their own forms, against bounded traffic
whose rate the test knows.

The traffic: /order at 4 requests a second and /payment at 2 through the gateway; each
/order makes order-service call payment-service once. So, as the services' own proxies
report it (reporter="destination"): order-service 4/s, payment-service 6/s.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import pytest

from tests.e2e.deploy import BIN, remove_state_folder, state_folder
from tests.e2e.test_deploy_local import Lab, get, processes_under
from tests.harness import free_port

ORDER = "order-service.default.svc.cluster.local"
PAYMENT = "payment-service.default.svc.cluster.local"
RATES = {"/order": 4.0, "/payment": 2.0}  # requests a second, through the gateway
EXPECTED = {ORDER: RATES["/order"], PAYMENT: RATES["/payment"] + RATES["/order"]}
WINDOW = 20  # seconds: the range of rate(); traffic runs longer, so the window sees only steady traffic
TRAFFIC = WINDOW + 8
SCRAPE_INTERVAL = "1s"
# Envoy's histogram bucket bounds (ms), which Istio's duration histogram uses too.
BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000)


class Prometheus:
    """Debian's prometheus on a loopback port, its configuration from `meshwright prometheus`."""

    def __init__(self, folder: str, mesh: str):
        self.config = os.path.join(folder, "prometheus")
        self.meshwright("--mesh", mesh, "--scrape-interval", SCRAPE_INTERVAL)
        self.port = free_port()
        self.log = open(os.path.join(folder, "prometheus.log"), "wb")
        self.process = subprocess.Popen(
            ["prometheus", f"--config.file={self.config}/prometheus.yml", f"--storage.tsdb.path={folder}/tsdb",
             f"--web.listen-address=127.0.0.1:{self.port}"], stdout=self.log, stderr=subprocess.STDOUT)
        self.mesh = mesh
        assert self.wait(self.ready, timeout=30), f"prometheus did not start: {open(self.log.name).read()[-2000:]}"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def meshwright(self, *args: str) -> None:
        run = subprocess.run([os.path.join(BIN, "meshwright"), "prometheus", "--out", self.config,
                              "--address", "ingress.default=127.0.0.1", *args], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr

    def api(self, path: str, **params) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str, at: float | None = None) -> list[tuple[dict, float]]:
        params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
        return [(r["metric"], float(r["value"][1])) for r in self.api("query", **params)["result"]]

    def by(self, label: str, promql: str, at: float | None = None) -> dict[str, float]:
        return {metric.get(label, ""): value for metric, value in self.query(promql, at)}

    def active_targets(self) -> dict[str, str]:
        return {t["labels"]["mesh_proxy"]: t["health"] for t in self.api("targets", state="active")["activeTargets"]
                if "mesh_proxy" in t["labels"]}

    def wait(self, predicate, timeout: float = 20):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.5)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)
        self.log.close()


class Traffic:
    """Requests through the gateway at fixed rates, paced by the clock; what was answered."""

    def __init__(self, rates: dict[str, float], seconds: float):
        self.codes: list[tuple[float, str, int]] = []
        self.latencies: list[float] = []
        start = time.monotonic() + 0.5
        self.schedule = sorted((start + i / rate, path) for path, rate in rates.items() for i in range(int(seconds * rate)))

    def run(self) -> None:
        for due, path in self.schedule:
            time.sleep(max(0.0, due - time.monotonic()))
            sent = time.monotonic()
            status, _ = get(path)
            self.latencies.append((time.monotonic() - sent) * 1000)
            self.codes.append((time.time(), path, status))


@pytest.fixture(scope="module")
def seed():
    folder = state_folder("telemetry")
    lab = Lab(pathlib.Path(folder))
    prometheus = None
    try:
        run = lab.deploy()
        assert run.returncode == 0, f"deploy failed:\n{run}"
        prometheus = Prometheus(folder, lab.mesh)
        assert prometheus.wait(lambda: set(prometheus.active_targets().values()) == {"up"}), prometheus.active_targets()
        traffic = Traffic(RATES, TRAFFIC)
        traffic.run()
        lab.prometheus, lab.traffic, lab.end = prometheus, traffic, time.time()
        time.sleep(2.5)  # the last scrapes of the window
        yield lab
    finally:
        if prometheus is not None:
            prometheus.stop()
        lab.uninstall()
        for pid in processes_under(lab.state):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        remove_state_folder(folder)


def window_end(lab) -> float:
    """The end of the rate window: a second before the traffic stopped, so that it ran over
    the whole window."""
    return lab.end - 1


def test_request_rate_by_destination_service_as_istio_queries_it(seed):
    """Kiali's and Istio's dashboards' form: the services' own proxies' request rate."""
    assert all(code == 200 for _, _, code in seed.traffic.codes), "the steady traffic stays under the rate limits"
    rates = seed.prometheus.by("destination_service",
                               f'sum(rate(istio_requests_total{{reporter="destination"}}[{WINDOW}s])) by (destination_service)',
                               window_end(seed))
    assert set(rates) == set(EXPECTED), rates
    for service, expected in EXPECTED.items():
        assert rates[service] == pytest.approx(expected, rel=0.10), (service, rates)


def test_source_side_edges_name_the_calling_workloads(seed):
    """reporter="source": who calls whom, the edges of a service graph."""
    edges = {(m["source_workload"], m["destination_service"]): v for m, v in seed.prometheus.query(
        f'sum(rate(istio_requests_total{{reporter="source"}}[{WINDOW}s])) by (source_workload, destination_service)', window_end(seed))}
    assert edges[("ingress", ORDER)] == pytest.approx(RATES["/order"], rel=0.10)
    assert edges[("ingress", PAYMENT)] == pytest.approx(RATES["/payment"], rel=0.10)
    from_orders = sum(v for (source, service), v in edges.items() if source.startswith("order-") and service == PAYMENT)
    assert from_orders == pytest.approx(RATES["/order"], rel=0.10), edges


def test_p99_latency_from_the_duration_histogram(seed):
    """histogram_quantile over istio_request_duration_milliseconds_bucket: a finite p99 per
    service, no larger than the bucket bound above the slowest answer the client saw."""
    p99 = seed.prometheus.by("destination_service", (
        f'histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{{reporter="destination"}}[{WINDOW}s]))'
        ' by (le, destination_service))'), window_end(seed))
    slowest = max(seed.traffic.latencies)
    bound = next(b for b in BUCKETS if b >= slowest)
    assert set(p99) == set(EXPECTED), p99
    assert all(0 < value <= bound and not math.isnan(value) for value in p99.values()), (p99, slowest)


def test_mutual_tls_share_from_connection_security_policy(seed):
    """The seed's mutual TLS is STRICT mesh-wide: every request a service's proxy took was mTLS."""
    share = seed.prometheus.query(
        f'sum(rate(istio_requests_total{{reporter="destination", connection_security_policy="mutual_tls"}}[{WINDOW}s]))'
        f' / sum(rate(istio_requests_total{{reporter="destination"}}[{WINDOW}s]))', window_end(seed))
    assert [value for _, value in share] == [pytest.approx(1.0)]
    principals = seed.prometheus.by("destination_principal", 'sum(istio_requests_total{reporter="destination"}) by (destination_principal)')
    assert set(principals) == {"spiffe://cluster.local/ns/default/sa/order-service", "spiffe://cluster.local/ns/default/sa/payment-service"}


def test_rate_limited_requests_are_429s(seed):
    """A burst over /payment's 5 requests a second: the gateway's 429s are
    istio_requests_total{response_code="429"} (response_flags RL), as many as the client got."""
    time.sleep(1.1)  # a full token bucket
    codes = [get("/payment")[0] for _ in range(20)]
    limited = codes.count(429)
    assert limited > 0, codes
    query = 'sum(istio_requests_total{reporter="source", response_code="429", response_flags="RL", source_workload="ingress"})'
    seen = seed.prometheus.wait(lambda: [v for _, v in seed.prometheus.query(query)] == [limited], timeout=10)
    assert seen, seed.prometheus.query(query)


def test_series_per_sidecar_stay_under_300(seed):
    """Scrape cost: Istio's metrics only, stats that counted something only."""
    series = seed.prometheus.by("mesh_proxy", 'count({job="meshwright-proxies"}) by (mesh_proxy)')
    assert set(series) == {"ingress.default", "order-1.default", "order-2.default", "payment-1.default", "payment-2.default"}
    assert all(0 < count <= 300 for count in series.values()), series
    names = {m["__name__"] for m, _ in seed.prometheus.query('count({job="meshwright-proxies"}) by (__name__)')}
    assert {"istio_requests_total", "istio_request_duration_milliseconds_bucket"} <= names
    assert not {name for name in names if name.startswith("envoy_")}, names


def test_targets_follow_the_file_without_a_restart(seed):
    """Proxies that go and come: the targets file is rewritten, Prometheus re-reads it (file
    service discovery) and its process stays the same."""
    prometheus = seed.prometheus
    pid = prometheus.process.pid
    mesh = pathlib.Path(seed.mesh)
    workloads = (mesh / "workloads.yaml").read_text()
    documents = workloads.split("\n---\n")
    without = [d for d in documents if "name: payment-2" not in d or "kind: WorkloadEntry" not in d]
    assert len(without) == len(documents) - 1
    try:
        (mesh / "workloads.yaml").write_text("\n---\n".join(without))
        prometheus.meshwright("--mesh", str(mesh), "--scrape-interval", SCRAPE_INTERVAL, "--targets-only")
        assert prometheus.wait(lambda: "payment-2.default" not in prometheus.active_targets()), prometheus.active_targets()
    finally:
        (mesh / "workloads.yaml").write_text(workloads)
    prometheus.meshwright("--mesh", str(mesh), "--scrape-interval", SCRAPE_INTERVAL, "--targets-only")
    assert prometheus.wait(lambda: prometheus.active_targets().get("payment-2.default") == "up"), prometheus.active_targets()
    assert prometheus.process.poll() is None and prometheus.process.pid == pid
