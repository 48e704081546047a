"""`meshwright serve --kubeconfig` end to end: the command watches a real API server, and a
real Envoy (a VM sidecar on this host, from the mesh files) gets the pods of a Kubernetes
Service as endpoints over ADS and routes to them; endpoints follow the EndpointSlices as pods
become unready and are deleted.

Pods' addresses are loopback ones (127.0.0.2, 127.0.0.3) where backends answer: only the API
server is real here, so what the kubelet and the endpoint-slice controller would report is
written by the test."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest
from kubernetes import client

from tests.harness import Backend, Envoy, free_offset, free_port, request
from tests.kubernetes.test_registry import set_pod_status, write_slice

NAMESPACE = "default"
CLIENT = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: client
  namespace: default
  annotations: {{meshwright.io/port-offset: "{offset}"}}
spec: {{address: 127.0.0.1, labels: {{app: client}}, serviceAccount: client}}
"""
TIMEOUT = 15


def meshwright(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meshwright.cli", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def served(api_server, crds, tmp_path):
    """`meshwright serve` watching the mesh folder and the cluster, and the client's Envoy."""
    offset = free_offset()
    mesh = tmp_path / "mesh"
    mesh.mkdir()
    (mesh / "client.yaml").write_text(CLIENT.format(offset=offset))
    grpc_port, status_port = free_port(), free_port()
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "meshwright.cli", "serve", "--mesh", str(mesh), "--plaintext-loopback",
                               "--listen", f"127.0.0.1:{grpc_port}", "--status-listen", f"127.0.0.1:{status_port}",
                               "--kubeconfig", f"test={api_server.kubeconfig}"], stdout=log, stderr=subprocess.STDOUT)
    config_dir = tmp_path / "client"
    config_dir.mkdir()
    made = meshwright("xds-bootstrap", "--mesh", str(mesh), "--proxy", "client.default", "--xds", f"127.0.0.1:{grpc_port}",
                      "--plaintext-loopback", "--out", str(config_dir / "bootstrap.yaml"))
    assert made.returncode == 0, made.stderr
    envoy = None
    try:
        wait_for_status(status_port)
        envoy = Envoy(str(config_dir), 15000 + offset)
        yield envoy, 15001 + offset, status_port
    finally:
        if envoy:
            envoy.stop()
        server.terminate()
        server.wait(timeout=15)
        log.close()
        print((tmp_path / "serve.log").read_text()[-3000:])


def wait_for_status(port: int) -> dict:
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as response:
                return json.load(response)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def instances_answering(port: int, count: int = 12) -> set[str]:
    seen = set()
    for _ in range(count):
        status, body, _ = request(port, "/", host="web")
        if status == 200:
            seen.add(body["instance"])
    return seen


def wait_for_instances(port: int, expected: set[str]) -> float:
    started = time.monotonic()
    while (seen := instances_answering(port)) != expected:
        assert time.monotonic() - started < TIMEOUT, f"answering: {seen}, expected {expected}"
        time.sleep(0.05)
    return time.monotonic() - started


def test_a_vm_sidecar_reaches_kubernetes_pods_as_their_endpoint_slices_say(api_server, served):
    envoy, port, _ = served
    api = api_server.api_client()
    core = client.CoreV1Api(api)
    web_a, web_b = Backend("web", "web-a", host="127.0.0.2"), None
    web_b = Backend("web", "web-b", port=web_a.port, host="127.0.0.3")
    try:
        core.create_namespaced_service(NAMESPACE, {"metadata": {"name": "web"}, "spec": {
            "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": web_a.port}]}})
        core.create_namespaced_service_account(NAMESPACE, {"metadata": {"name": "web"}})
        for name, ip in (("web-a", "127.0.0.2"), ("web-b", "127.0.0.3")):
            core.create_namespaced_pod(NAMESPACE, {"metadata": {"name": name, "labels": {"app": "web"}},
                                                   "spec": {"serviceAccountName": "web", "containers": [{"name": "app", "image": "local.test/tools:1"}]}})
            set_pod_status(api, name, ip, ready=True, namespace=NAMESPACE)
        wait_for_instances(port, {"web-a", "web-b"})

        # (An EndpointSlice may not name a loopback address: the slice says readiness by its
        # targetRef, the pod its address.)
        write_slice(api, "web", [("web-a", "10.244.0.2", {"ready": True}), ("web-b", "10.244.0.3", {"ready": False})], namespace=NAMESPACE)
        unready = wait_for_instances(port, {"web-a"})

        core.delete_namespaced_pod("web-a", NAMESPACE, grace_period_seconds=0)
        write_slice(api, "web", [("web-b", "10.244.0.3", {"ready": True})], namespace=NAMESPACE)
        deleted = wait_for_instances(port, {"web-b"})
        print(f"endpoint changes reached Envoy in {unready:.2f} s (not ready) and {deleted:.2f} s (deleted)")
        assert envoy.stat("cluster_manager.cds.update_rejected") == 0
    finally:
        for backend in (web_a, web_b):
            backend.close()
