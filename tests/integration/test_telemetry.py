"""Istio's telemetry tasks (Telemetry API: access logs, distributed tracing, metrics) on real
Envoy with real traffic.

Two proxies in a chain: `client` (its outbound listener on 127.0.0.1:15001+offset) calls
`reviews.default.svc.cluster.local`, whose one workload `reviews` has a sidecar (a Sidecar
ingress listener) in front of a tiny app. The MeshConfig defines the providers; Telemetry
resources choose them per workload. Spans go to a Zipkin collector that runs in the test.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
import urllib.request

import pytest

from tests.harness import free_offset, free_port, request

REVIEWS = "reviews.default.svc.cluster.local"
LEDGER = "ledger.payments.internal"  # a host whose last labels look like Envoy stat names

MESH = """
apiVersion: meshwright.io/v1alpha1
kind: MeshConfig
metadata: {{name: mesh, namespace: default}}
spec:
  extensionProviders:
  - name: zipkin
    zipkin: {{service: 127.0.0.1, port: {collector}}}
  - name: json-log
    envoyFileAccessLog:
      path: /dev/stdout
      logFormat: {{labels: {{}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [{reviews}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: reviews}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ledger, namespace: payments}}
spec:
  hosts: [{ledger}]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {ledger_app}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: {reviews}
  subsets: [{{name: v1, labels: {{version: v1}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [{reviews}]
  http:
  - route:
    - destination: {{host: {reviews}, subset: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: client
  namespace: default
  annotations: {{meshwright.io/port-offset: "{client_offset}"}}
spec: {{address: 127.0.0.1, labels: {{app: client}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: reviews
  namespace: default
  annotations: {{meshwright.io/port-offset: "{reviews_offset}"}}
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


class ZipkinCollector:
    """A Zipkin collector: accepts POST /api/v2/spans (JSON v2) and keeps the spans."""

    def __init__(self):
        self.spans: list[dict] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _body(self) -> bytes:
                if self.headers.get("transfer-encoding", "").lower() != "chunked":
                    return self.rfile.read(int(self.headers.get("content-length") or 0))
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()  # the CRLF after each chunk
                    if size == 0:
                        return b"".join(chunks)

            def do_POST(self):
                body = self._body()
                if self.path == "/api/v2/spans":
                    with collector.lock:
                        collector.spans.extend(json.loads(body))
                    self.send_response(202)
                else:
                    self.send_response(404)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def received(self) -> list[dict]:
        with self.lock:
            return list(self.spans)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector():
    zipkin = ZipkinCollector()
    yield zipkin
    zipkin.close()


class Chain:
    def __init__(self, lab, collector, telemetry: str, reviews_behaviour=None):
        self.reviews_app = lab.backend("reviews", "reviews-v1", behaviour=reviews_behaviour)
        self.ledger_app = lab.backend("ledger", "ledger-1")
        self.client_offset = free_offset()
        self.reviews_offset = free_offset()
        while abs(self.reviews_offset - self.client_offset) < 100:
            self.reviews_offset = free_offset()
        lab.write_mesh(MESH.format(
            reviews=REVIEWS, ledger=LEDGER, collector=collector.port,
            client_offset=self.client_offset, reviews_offset=self.reviews_offset,
            reviews_inbound=free_port(), reviews_app=self.reviews_app.port, ledger_app=self.ledger_app.port,
        ) + telemetry)
        self.reviews = lab.proxy("reviews.default", 15000 + self.reviews_offset)
        self.client = lab.proxy("client.default", 15000 + self.client_offset)

    def call(self, count: int, host: str = REVIEWS, port: int = 9080) -> None:
        for _ in range(count):
            status, body, _ = request(15001 + self.client_offset, "/reviews/1", host=f"{host}:{port}")
            assert status == 200, body


def wait_until(predicate, timeout: float, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def access_log_lines(envoy) -> list[dict]:
    """The JSON access log lines an Envoy wrote to its stdout (its log, where Envoy's own
    lines start with '[')."""
    with open(envoy.log_path) as handle:
        return [json.loads(line) for line in handle if line.startswith("{")]


def test_access_log_json_lines_only_for_selected_workloads(lab, collector):
    """A namespace-wide Telemetry turns access logging on (provider json-log); a Telemetry
    that selects app: reviews turns it off there (the workload selector wins over the
    namespace, Istio's precedence). Each request through the chain is one JSON line, from the
    client's outbound side only, with Istio's default fields."""
    chain = Chain(lab, collector, """
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: logs, namespace: default}
spec:
  accessLogging: [{providers: [{name: json-log}]}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: reviews-quiet, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  accessLogging: [{disabled: true}]
""")
    chain.call(5)
    # Envoy counts what its file loggers write: the client wrote the 5 lines, reviews none.
    assert chain.client.stat("filesystem.write_buffered") == 5
    assert chain.reviews.stat("filesystem.write_buffered") == 0
    # Envoy flushes log files every 10 s (--file-flush-interval-msec), and when it stops.
    chain.client.stop()
    chain.reviews.stop()
    lines = access_log_lines(chain.client)
    assert len(lines) == 5, lines
    assert access_log_lines(chain.reviews) == []
    for line in lines:
        assert line["method"] == "GET" and line["path"] == "/reviews/1" and line["response_code"] == 200
        assert line["authority"] == f"{REVIEWS}:9080"
        # The cluster's name, not its stat name (which carries the metric labels).
        assert line["upstream_cluster"] == f"outbound|9080|v1|{REVIEWS}"
        assert line["request_id"] and line["start_time"] and "duration" in line and "upstream_host" in line
    assert len({line["request_id"] for line in lines}) == 5
    assert chain.reviews_app.count == 5


TRACING_100 = """
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing: [{providers: [{name: zipkin}], randomSamplingPercentage: 100}]
"""


def test_tracing_at_100_percent_client_and_server_spans_share_each_trace(lab, collector):
    """A root-namespace Telemetry (mesh-wide) sends spans to Zipkin at 100% sampling: every
    request gives spans from both proxies, named by their service (name.namespace), and the
    server's span continues the client's trace (same trace id, B3 headers on the wire)."""
    chain = Chain(lab, collector, TRACING_100)
    chain.call(10)

    def spans_by_service():
        out: dict[str, list] = {}
        for span in collector.received():
            out.setdefault(span["localEndpoint"]["serviceName"], []).append(span)
        return out

    # Envoy's Zipkin reporter sends a batch per 5 spans, so the 10 requests are all delivered.
    received = wait_until(lambda: (lambda s: len(s.get("reviews.default", [])) >= 10 and len(s.get("client.default", [])) >= 10 and s)(spans_by_service()), timeout=10)
    assert received, f"spans did not arrive: {collector.received()}"
    assert set(received) == {"client.default", "reviews.default"}
    client, server = received["client.default"], received["reviews.default"]
    # One span per proxy and request: the client's outbound CLIENT span, the server's SERVER span.
    assert (len(client), len(server)) == (10, 10)
    assert {span["kind"] for span in client} == {"CLIENT"} and {span["kind"] for span in server} == {"SERVER"}
    assert {span["name"] for span in server} == {f"{REVIEWS}:9080"}
    assert len({span["traceId"] for span in server}) == 10, "one trace per request"
    assert {span["traceId"] for span in server} == {span["traceId"] for span in client}, "the server continues the client's traces"
    assert all(len(span["traceId"]) == 32 for span in server), "128-bit trace ids, as Istio's"
    # Each server span is the child of the client span of its trace.
    client_span = {span["traceId"]: span["id"] for span in client}
    assert all(span["parentId"] == client_span[span["traceId"]] for span in server)
    # The app saw the trace context the client's proxy started.
    assert all("x-b3-traceid" in r["headers"] for r in chain.reviews_app.requests)


def test_tracing_at_0_percent_reports_no_spans(lab, collector):
    """The default namespace sets randomSamplingPercentage 0 and inherits the provider from
    the root namespace (Istio merges Telemetry field by field): requests are not traced, and
    when both proxies flush their span buffers (every 5 s) nothing reaches the collector."""
    chain = Chain(lab, collector, TRACING_100 + """
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: no-sampling, namespace: default}
spec:
  tracing: [{randomSamplingPercentage: 0}]
""")
    flushed_before = [proxy.stat("tracing.zipkin.timer_flushed") for proxy in (chain.client, chain.reviews)]
    chain.call(10)
    assert wait_until(lambda: all(
        proxy.stat("tracing.zipkin.timer_flushed") > before for proxy, before in zip((chain.client, chain.reviews), flushed_before)
    ), timeout=7, interval=0.2), "the Zipkin tracers never flushed"
    assert collector.received() == []
    assert chain.client.stat("tracing.zipkin.spans_sent") == 0 and chain.reviews.stat("tracing.zipkin.spans_sent") == 0
    assert chain.reviews_app.count == 10


SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def prometheus_samples(stats_port: int) -> list[tuple[str, dict, float]]:
    """(metric, labels, value) of every sample the proxy's stats port serves."""
    with urllib.request.urlopen(f"http://127.0.0.1:{stats_port}/stats/prometheus", timeout=5) as response:
        text = response.read().decode()
    samples = []
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match and not line.startswith("#"):
            samples.append((match["name"], dict(LABEL.findall(match["labels"] or "")), float(match["value"])))
    return samples


def find(samples, metric: str, **labels) -> list[tuple[dict, float]]:
    return [(found, value) for name, found, value in samples if name == metric and all(found.get(k) == v for k, v in labels.items())]


def test_prometheus_stats_carry_istio_labels_on_both_sides(lab, collector):
    """Metrics (the default provider, prometheus) on each proxy's stats port: the client
    reports as source (destination_service the FQDN, its subset and port, the response code),
    the server as destination; each proxy's own labels are fixed tags on all its stats
    (mesh_workload=client, mesh_workload=reviews and the service it serves), which the scrape
    names source_* or destination_* by reporter. A host ending in .payments.internal keeps its
    whole name and leaves the metric name clean."""
    chain = Chain(lab, collector, "")
    chain.call(7)
    chain.call(3, host=LEDGER, port=8080)

    client = prometheus_samples(15090 + chain.client_offset)
    reviews_calls = find(
        client, "envoy_cluster_upstream_rq", reporter="source", mesh_workload="client", mesh_workload_namespace="default",
        mesh_app="client", destination_service=REVIEWS, destination_subset="v1", destination_port="9080", response_code="200",
    )
    assert [value for _, value in reviews_calls] == [7], reviews_calls
    assert reviews_calls[0][0]["cluster_name"] == f"outbound|9080|v1|{REVIEWS}"
    ledger_calls = find(client, "envoy_cluster_upstream_rq", reporter="source", destination_service=LEDGER, destination_port="8080", response_code="200")
    assert [value for _, value in ledger_calls] == [3], ledger_calls
    assert "destination_subset" not in ledger_calls[0][0]
    # Every cluster stat name was taken apart into labels: no host fragments in metric names.
    assert not [name for name, _, _ in client if "ledger" in name or "payments" in name or "svc_cluster_local" in name]

    server = prometheus_samples(15090 + chain.reviews_offset)
    served = find(
        server, "envoy_cluster_upstream_rq", reporter="destination", mesh_workload="reviews",
        mesh_workload_namespace="default", mesh_app="reviews", mesh_version="v1", response_code="200",
    )
    assert [value for _, value in served] == [7], served
    assert served[0][0]["mesh_service"] == REVIEWS and "destination_service" not in served[0][0]
    # Body sizes (istio_request_bytes / istio_response_bytes at the scrape) in byte buckets; no
    # header sizes. Envoy merges histograms at its stats flush (every 5 s).
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline and not (find(server, "envoy_cluster_upstream_rs_body_size_count", reporter="destination")[0][1] and
                                               find(client, "envoy_cluster_upstream_rs_body_size_count", destination_subset="v1")[0][1]):
        time.sleep(0.5)
        server, client = prometheus_samples(15090 + chain.reviews_offset), prometheus_samples(15090 + chain.client_offset)
    for stat in ("envoy_cluster_upstream_rq_body_size", "envoy_cluster_upstream_rs_body_size"):
        assert [value for _, value in find(server, stat + "_count", reporter="destination")] == [7]
        assert len(find(server, stat + "_bucket", reporter="destination")) == 11  # 1 B ... 1 GB, +Inf
    assert [value for _, value in find(client, "envoy_cluster_upstream_rs_body_size_count", destination_service=REVIEWS, destination_subset="v1")] == [7]
    assert not [name for name, _, _ in server + client if "headers_size" in name]
    assert not find(server, "envoy_cluster_upstream_rq", reporter="source", destination_service=REVIEWS)


def failing_on_fail_path(handler, count):
    """The reviews app answers 500 on /fail, 200 elsewhere."""
    return (500, {"error": "failed"}) if handler.path.startswith("/fail") else None


def test_access_log_cel_filter_and_server_mode_log_only_served_errors(lab, collector):
    """Istio's "Envoy Access Logs" task with a filter: a SERVER-mode entry with the CEL
    expression `response.code >= 500` logs, on the reviews proxy's inbound side only, the
    requests that failed; the client's outbound side (CLIENT) logs nothing."""
    chain = Chain(lab, collector, """
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: errors-only, namespace: default}
spec:
  accessLogging:
  - match: {mode: SERVER}
    providers: [{name: json-log}]
    filter:
      expression: response.code >= 500
""", reviews_behaviour=failing_on_fail_path)
    chain.call(5)
    for _ in range(3):
        status, _, _ = request(15001 + chain.client_offset, "/fail/1", host=f"{REVIEWS}:9080")
        assert status == 500
    assert chain.reviews_app.count == 8
    assert chain.reviews.stat("filesystem.write_buffered") == 3
    assert chain.client.stat("filesystem.write_buffered") == 0
    chain.client.stop()
    chain.reviews.stop()
    lines = access_log_lines(chain.reviews)
    assert [(line["path"], line["response_code"]) for line in lines] == [("/fail/1", 500)] * 3
    assert all(line["upstream_cluster"] == "inbound|{}||".format(line["upstream_cluster"].split("|")[1]) for line in lines)
    assert access_log_lines(chain.client) == []


REQUEST_TIME = re.compile(r"envoy_cluster_upstream_rq_time(?:_bucket|_sum|_count)?")


def test_metrics_overrides_tag_overrides_and_modes_on_the_stats_port(lab, collector):
    """Istio's "Customizing Istio Metrics" task, as meshwright's stat names can carry it: a
    CLIENT tagOverride adds a label with a literal value and removes source_app; REQUEST_DURATION
    turned off leaves no request-time histogram on outbound clusters; SERVER metrics off
    leaves the server's inbound stats without Istio's labels."""
    chain = Chain(lab, collector, """
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: metrics, namespace: default}
spec:
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {mode: CLIENT}
      tagOverrides:
        team: {value: "'storefront'"}
        source_app: {operation: REMOVE}
    - match: {metric: REQUEST_DURATION, mode: CLIENT}
      disabled: true
    - match: {mode: SERVER}
      disabled: true
""")
    chain.call(4)
    client = prometheus_samples(15090 + chain.client_offset)
    calls = find(client, "envoy_cluster_upstream_rq", reporter="source", source_workload="client", destination_service=REVIEWS, response_code="200")
    assert [value for _, value in calls] == [4], calls
    assert calls[0][0]["team"] == "storefront" and "source_app" not in calls[0][0]
    assert not [name for name, labels, _ in client if REQUEST_TIME.fullmatch(name) and labels.get("destination_service") == REVIEWS]
    assert find(client, "envoy_cluster_upstream_cx_total", destination_service=REVIEWS, team="storefront")
    server = prometheus_samples(15090 + chain.reviews_offset)
    assert not find(server, "envoy_cluster_upstream_rq", reporter="destination")
    served = [value for name, labels, value in server if name == "envoy_cluster_upstream_rq" and labels.get("response_code") == "200" and labels.get("cluster_name", "").startswith("inbound")]
    assert served == [4], served
    # REQUEST_DURATION is off for CLIENT only: the server's inbound clusters keep the histogram.
    assert [name for name, labels, _ in server if REQUEST_TIME.fullmatch(name) and labels.get("cluster_name", "").startswith("inbound")]
