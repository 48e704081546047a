"""The API server away: the registry keeps its last view (the mesh keeps serving it), retries
with backoff, and once the API server is back it watches again and publishes what changed
while it was away. This module has an API server of its own: it stops and restarts it."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from kubernetes import client

from meshwright.serve.kubernetes import KubernetesRegistry
from tests.kubernetes.api_server import start_api_server, stop_api_server
from tests.kubernetes.test_registry import Published, make_pod

NAMESPACE = "registry"  # make_pod's


RESTARTED: list[subprocess.Popen] = []  # kube-apiservers this module started again: reaped once stopped


@pytest.fixture(scope="module")
def own_api_server():
    api = start_api_server()
    try:
        yield api
    finally:
        stop_api_server(api)
        for process in RESTARTED:
            process.wait(timeout=30)


def api_server_pid(api) -> int:
    with open(os.path.join(api.workdir, "kube-apiserver.pid")) as handle:
        return int(handle.read())


def stop_kube_apiserver(api) -> list[str]:
    """Kills kube-apiserver as a crash would (etcd stays); its command line, to start it again."""
    pid = api_server_pid(api)
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        command = [part.decode() for part in handle.read().split(b"\0") if part]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while os.path.exists(f"/proc/{pid}/exe") and time.monotonic() < deadline:  # gone, or a zombie (its parent, the start script, has exited)
        time.sleep(0.1)
    return command


def start_kube_apiserver(api, command: list[str]) -> None:
    with open(os.path.join(api.workdir, "kube-apiserver.log"), "a") as log:
        process = subprocess.Popen(command, cwd=api.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    RESTARTED.append(process)
    with open(os.path.join(api.workdir, "kube-apiserver.pid"), "w") as handle:
        handle.write(str(process.pid))  # stop.sh stops this one
    deadline = time.monotonic() + 60
    while api.kubectl("get", "--raw", "/readyz", check=False).stdout != "ok":
        assert time.monotonic() < deadline, "kube-apiserver did not come back"
        time.sleep(0.3)


def test_the_registry_keeps_its_view_while_the_api_server_is_away_and_resyncs_after(own_api_server):
    api = own_api_server.api_client()
    client.CoreV1Api(api).create_namespace({"metadata": {"name": NAMESPACE}})
    make_pod(api, "before", "before", "10.244.0.50")
    published = Published()
    registry = KubernetesRegistry("kubernetes/away", own_api_server.configuration())
    registry.start(published)
    try:
        published.wait_for(lambda r: "WorkloadEntry/registry/before" in r, "the pod there before")
        count = published.count
        command = stop_kube_apiserver(own_api_server)
        time.sleep(3)  # the watchers find it away and retry
        assert published.count == count  # nothing published while away: the last view stands
        start_kube_apiserver(own_api_server, command)

        make_pod(own_api_server.api_client(), "after", "after", "10.244.0.51")
        seen = published.wait_for(lambda r: "WorkloadEntry/registry/after" in r, "the pod made once the API server was back")
        assert "WorkloadEntry/registry/before" in seen
        assert registry.relists.get("Pod", 0) >= 1  # the watch broke, the watcher retried and listed again
    finally:
        registry.stop()
