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
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import pytest

from tests.e2e.deploy import BIN, ROOT, remove_state_folder, run_playbook, state_folder
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
    """Debian's prometheus, installed and run by playbooks/telemetry.yml (roles/telemetry) on
    the monitoring host of inventories/local, on a free loopback port."""

    def __init__(self, lab):
        self.lab = lab
        self.port = free_port()
        self.monitoring = os.path.join(lab.state, "monitoring")

    def playbook(self, *args: str, **extra):
        variables = {**self.lab.extra_vars, "telemetry_prometheus_listen": f"127.0.0.1:{self.port}",
                     "telemetry_scrape_interval": SCRAPE_INTERVAL, **extra}
        return run_playbook("telemetry.yml", variables, *args)

    @property
    def pid(self) -> int | None:
        found = [pid for pid, command in processes_under(self.monitoring).items() if command.startswith("/usr/bin/prometheus ")]
        return found[0] if len(found) == 1 else None

    def targets_file(self) -> str:
        return os.path.join(self.monitoring, "etc", "meshwright", "prometheus", "targets", "meshwright-proxies.json")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

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
    prometheus = Prometheus(lab)
    try:
        run = lab.deploy()
        assert run.returncode == 0, f"deploy failed:\n{run}"
        lab.telemetry_run = prometheus.playbook()
        assert lab.telemetry_run.returncode == 0, f"telemetry.yml failed:\n{lab.telemetry_run}"
        assert prometheus.wait(lambda: set(prometheus.active_targets().values()) == {"up"}), prometheus.active_targets()
        traffic = Traffic(RATES, TRAFFIC)
        traffic.run()
        lab.prometheus, lab.traffic, lab.end = prometheus, traffic, time.time()
        time.sleep(2.5)  # the last scrapes of the window
        yield lab
    finally:
        prometheus.playbook(telemetry_state="absent")
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


def sent_rate(seed, path: str) -> float:
    """Requests a second the test sent on path within the rate window (by their answer time)."""
    end = window_end(seed)
    return sum(1 for at, sent_path, _ in seed.traffic.codes if sent_path == path and end - WINDOW < at <= end) / WINDOW


def test_request_rate_by_destination_service_as_istio_queries_it(seed):
    """Kiali's and Istio's dashboards' form: the services' own proxies' request rate."""
    assert all(code == 200 for _, _, code in seed.traffic.codes), "the steady traffic stays under the rate limits"
    rates = seed.prometheus.by("destination_service",
                               f'sum(rate(istio_requests_total{{reporter="destination"}}[{WINDOW}s])) by (destination_service)',
                               window_end(seed))
    sent = {path: sent_rate(seed, path) for path in RATES}
    assert sent == pytest.approx(RATES, rel=0.05), "the traffic kept its pace"
    assert set(rates) == set(EXPECTED), rates
    assert rates[ORDER] == pytest.approx(sent["/order"], rel=0.10), (rates, sent)
    assert rates[PAYMENT] == pytest.approx(sent["/payment"] + sent["/order"], rel=0.10), (rates, sent)


def test_source_side_edges_name_the_calling_workloads(seed):
    """reporter="source": who calls whom, the edges of a service graph."""
    edges = {(m["source_workload"], m["destination_service"]): v for m, v in seed.prometheus.query(
        f'sum(rate(istio_requests_total{{reporter="source"}}[{WINDOW}s])) by (source_workload, destination_service)', window_end(seed))}
    assert edges[("ingress", ORDER)] == pytest.approx(sent_rate(seed, "/order"), rel=0.10)
    assert edges[("ingress", PAYMENT)] == pytest.approx(sent_rate(seed, "/payment"), rel=0.10)
    from_orders = sum(v for (source, service), v in edges.items() if source.startswith("order-") and service == PAYMENT)
    assert from_orders == pytest.approx(sent_rate(seed, "/order"), rel=0.10), edges


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


def test_service_graph_has_every_seed_service_and_edge(seed):
    """`meshwright graph` from the same Prometheus: every edge that carried traffic, the
    services' own sides with the mTLS lock."""
    run = subprocess.run([os.path.join(BIN, "meshwright"), "graph", "--prometheus", f"http://127.0.0.1:{seed.prometheus.port}",
                          "--window", "2m", "--format", "json"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    graph = json.loads(run.stdout)
    edges = {(e["source"], e["target"]): e for e in graph["edges"]}
    expected = {("workload:default/ingress", f"service:{ORDER}"), ("workload:default/ingress", f"service:{PAYMENT}"),
                ("workload:default/order-1", f"service:{PAYMENT}"), ("workload:default/order-2", f"service:{PAYMENT}"),
                (f"service:{ORDER}", "workload:default/order-1"), (f"service:{ORDER}", "workload:default/order-2"),
                (f"service:{PAYMENT}", "workload:default/payment-1"), (f"service:{PAYMENT}", "workload:default/payment-2")}
    assert set(edges) == expected, sorted(edges)
    assert all(edges[e]["mtls"] is True for e in expected if e[0].startswith("service:"))
    assert all(edges[e]["rate"] > 0 for e in expected)
    kinds = {n["id"]: n["kind"] for n in graph["nodes"]}
    assert kinds["workload:default/ingress"] == "gateway" and kinds["workload:default/payment-2"] == "sidecar"


# The page's screenshot, kept as the test's artifact (CI keeps this folder).
ARTIFACTS = os.environ.get("MESHWRIGHT_TEST_ARTIFACTS", os.path.join(ROOT, "test-artifacts"))


def chromium(url: str, *args: str) -> str:
    """Debian's headless Chromium on the page (its scripts run): the DOM it drew, or with
    --screenshot the file it wrote."""
    browser = shutil.which("chromium")
    assert browser, "chromium (Debian's package, which .ci/run installs) is needed"
    run = subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--window-size=2400,1000",
                          *args, url], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def drawn_edges(dom: str) -> dict[tuple[str, str], float]:
    return {(source, target): float(rate) for source, target, rate in
            re.findall(r'<g class="edge" data-source="([^"]+)" data-target="([^"]+)" data-rate="([^"]+)"', dom)}


@pytest.fixture
def graph_page(seed):
    """`meshwright serve` with its graph page on a free port, asking the seed's Prometheus."""
    port = free_port()
    process = subprocess.Popen([os.path.join(BIN, "meshwright"), "serve", "--mesh", seed.mesh, "--plaintext-loopback",
                                "--listen", f"127.0.0.1:{free_port()}", "--status-listen", f"127.0.0.1:{free_port()}",
                                "--graph-listen", f"127.0.0.1:{port}", "--prometheus", f"http://127.0.0.1:{seed.prometheus.port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    assert seed.prometheus.wait(lambda: process.poll() is None and _answers(url), timeout=30), process.stderr.read() if process.poll() is not None else ""
    yield url
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=20)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status == 200
    except OSError:
        return False


def test_graph_page_in_chromium_draws_every_service_and_edge_and_follows_traffic(seed, graph_page):
    """The page in a real browser: every seed service and every edge with traffic, each with its
    rate; a screenshot is kept; after new traffic on /payment only, its edge's rate rises and
    /order's does not."""
    os.makedirs(ARTIFACTS, exist_ok=True)
    before = chromium(graph_page, "--dump-dom")
    for service in ("ingress", "order-1", "order-2", "payment-1", "payment-2", ORDER, PAYMENT):
        assert f">{service.split('.')[0]}</text>" in before, service
    edges = drawn_edges(before)
    assert set(edges) == {
        ("workload:default/ingress", f"service:{ORDER}"), ("workload:default/ingress", f"service:{PAYMENT}"),
        ("workload:default/order-1", f"service:{PAYMENT}"), ("workload:default/order-2", f"service:{PAYMENT}"),
        (f"service:{ORDER}", "workload:default/order-1"), (f"service:{ORDER}", "workload:default/order-2"),
        (f"service:{PAYMENT}", "workload:default/payment-1"), (f"service:{PAYMENT}", "workload:default/payment-2")}, sorted(edges)
    assert all(rate > 0 for rate in edges.values()) and "rps" in before and 'id="banner"' not in before
    # Each workload marked as a gateway or by where it runs (the seed's sidecars are VMs).
    marks = dict(re.findall(r'<g class="node" data-id="(workload:[^"]+)" data-mark="([^"]+)"', before))
    assert marks == {"workload:default/ingress": "gateway", **{f"workload:default/{w}": "VM" for w in ("order-1", "order-2", "payment-1", "payment-2")}}, marks
    screenshot = os.path.join(ARTIFACTS, "service-graph.png")
    chromium(graph_page, f"--screenshot={screenshot}")
    assert os.path.getsize(screenshot) > 10_000
    Traffic({"/payment": 4.0}, 8).run()
    time.sleep(3)  # two scrapes
    after = drawn_edges(chromium(graph_page, "--dump-dom"))
    to_payment, to_order = ("workload:default/ingress", f"service:{PAYMENT}"), ("workload:default/ingress", f"service:{ORDER}")
    assert after[to_payment] > edges[to_payment], (edges, after)
    # /order had no new traffic: its rate over the sliding window may move by a hair as the
    # window's edges pass scrapes, never by what /payment gained.
    assert after.get(to_order, 0) <= edges[to_order] * 1.05, (edges, after)


def test_series_per_sidecar_stay_under_300(seed):
    """Scrape cost: Istio's metrics only, stats that counted something only."""
    series = seed.prometheus.by("mesh_proxy", 'count({job="meshwright-proxies"}) by (mesh_proxy)')
    assert set(series) == {"ingress.default", "order-1.default", "order-2.default", "payment-1.default", "payment-2.default"}
    assert all(0 < count <= 300 for count in series.values()), series
    names = {m["__name__"] for m, _ in seed.prometheus.query('count({job="meshwright-proxies"}) by (__name__)')}
    assert {"istio_requests_total", "istio_request_duration_milliseconds_bucket", "istio_request_bytes_bucket", "istio_response_bytes_bucket"} <= names
    assert not {name for name in names if name.startswith("envoy_")}, names


def test_playbook_again_changes_nothing_and_check_mode_shows_the_diff(seed):
    prometheus = seed.prometheus
    again = prometheus.playbook()
    assert again.returncode == 0 and again.changed() == {"monitoring": 0}, again
    checked = prometheus.playbook("--check", "--diff", telemetry_scrape_interval="2s")
    # The configuration would change, and Prometheus would reload it (the handler).
    assert checked.returncode == 0 and checked.changed() == {"monitoring": 2}, checked
    assert "-  scrape_interval: 1s" in checked.output and "+  scrape_interval: 2s" in checked.output, checked
    assert prometheus.api("status/config")["yaml"].count("scrape_interval: 1s") >= 1, "check mode changed nothing"


def test_proxies_that_go_and_come_change_only_the_targets(seed):
    """The playbook after a proxy left the mesh: the targets file changes, Prometheus re-reads
    it (file service discovery) and drops the target; the same process, no reload."""
    prometheus = seed.prometheus
    pid = prometheus.pid
    assert pid is not None
    mesh = pathlib.Path(seed.mesh)
    workloads = (mesh / "workloads.yaml").read_text()
    documents = workloads.split("\n---\n")
    without = [d for d in documents if not ("kind: WorkloadEntry" in d and "name: payment-2" in d)]
    assert len(without) == len(documents) - 1
    try:
        (mesh / "workloads.yaml").write_text("\n---\n".join(without))
        gone = prometheus.playbook()
        assert gone.returncode == 0 and gone.changed() == {"monitoring": 1}, gone  # the targets file only
        assert "payment-2.default" not in open(prometheus.targets_file()).read()
        assert prometheus.wait(lambda: "payment-2.default" not in prometheus.active_targets()), prometheus.active_targets()
    finally:
        (mesh / "workloads.yaml").write_text(workloads)
    back = prometheus.playbook()
    assert back.returncode == 0 and back.changed() == {"monitoring": 1}, back
    assert prometheus.wait(lambda: prometheus.active_targets().get("payment-2.default") == "up"), prometheus.active_targets()
    assert prometheus.pid == pid


def test_uninstall_stops_prometheus_and_leaves_nothing(seed):
    """Last: telemetry_state absent, twice (the second changes nothing)."""
    prometheus = seed.prometheus
    removed = prometheus.playbook(telemetry_state="absent")
    assert removed.returncode == 0 and removed.changed() == {"monitoring": 2}, removed
    assert prometheus.pid is None and not prometheus.ready()
    assert not os.path.exists(prometheus.monitoring)
    again = prometheus.playbook(telemetry_state="absent")
    assert again.returncode == 0 and again.changed() == {"monitoring": 0}, again
