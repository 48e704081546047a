"""`meshwright graph`: the service graph from Istio's metrics (serve/graph.py), against a
Prometheus API double that answers Istio's queries as Prometheus does (the real Prometheus and
real Envoy: tests/e2e/test_telemetry_local.py), and a Prometheus that is down, slow or wrong."""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ElementTree

import pytest

from meshwright.cli import main
from meshwright.serve.graph import GraphError, build_graph, to_dot, to_svg

ORDER, PAYMENT = "order-service.default.svc.cluster.local", "payment-service.default.svc.cluster.local"
SOURCE = [  # reporter="source": (source workload, kind, destination service, response code, rate)
    ("ingress", "gateway", ORDER, "200", 4.0),
    ("ingress", "gateway", PAYMENT, "200", 1.5),
    ("ingress", "gateway", PAYMENT, "503", 0.5),
    ("order-1", "sidecar", PAYMENT, "200", 2.0),
]
# The target label mesh_platform of each workload's proxy (what `meshwright prometheus` writes).
PLATFORMS = {"ingress": "vm", "order-1": "kubernetes", "payment-1": "vm"}
DESTINATION = [  # reporter="destination": (service, workload, response code, rate, security)
    (ORDER, "order-1", "200", 4.0, "mutual_tls"),
    (PAYMENT, "payment-1", "200", 3.5, "mutual_tls"),
    (PAYMENT, "payment-1", "503", 0.5, "mutual_tls"),
]


def vector(query: str) -> list[dict]:
    """What Prometheus answers to each of the graph's queries, from the rates above."""
    reporter = "source" if 'reporter="source"' in query else "destination"
    rows = []
    if reporter == "source":
        for workload, kind, service, code, rate in SOURCE:
            rows.append(({"source_workload": workload, "source_workload_namespace": "default", "destination_service": service,
                          "mesh_proxy_kind": kind, "mesh_platform": PLATFORMS[workload]}, code, rate, "unknown"))
    else:
        for service, workload, code, rate, security in DESTINATION:
            rows.append(({"destination_service": service, "destination_workload": workload, "destination_workload_namespace": "default",
                          "mesh_proxy_kind": "sidecar", "mesh_platform": PLATFORMS[workload]}, code, rate, security))
    out: dict[str, tuple[dict, float]] = {}
    for labels, code, rate, security in rows:
        if "histogram_quantile" in query:
            labels, rate = dict(labels), 12.5
        elif "connection_security_policy)" in query:
            labels = {**labels, "connection_security_policy": security}
        else:
            labels = {**labels, "response_code": code}
        key = json.dumps(labels, sort_keys=True)
        out[key] = (labels, out.get(key, (labels, 0.0))[1] + rate if "histogram_quantile" not in query else rate)
    return [{"metric": labels, "value": [time.time(), str(value)]} for labels, value in out.values()]


class FakePrometheus:
    def __init__(self, behaviour: str = "ok"):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if behaviour == "slow":
                    time.sleep(2)
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)["query"][0]
                status, body = 200, {"status": "success", "data": {"resultType": "vector", "result": vector(query)}}
                if behaviour == "error":
                    status, body = 500, {"status": "error", "error": "boom"}
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.end_headers()
                try:
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (the slow case)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def prometheus():
    fake = FakePrometheus()
    yield fake
    fake.close()


def test_edges_carry_rate_errors_p99_and_mtls(prometheus):
    graph = build_graph(prometheus.url)
    edges = {(e.source, e.target): e for e in graph.edges}
    assert set(edges) == {
        ("workload:default/ingress", f"service:{ORDER}"), ("workload:default/ingress", f"service:{PAYMENT}"),
        ("workload:default/order-1", f"service:{PAYMENT}"), (f"service:{ORDER}", "workload:default/order-1"),
        (f"service:{PAYMENT}", "workload:default/payment-1"),
    }
    to_payment = edges[("workload:default/ingress", f"service:{PAYMENT}")]
    assert (to_payment.rate, to_payment.error_share, to_payment.p99_ms, to_payment.mtls) == (2.0, 0.25, 12.5, None)
    served = edges[(f"service:{PAYMENT}", "workload:default/payment-1")]
    assert (served.rate, served.error_share, served.mtls) == (4.0, 0.125, True)
    kinds = {n.id: (n.type, n.kind) for n in graph.nodes}
    assert kinds["workload:default/ingress"] == ("workload", "gateway") and kinds[f"service:{ORDER}"] == ("service", "")


def test_nodes_are_marked_gateway_or_by_platform(prometheus):
    """A gateway is marked gateway, a workload by where it runs (the series' mesh_platform);
    the control plane's live mesh (platforms) knows better, e.g. a task its Marathon registry
    published; the drawings say it."""
    marks = {n.id: n.mark for n in build_graph(prometheus.url).nodes}
    assert marks == {"workload:default/ingress": "gateway", "workload:default/order-1": "Kubernetes", "workload:default/payment-1": "VM",
                     f"service:{ORDER}": "service", f"service:{PAYMENT}": "service"}
    graph = build_graph(prometheus.url, platforms={("default", "payment-1"): "marathon"})
    assert {n.id: n.mark for n in graph.nodes}["workload:default/payment-1"] == "Marathon"
    svg = ElementTree.fromstring(to_svg(graph))
    drawn = {g.get("data-id"): g.get("data-mark") for g in svg.findall("{http://www.w3.org/2000/svg}g") if g.get("class") == "node"}
    assert drawn["workload:default/payment-1"] == "Marathon" and drawn["workload:default/order-1"] == "Kubernetes"
    assert '"workload:default/payment-1" [label="payment-1\\nMarathon"' in to_dot(graph)


def test_svg_and_dot_draw_every_node_and_edge_with_its_rate(prometheus):
    graph = build_graph(prometheus.url)
    svg = ElementTree.fromstring(to_svg(graph))
    groups = svg.findall("{http://www.w3.org/2000/svg}g")
    drawn_nodes = {g.get("data-id") for g in groups if g.get("class") == "node"}
    drawn_edges = {(g.get("data-source"), g.get("data-target"), g.get("data-rate")) for g in groups if g.get("class") == "edge"}
    assert drawn_nodes == {n.id for n in graph.nodes}
    assert drawn_edges == {(e.source, e.target, str(e.rate)) for e in graph.edges}
    dot = to_dot(graph)
    assert dot.count(" -> ") == len(graph.edges) and '"workload:default/ingress" -> "service:' + ORDER + '" [label="4.00 rps, 0.0% 5xx' in dot


def test_cli_writes_the_graph(prometheus, tmp_path, capsys):
    out = tmp_path / "graph.json"
    assert main(["graph", "--prometheus", prometheus.url, "--format", "json", "--out", str(out)]) == 0
    assert "5 nodes, 5 edges" in capsys.readouterr().out
    assert len(json.loads(out.read_text())["edges"]) == 5


@pytest.mark.parametrize("behaviour, message", [
    ("error", "refused the query: HTTP 500"),
    ("slow", "timed out"),
])
def test_prometheus_that_fails_or_is_slow_is_an_error_not_an_empty_graph(tmp_path, capsys, behaviour, message):
    fake = FakePrometheus(behaviour)
    try:
        out = tmp_path / "graph.svg"
        assert main(["graph", "--prometheus", fake.url, "--timeout", "0.5", "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert message in err and err.rstrip().endswith("nothing was written.") and not out.exists()
    finally:
        fake.close()


def test_prometheus_down_is_named(capsys):
    with pytest.raises(GraphError, match=r"cannot reach Prometheus at http://127.0.0.1:9: .*refused"):
        build_graph("http://127.0.0.1:9")
    assert main(["graph", "--prometheus", "http://127.0.0.1:9"]) == 1
    assert "error: cannot reach Prometheus at http://127.0.0.1:9" in capsys.readouterr().err
