"""A real Kubernetes API server for tests: etcd and kube-apiserver from ../shared/envtest
(envtest's way: no kubelet, no controllers), started on free loopback ports, stopped by PID
(tests/kubernetes/conftest.py starts one per test session).

MESHWRIGHT_ENVTEST names the envtest folder (default: the repository's ../shared/envtest).
When it or Debian's etcd is missing, the fixture fails with what to install: a test that
needs a real API server never passes without one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass

import pytest
from kubernetes import client

from tests.harness import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENVTEST = os.environ.get("MESHWRIGHT_ENVTEST", os.path.join(os.path.dirname(ROOT), "shared", "envtest"))
# The binaries, unpacked once (setup.sh checks them against their SHA256SUMS).
ASSETS = os.environ.get("MESHWRIGHT_ENVTEST_BIN", os.path.join(ROOT, ".cache", "kube-envtest"))
START_TIMEOUT = 120


@dataclass(frozen=True)
class ApiServer:
    """A running API server: its kubeconfig (admin, system:masters), address, CA and admin token."""

    workdir: str
    kubeconfig: str
    server: str
    ca_file: str
    token: str
    bin_dir: str

    def configuration(self, token: str | None = None) -> client.Configuration:
        """As admin, or as the bearer of token (a fresh Configuration: the kubeconfig
        loader would swap the admin token back in)."""
        configuration = client.Configuration()
        configuration.host = self.server
        configuration.ssl_ca_cert = self.ca_file
        configuration.api_key = {"authorization": f"Bearer {token or self.token}"}
        return configuration

    def api_client(self, token: str | None = None) -> client.ApiClient:
        return client.ApiClient(self.configuration(token))

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([os.path.join(self.bin_dir, "kubectl"), "--kubeconfig", self.kubeconfig, *args],
                              input=input, capture_output=True, text=True, check=check, timeout=60)


def _missing() -> str | None:
    if not os.path.isfile(os.path.join(ENVTEST, "start-apiserver.sh")):
        return (f"no Kubernetes envtest at {ENVTEST} (start-apiserver.sh): set MESHWRIGHT_ENVTEST to the folder "
                "that holds Kubernetes' binaries and scripts (../shared/envtest beside the repository)")
    if shutil.which("etcd") is None:
        return "no etcd on PATH: install Debian's etcd-server (apt-get install etcd-server), as .ci/run does"
    return None


def _env(path: str) -> dict[str, str]:
    values = {}
    with open(path) as env:
        for line in env:
            key, _, value = line.removeprefix("export ").strip().partition("=")
            values[key] = value
    return values


def start_api_server() -> ApiServer:
    problem = _missing()
    if problem:
        pytest.fail(problem, pytrace=False)
    bin_dir = subprocess.run([os.path.join(ENVTEST, "setup.sh"), ASSETS], capture_output=True, text=True, check=True).stdout.strip()
    ports = {"APISERVER_PORT": free_port(), "ETCD_CLIENT_PORT": free_port(), "ETCD_PEER_PORT": free_port()}
    environment = {**os.environ, **{k: str(v) for k, v in ports.items()}, "KUBE_APISERVER": os.path.join(bin_dir, "kube-apiserver"),
                   "START_TIMEOUT": str(START_TIMEOUT)}
    started = subprocess.run([os.path.join(ENVTEST, "start-apiserver.sh")], env=environment, capture_output=True, text=True,
                             timeout=START_TIMEOUT + 30)
    if started.returncode != 0:
        pytest.fail(f"the envtest API server did not start:\n{started.stderr}", pytrace=False)
    workdir = started.stdout.strip().splitlines()[-1]
    env = _env(os.path.join(workdir, "env"))
    return ApiServer(workdir, env["KUBECONFIG"], env["KUBE_SERVER"], env["KUBE_CA"], env["KUBE_TOKEN"], bin_dir)


def stop_api_server(api: ApiServer) -> None:
    subprocess.run([os.path.join(api.workdir, "stop.sh")], check=False, timeout=60)


def create_retrying(create, attempts: int = 40):
    """create() retried while the API server does not serve a new CRD yet (404: about 0.5-2 s)."""
    for attempt in range(attempts):
        try:
            return create()
        except client.ApiException as error:
            if error.status != 404 or attempt == attempts - 1:
                raise
            time.sleep(0.25)
