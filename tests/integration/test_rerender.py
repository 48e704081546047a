"""Configuration changes reach a running Envoy without a restart (Istio pushes config over xDS;
meshwright writes the files Envoy watches), on real Envoy with real traffic.

A client sidecar routes to `reviews` (v1 and v2). The mesh is edited and re-rendered while
Envoy runs: the same process picks the change up within seconds, and a re-render that
changes nothing writes nothing.
"""

from __future__ import annotations

import http.client
import json
import os
import time

from tests.harness import free_offset, request

SERVICES = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {v1}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{http: {v2}}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: client
  namespace: default
  annotations: {{meshwright.io/port-offset: "{offset}"}}
spec: {{address: 127.0.0.1, labels: {{app: client}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: v1}}
      weight: {v1_weight}
    - destination: {{host: reviews, subset: v2}}
      weight: {v2_weight}
"""

RATINGS = """
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ratings, namespace: default}}
spec:
  hosts: [ratings.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {ratings}}}}}
"""

PROXY = "client.default"


class Client:
    """The running client sidecar and the mesh it was rendered from."""

    def __init__(self, lab):
        self.lab = lab
        self.v1 = lab.backend("reviews", "reviews-v1", "v1")
        self.v2 = lab.backend("reviews", "reviews-v2", "v2")
        self.ratings = lab.backend("ratings", "ratings-v1", "v1")
        self.offset = free_offset()
        self.port = 15001 + self.offset
        self.config_dir = str(lab.tmp_path / PROXY)
        self.write(100, 0)
        self.envoy = lab.proxy(PROXY, 15000 + self.offset)

    def write(self, v1_weight: int, v2_weight: int, ratings: bool = False) -> None:
        text = SERVICES.format(v1=self.v1.port, v2=self.v2.port, offset=self.offset, v1_weight=v1_weight, v2_weight=v2_weight)
        if ratings:
            text += RATINGS.format(ratings=self.ratings.port)
        self.lab.write_mesh(text)

    def versions(self, count: int = 10) -> set[str]:
        seen = set()
        for _ in range(count):
            status, body, _ = request(self.port, "/reviews", host="reviews")
            assert status == 200
            seen.add(body["version"])
        return seen

    def file_times(self) -> dict[str, int]:
        return {name: os.stat(os.path.join(self.config_dir, name)).st_mtime_ns for name in sorted(os.listdir(self.config_dir)) if name != "envoy.log"}

    def server_state(self) -> dict:
        info = json.loads(self.envoy.admin("/server_info"))
        return {"pid": self.envoy.process.pid, "alive": self.envoy.process.poll() is None, "state": info["state"],
                "epoch": info["command_line_options"]["restart_epoch"], "uptime": int(info["uptime_current_epoch"].rstrip("s"))}


def wait_until(condition, timeout: float = 5.0) -> float:
    """Polls condition() until true; returns the seconds it took (fails after timeout)."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"not applied within {timeout}s"
        time.sleep(0.05)
    return time.monotonic() - start


def test_weight_change_moves_traffic_without_restarting_envoy(lab):
    """VirtualService weights 100/0 -> 0/100, re-rendered: the same Envoy process (same PID,
    restart epoch 0, uptime still counting) sends every request to v2 within seconds, also
    on a connection opened before the change; only the route file was rewritten."""
    client = Client(lab)
    assert client.versions() == {"v1"}
    before = client.server_state()
    times_before = client.file_times()
    kept_alive = http.client.HTTPConnection("127.0.0.1", client.port, timeout=10)
    kept_alive.request("GET", "/reviews", headers={"Host": "reviews"})
    assert json.loads(kept_alive.getresponse().read())["version"] == "v1"

    client.write(0, 100)
    lab.rerender(PROXY)
    wait_until(lambda: client.versions(5) == {"v2"})

    assert client.versions(20) == {"v2"}
    kept_alive.request("GET", "/reviews", headers={"Host": "reviews"})
    assert json.loads(kept_alive.getresponse().read())["version"] == "v2"
    kept_alive.close()
    after = client.server_state()
    assert (after["pid"], after["alive"], after["state"], after["epoch"]) == (before["pid"], True, "LIVE", 0)
    assert after["uptime"] >= before["uptime"]
    changed = sorted(name for name, mtime in client.file_times().items() if times_before.get(name) != mtime)
    assert changed == [f"rds-{client.port}.yaml"]
    assert client.envoy.stat("listener_manager.listener_modified") == 0, "a route change must not drain listeners"


def test_new_service_is_added_to_the_running_proxy(lab):
    """A new ServiceEntry, re-rendered: its cluster, endpoints and route appear in the running
    Envoy (new files), and calls to it succeed, with no restart."""
    client = Client(lab)
    status, _, _ = request(client.port, "/ratings", host="ratings")
    assert status == 404
    pid = client.envoy.process.pid

    client.write(100, 0, ratings=True)
    lab.rerender(PROXY)
    wait_until(lambda: request(client.port, "/ratings", host="ratings")[0] == 200)

    services = {request(client.port, "/ratings", host="ratings")[1]["service"] for _ in range(5)}
    assert services == {"ratings"}
    assert client.versions() == {"v1"}
    assert client.envoy.process.pid == pid and client.envoy.process.poll() is None
    assert client.server_state()["epoch"] == 0


def test_rerender_without_a_change_writes_nothing(lab):
    """Rendering the same mesh again leaves every file as it was (same mtimes, no new files),
    so Envoy sees no update at all."""
    client = Client(lab)
    times_before = client.file_times()
    updates_before = client.envoy.stat("listener_manager.lds.update_attempt"), client.envoy.stat("cluster_manager.cds.update_attempt")

    lab.rerender(PROXY)

    assert client.file_times() == times_before
    assert client.versions() == {"v1"}
    updates_after = client.envoy.stat("listener_manager.lds.update_attempt"), client.envoy.stat("cluster_manager.cds.update_attempt")
    assert updates_after == updates_before
