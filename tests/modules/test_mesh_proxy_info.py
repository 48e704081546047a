"""mesh_proxy_info: the health gate's view of a running proxy, read from a real Envoy's admin
interface: readiness, version, endpoints healthy per cluster, and config updates it rejected."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.harness import ENVOY, Backend, free_port
from tests.modules.conftest import run_module

BOOTSTRAP = """\
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
node: {{id: info-test, cluster: info-test}}
dynamic_resources:
  cds_config:
    resource_api_version: V3
    path_config_source:
      path: {dir}/cds.yaml
      watched_directory: {{path: {dir}}}
static_resources:
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {backend}}}}}}}}}]}}]
  - name: nothing-listens
    type: STATIC
    connect_timeout: 0.25s
    health_checks:
    - {{timeout: 0.25s, interval: 0.25s, no_traffic_interval: 0.25s, unhealthy_threshold: 1, healthy_threshold: 1,
       http_health_check: {{path: /healthz}}}}
    load_assignment:
      cluster_name: nothing-listens
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {closed}}}}}}}}}]}}]
"""

CDS = """\
resources:
- '@type': type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: from-file
  type: STATIC
  connect_timeout: {timeout}
  load_assignment:
    cluster_name: from-file
    endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {backend}}}}}}}}}]}}]
"""


def replace_file(path: str, text: str) -> None:
    """As the deploy writes: a new file renamed into place (Envoy watches the folder for moves)."""
    with open(path + ".tmp", "w") as handle:
        handle.write(text)
    os.replace(path + ".tmp", path)


@pytest.fixture
def envoy_and_config(tmp_path):
    """A real Envoy (started, not yet waited for) with a healthy cluster, a cluster whose only
    endpoint fails its health check, and clusters read from a watched file."""
    backend = Backend("backend", "backend-1")
    admin = free_port()
    replace_file(str(tmp_path / "cds.yaml"), CDS.format(timeout="1s", backend=backend.port))
    (tmp_path / "bootstrap.yaml").write_text(BOOTSTRAP.format(admin=admin, dir=tmp_path, backend=backend.port, closed=free_port()))
    with open(tmp_path / "envoy.log", "w") as log:
        process = subprocess.Popen([ENVOY, "-c", str(tmp_path / "bootstrap.yaml"), "-l", "warning", "--use-dynamic-base-id",
                                    "--base-id-path", str(tmp_path / "base-id")], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield admin, str(tmp_path / "cds.yaml"), backend
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        backend.close()


def test_info_of_a_running_proxy(envoy_and_config):
    """Waits for the starting Envoy to be LIVE, then reports its version, uptime, healthy and total
    endpoints per cluster (a cluster whose only endpoint fails health checks is named unhealthy), and
    no rejected update; a config update Envoy rejects is then counted. Never a change, check mode too."""
    admin_port, cds_path, backend = envoy_and_config
    info = run_module("mesh_proxy_info", admin_port=admin_port, wait_timeout=20)
    assert info["changed"] is False
    assert info["ready"] is True, info
    assert info["version"] == "1.40.0"
    assert isinstance(info["uptime"], int) and 0 <= info["uptime"] < 60
    assert info["clusters"]["backend"] == {"healthy": 1, "total": 1}
    assert info["clusters"]["from-file"] == {"healthy": 1, "total": 1}
    assert info["clusters"]["nothing-listens"] == {"healthy": 0, "total": 1}
    assert info["unhealthy"] == ["nothing-listens"]
    assert info["rejected_updates"] == 0

    # A negative timeout is valid YAML and a valid proto, but Envoy's validation rejects it.
    replace_file(cds_path, CDS.format(timeout="-1s", backend=backend.port))
    deadline = time.monotonic() + 10
    while (info := run_module("mesh_proxy_info", check=True, admin_port=admin_port))["rejected_updates"] == 0:
        assert time.monotonic() < deadline, "Envoy did not reject the update"
        time.sleep(0.1)
    assert info["changed"] is False
    assert info["rejected_updates"] == 1
    assert info["ready"] is True and info["clusters"]["from-file"] == {"healthy": 1, "total": 1}


def test_nothing_answering_is_not_ready_and_not_a_failure():
    """A proxy that is down reads as not ready (the play decides), after waiting at most wait_timeout."""
    started = time.monotonic()
    info = run_module("mesh_proxy_info", admin_port=free_port(), wait_timeout=0.5)
    assert time.monotonic() - started < 3
    assert not info.get("failed"), info
    assert (info["ready"], info["version"], info["clusters"], info["unhealthy"], info["rejected_updates"]) == (False, None, {}, [], None)
