"""`meshwright serve --marathon` end to end: the Marathon double (tests/fakes/marathon.py) runs
an app whose tasks are real HTTP backends on loopback; the control plane follows it; a real
Envoy (the client's sidecar, bootstrapped for ADS) receives the endpoints. Whatever happens in
Marathon (scale up and down, a task dies, a health check fails, the event stream drops and
comes back with changes made meanwhile), the endpoints Envoy holds match Marathon's running,
healthy tasks within a second of the event, and requests reach only those tasks.

One control plane, one Envoy and one double for the module (they take seconds to start);
each test first brings the app to a known state.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from meshwright.compile.xds_bootstrap import XdsServer
from meshwright.deliver.files import serialize
from meshwright.serve import server as xds_server
from meshwright.serve.bootstrap import xds_bootstrap
from meshwright.serve.marathon import MarathonRegistry
from meshwright.serve.source import load_valid
from tests.fakes.marathon import MarathonDouble
from tests.harness import Backend, Envoy, free_offset, free_port, request
from tests.modules.conftest import run_module

APP_ID = "/shop/reviews"
HOST = "reviews.shop.svc.cluster.local"
SERVICE_PORT = 10080
CLUSTER = f"outbound|{SERVICE_PORT}||{HOST}"
APP = {"id": APP_ID, "cmd": "./reviews", "instances": 2,
       "portDefinitions": [{"port": SERVICE_PORT, "name": "http", "protocol": "tcp"}],
       "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/", "portIndex": 0}]}
MESH = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: client
  namespace: default
  annotations: {{meshwright.io/port-offset: "{offset}"}}
spec: {{address: 127.0.0.1, labels: {{app: client}}, serviceAccount: client}}
"""
WITHIN = 1.0


class MarathonLab:
    """The double with real task processes, `meshwright serve` following it, the client's Envoy."""

    def __init__(self, tmp_path):
        self.backends: dict[str, Backend] = {}
        self.double = MarathonDouble(heartbeat_seconds=0.5)
        self.double.cluster.launcher = self.launch
        self.double.cluster.put_app(APP, force=False)
        self.offset = free_offset()
        mesh_dir = tmp_path / "mesh"
        mesh_dir.mkdir()
        (mesh_dir / "mesh.yaml").write_text(MESH.format(offset=self.offset))
        mesh, problems = load_valid([str(mesh_dir)])
        assert problems == []
        self.registry = MarathonRegistry([self.double.url], "marathon/test", stall_seconds=1.5)
        self.running = xds_server.start(mesh, [str(mesh_dir)], ("127.0.0.1", free_port()), None, ("127.0.0.1", free_port()),
                                        registries=[self.registry])
        config_dir = tmp_path / "client"
        config_dir.mkdir()
        bootstrap = xds_bootstrap(self.running.plane.estate.mesh, "client.default", XdsServer((("127.0.0.1", self.running.grpc_port),), None, False))
        (config_dir / "bootstrap.yaml").write_text(serialize(bootstrap, "yaml"))
        self.envoy = Envoy(str(config_dir), 15000 + self.offset)

    def launch(self, kind, app, task):
        """What the double's agent runs for a task: an HTTP backend on its host port."""
        backend = Backend("reviews", task["id"], port=task["ports"][0])
        self.backends[task["id"]] = backend
        return lambda: self.backends.pop(task["id"]).close()

    def marathon_endpoints(self) -> set[str]:
        """host:port of the app's tasks Marathon says are running and healthy."""
        with self.double.cluster.lock:
            return {f"{t['host']}:{t['ports'][0]}" for t in self.double.cluster.tasks.get(APP_ID, [])
                    if t["state"] == "TASK_RUNNING" and all(r["alive"] for r in t.get("healthCheckResults") or [{"alive": False}])}

    def envoy_endpoints(self) -> set[str]:
        """host:port of the endpoints the client's Envoy holds for the service."""
        clusters = json.loads(self.envoy.admin("/clusters?format=json"))
        for status in clusters.get("cluster_statuses", []):
            if status["name"] == CLUSTER:
                return {f"{h['address']['socket_address']['address']}:{h['address']['socket_address']['port_value']}"
                        for h in status.get("host_statuses", [])}
        return set()

    def wait_matching(self, timeout: float = WITHIN) -> float:
        """Seconds until Envoy's endpoints equal Marathon's running healthy tasks (fails after timeout)."""
        started = time.monotonic()
        while True:
            wanted = self.marathon_endpoints()
            if self.envoy_endpoints() == wanted:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise AssertionError(f"after {timeout}s Envoy has {sorted(self.envoy_endpoints())}, Marathon runs {sorted(wanted)}")
            time.sleep(0.01)

    def instances_answering(self, count: int = 20) -> set[str]:
        seen = set()
        for _ in range(count):
            status, body, _ = request(15001 + self.offset, "/", host=f"{HOST}:{SERVICE_PORT}")
            assert status == 200, body
            seen.add(body["instance"])
        return seen

    def reset(self, instances: int) -> None:
        cluster = self.double.cluster
        cluster.scale(APP_ID, instances)
        for task in list(cluster.tasks[APP_ID]):
            cluster.set_health(task["id"], True)
        self.wait_matching(timeout=5)

    def close(self) -> None:
        self.envoy.stop()
        self.running.stop()
        self.double.stop()
        for backend in list(self.backends.values()):
            backend.close()


def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not true within {timeout}s"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = MarathonLab(tmp_path_factory.mktemp("marathon"))
    yield lab
    lab.close()


def test_envoy_gets_the_running_tasks_and_requests_reach_them(lab):
    lab.reset(2)
    assert len(lab.envoy_endpoints()) == 2
    running_ids = {t["id"] for t in lab.double.cluster.tasks[APP_ID]}
    assert lab.instances_answering() == running_ids


def test_scaling_up_and_down_reaches_envoy_within_a_second(lab):
    lab.reset(2)
    lab.double.cluster.scale(APP_ID, 5)
    took_up = lab.wait_matching()
    assert len(lab.envoy_endpoints()) == 5
    lab.double.cluster.scale(APP_ID, 1)
    took_down = lab.wait_matching()
    assert len(lab.envoy_endpoints()) == 1
    print(f"scale up 2->5 in Envoy after {took_up * 1000:.0f} ms, down 5->1 after {took_down * 1000:.0f} ms")
    assert lab.instances_answering(5) == {t["id"] for t in lab.double.cluster.tasks[APP_ID]}


def test_a_dead_or_unhealthy_task_leaves_envoy_within_a_second(lab):
    lab.reset(3)
    first, second, third = lab.double.cluster.tasks[APP_ID]
    lab.double.cluster.kill_task(first["id"], "TASK_FAILED")
    lab.wait_matching()
    lab.double.cluster.set_health(second["id"], False)
    lab.wait_matching()
    assert lab.envoy_endpoints() == {f"127.0.0.1:{third['ports'][0]}"}
    assert lab.instances_answering(5) == {third["id"]}
    lab.double.cluster.set_health(second["id"], True)
    lab.wait_matching()
    assert len(lab.envoy_endpoints()) == 2


def test_a_dropped_event_stream_resumes_and_changes_made_meanwhile_arrive(lab):
    lab.reset(2)
    lab.double.fail_next("/v2/events", 503, b"", times=2)
    lab.double.drop_streams()
    wait_until(lambda: lab.registry.connected_to is None)  # the drop noticed: what follows is not streamed
    lab.double.cluster.kill_task(lab.double.cluster.tasks[APP_ID][0]["id"])
    lab.double.cluster.scale(APP_ID, 3)
    lab.wait_matching(timeout=3)  # two refused reconnects first (0.2 s, 0.4 s back-off)
    assert len(lab.envoy_endpoints()) == 3
    lab.double.cluster.scale(APP_ID, 4)  # the resumed stream carries events again
    lab.wait_matching()


def test_a_stalled_stream_is_replaced_and_marathon_answering_500_keeps_the_endpoints(lab):
    lab.reset(2)
    lab.double.stalled.set()
    lab.double.cluster.scale(APP_ID, 3)  # lost in the stalled stream: seen once the stall is detected (1.5 s)
    lab.wait_matching(timeout=5)
    lab.double.stalled.clear()
    before = lab.envoy_endpoints()
    lab.double.fail_next("/v2/apps", 500, times=3)
    dropped_at = time.time()
    lab.double.drop_streams()
    time.sleep(0.5)
    assert lab.envoy_endpoints() == before  # the last good endpoints stay while Marathon fails
    wait_until(lambda: (lab.registry.listed_at or 0) > dropped_at)  # after 0.2 + 0.4 + 0.8 s of back-off
    lab.double.cluster.scale(APP_ID, 2)
    lab.wait_matching()


def test_a_deployment_that_fails_is_rolled_back_and_envoy_follows_both(lab):
    """mesh_marathon_app deploys a version whose tasks never pass their health check: Envoy's
    endpoints follow Marathon down to none healthy, then back up when the module rolls back."""
    lab.reset(2)
    lab.double.cluster.healthy_on_start = lambda app: "--broken" not in app.get("cmd", "")
    samples, sampling = [], threading.Event()

    def sample():  # what Envoy holds while the module deploys and rolls back
        while not sampling.is_set():
            samples.append(lab.envoy_endpoints())
            time.sleep(0.02)
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = run_module("mesh_marathon_app", marathon_url=[lab.double.url], definition={**APP, "cmd": "./reviews --broken"}, wait_timeout=1)
        sampling.set()
        sampler.join()
        assert set() in samples  # the broken version's tasks, never healthy, were no endpoint
        assert result["failed"] and result["msg"].startswith("the deployment of /shop/reviews failed: not healthy after 1s: 0 of 2 tasks healthy; rolled back")
        assert lab.double.cluster.apps[APP_ID]["cmd"] == "./reviews"
        lab.wait_matching()
        assert len(lab.envoy_endpoints()) == 2
        assert lab.instances_answering(5) <= {t["id"] for t in lab.double.cluster.tasks[APP_ID]}
    finally:
        sampling.set()
        lab.double.cluster.healthy_on_start = True
