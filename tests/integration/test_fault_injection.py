"""Istio's fault-injection task, on real Envoy with real traffic.

One client sidecar routes to `ratings`. A request with `end-user: jason` is delayed 2 s
(Istio's delay example); one with `end-user: abort` is aborted with HTTP 500 half of the time
(Istio's abort example, at 50%). Everyone else goes straight through.
"""

from __future__ import annotations

import time

from tests.harness import free_offset, request

ABORT_REQUESTS = 200

MESH = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ratings, namespace: default}}
spec:
  hosts: [ratings.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {port}}}, labels: {{app: ratings, version: v1}}}}
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
kind: VirtualService
metadata: {{name: ratings, namespace: default}}
spec:
  hosts: [ratings]
  http:
  - match:
    - headers:
        end-user: {{exact: jason}}
    fault:
      delay:
        percentage: {{value: 100.0}}
        fixedDelay: 2s
    route:
    - destination: {{host: ratings}}
  - match:
    - headers:
        end-user: {{exact: abort}}
    fault:
      abort:
        percentage: {{value: 50.0}}
        httpStatus: 500
    route:
    - destination: {{host: ratings}}
  - route:
    - destination: {{host: ratings}}
"""


def start(lab):
    backend = lab.backend("ratings", "ratings-v1")
    offset = free_offset()
    lab.write_mesh(MESH.format(port=backend.port, offset=offset))
    lab.proxy("client.default", 15000 + offset)
    return backend, 15001 + offset


def timed_request(port, headers=None):
    began = time.monotonic()
    status, body, _ = request(port, "/ratings/0", host="ratings", headers=headers)
    return status, body, time.monotonic() - began


def test_fixed_delay_holds_matching_requests_for_2s(lab):
    """fault.delay.fixedDelay 2s at 100%: the matching request still succeeds, but only after
    Envoy has held it for 2 s; a request that does not match the route is not delayed."""
    backend, port = start(lab)

    status, body, elapsed = timed_request(port)
    assert (status, body["service"]) == (200, "ratings")
    assert elapsed < 1.0, f"a request without end-user: jason took {elapsed:.2f}s"

    status, body, elapsed = timed_request(port, {"end-user": "jason"})
    assert (status, body["service"]) == (200, "ratings")
    # Envoy's timers have millisecond granularity and may fire a hair early.
    assert 1.95 <= elapsed < 3.5, f"the delayed request took {elapsed:.2f}s, expected about 2s"
    assert backend.count == 2


def test_abort_half_of_requests_with_500_before_the_backend(lab):
    """fault.abort httpStatus 500 at 50%: about half the matching requests get 500 from Envoy
    itself, and those never reach the backend; the rest get the backend's 200."""
    backend, port = start(lab)

    statuses = [request(port, "/ratings/0", host="ratings", headers={"end-user": "abort"})[0] for _ in range(ABORT_REQUESTS)]
    aborted = statuses.count(500)
    assert aborted + statuses.count(200) == ABORT_REQUESTS, f"unexpected statuses: {sorted(set(statuses))}"
    share = 100 * aborted / ABORT_REQUESTS
    assert 40 <= share <= 60, f"{share:.1f}% of {ABORT_REQUESTS} requests aborted, expected 50 +- 10"
    # Only the requests that were let through reached the backend.
    assert backend.count == ABORT_REQUESTS - aborted

    # Without the header nothing is aborted.
    assert [request(port, "/ratings/0", host="ratings")[0] for _ in range(20)] == [200] * 20
