"""Istio's mirroring task, on real Envoy with real traffic.

All of `httpbin`'s traffic goes to v1 and is mirrored to v2: at 100% by default, at 50% for
requests with `x-mirror: half`. v2 only ever receives copies, so its backend's count is the
number of mirrored requests.
"""

from __future__ import annotations

import time

from tests.harness import free_offset, request

V2_CLUSTER = "outbound|8000|v2|httpbin.default.svc.cluster.local"
HALF_REQUESTS = 200

MESH = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: httpbin, namespace: default}}
spec:
  hosts: [httpbin.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8000, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {v1}}}, labels: {{app: httpbin, version: v1}}}}
  - {{address: 127.0.0.1, ports: {{http: {v2}}}, labels: {{app: httpbin, version: v2}}}}
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
metadata: {{name: httpbin, namespace: default}}
spec:
  host: httpbin
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: httpbin, namespace: default}}
spec:
  hosts: [httpbin]
  http:
  - match:
    - headers:
        x-mirror: {{exact: half}}
    route:
    - destination: {{host: httpbin, subset: v1}}
    mirror: {{host: httpbin, subset: v2}}
    mirrorPercentage: {{value: 50.0}}
  - route:
    - destination: {{host: httpbin, subset: v1}}
      weight: 100
    mirror: {{host: httpbin, subset: v2}}
    mirrorPercentage: {{value: 100.0}}
"""


def start(lab):
    v1 = lab.backend("httpbin", "httpbin-v1", "v1")
    v2 = lab.backend("httpbin", "httpbin-v2", "v2")
    offset = free_offset()
    lab.write_mesh(MESH.format(v1=v1.port, v2=v2.port, offset=offset))
    envoy = lab.proxy("client.default", 15000 + offset)
    return envoy, v1, v2, 15001 + offset


def wait_for_count(backend, expected: int, timeout: float = 5.0) -> None:
    """Mirrored copies are fire-and-forget: they may land just after the client's answer."""
    deadline = time.monotonic() + timeout
    while backend.count < expected and time.monotonic() < deadline:
        time.sleep(0.02)


def test_mirror_copies_every_request_to_v2_while_clients_see_v1(lab):
    """mirror v2 at 100%: every client answer comes from v1, and v2 receives a copy of each
    request, with Envoy's `-shadow` suffix on the Host."""
    _, v1, v2, port = start(lab)
    for index in range(10):
        status, body, _ = request(port, f"/headers/{index}", host="httpbin:8000")
        assert (status, body["version"]) == (200, "v1")
    assert v1.count == 10
    wait_for_count(v2, 10)
    assert v2.count == 10
    assert sorted(r["path"] for r in v2.requests) == sorted(f"/headers/{index}" for index in range(10))
    assert {r["headers"]["host"] for r in v2.requests} == {"httpbin-shadow:8000"}
    assert {r["headers"]["host"] for r in v1.requests} == {"httpbin:8000"}


def test_mirror_percentage_50_copies_about_half(lab):
    """mirrorPercentage 50: over 200 requests, v2 receives copies of about half of them (50 +- 10
    points), while v1 still answers all of them."""
    envoy, v1, v2, port = start(lab)
    for _ in range(HALF_REQUESTS):
        status, body, _ = request(port, "/get", host="httpbin:8000", headers={"x-mirror": "half"})
        assert (status, body["version"]) == (200, "v1")
    assert v1.count == HALF_REQUESTS
    # Envoy's count of copies it started tells how many to wait for; v2's own count is the measure.
    copies = envoy.cluster_stat(V2_CLUSTER, "upstream_rq_total")
    wait_for_count(v2, copies)
    assert v2.count == copies
    share = 100 * v2.count / HALF_REQUESTS
    assert 40 <= share <= 60, f"v2 received copies of {share:.1f}% of {HALF_REQUESTS} requests, expected 50 +- 10"
