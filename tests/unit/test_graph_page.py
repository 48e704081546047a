"""The service graph page of `meshwright serve --graph-listen` (serve/graph_page.py): every node
and edge drawn from Prometheus' answers, a banner and no graph when Prometheus is down."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ElementTree

import pytest

from meshwright.serve import graph_page
from tests.harness import free_port
from tests.unit.test_serve_cli import write_mesh
from tests.unit.test_service_graph import FakePrometheus

SVG = "{http://www.w3.org/2000/svg}"


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture
def page():
    prometheus = FakePrometheus()
    server = graph_page.start(graph_page.GraphPage(prometheus.url), ("127.0.0.1", 0))
    yield f"http://127.0.0.1:{server.server_address[1]}", prometheus
    server.shutdown()
    server.server_close()
    prometheus.close()


def test_page_draws_every_node_and_edge_and_refreshes(page):
    url, _ = page
    status, body = get(url + "/")
    assert status == 200
    svg = ElementTree.fromstring(body[body.index("<svg"):body.index("</svg>") + 6])
    groups = svg.findall(f"{SVG}g")
    _, data = get(url + "/graph.json")
    graph = json.loads(data)
    assert {g.get("data-id") for g in groups if g.get("class") == "node"} == {n["id"] for n in graph["nodes"]}
    assert {(g.get("data-source"), g.get("data-target")) for g in groups if g.get("class") == "edge"} == {
        (e["source"], e["target"]) for e in graph["edges"]}
    assert "4.00 rps" in body and '<meta http-equiv="refresh"' in body and 'class="banner"' not in body


def test_prometheus_down_gives_a_banner_not_an_empty_graph():
    dead = f"http://127.0.0.1:{free_port()}"
    server = graph_page.start(graph_page.GraphPage(dead), ("127.0.0.1", 0))
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        status, body = get(url + "/")
        assert status == 503 and 'id="banner"' in body and f"cannot reach Prometheus at {dead}" in body and "<svg" not in body
        status, data = get(url + "/graph.json")
        assert status == 503 and json.loads(data)["error"].startswith(f"cannot reach Prometheus at {dead}")
    finally:
        server.shutdown()
        server.server_close()


def test_serve_serves_the_page_on_graph_listen(tmp_path):
    prometheus = FakePrometheus()
    mesh = write_mesh(tmp_path)
    page_port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "meshwright.cli", "serve", "--mesh", mesh, "--listen", f"127.0.0.1:{free_port()}",
                                "--status-listen", f"127.0.0.1:{free_port()}", "--plaintext-loopback",
                                "--graph-listen", f"127.0.0.1:{page_port}", "--prometheus", prometheus.url],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                status, body = get(f"http://127.0.0.1:{page_port}/")
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, process.communicate(timeout=5)
                time.sleep(0.1)
        assert status == 200 and "5 nodes, 5 edges" in body
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
        prometheus.close()
    assert process.returncode == 0 and "Traceback" not in stderr
