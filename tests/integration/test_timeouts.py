"""Istio's request-timeouts task, on real Envoy with real traffic.

`reviews` takes 2 s to answer. The client's VirtualService gives requests with
`x-timeout: short` a route with `timeout: 0.5s`; other requests take a route with no timeout,
which Istio leaves unlimited.
"""

from __future__ import annotations

import time

from tests.harness import free_offset, request

BACKEND_DELAY = 2.0

MESH = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {port}}}, labels: {{app: reviews}}}}
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
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        x-timeout: {{exact: short}}
    timeout: 0.5s
    route:
    - destination: {{host: reviews}}
  - route:
    - destination: {{host: reviews}}
"""


def test_route_timeout_answers_504_after_half_a_second(lab):
    """timeout: 0.5s: Envoy gives up on a 2 s backend after 0.5 s and answers 504 itself (and
    does not retry it: Istio's default retries do not cover timeouts); the same backend behind
    a route without a timeout answers 200 after its 2 s."""

    def slow(handler, count):
        time.sleep(BACKEND_DELAY)
        return None

    backend = lab.backend("reviews", "reviews-1", behaviour=slow)
    offset = free_offset()
    lab.write_mesh(MESH.format(port=backend.port, offset=offset))
    lab.proxy("client.default", 15000 + offset)
    port = 15001 + offset

    began = time.monotonic()
    status, body, headers = request(port, "/reviews/0", host="reviews", headers={"x-timeout": "short"})
    elapsed = time.monotonic() - began
    assert status == 504, (status, body)
    assert body == {"raw": "upstream request timeout"}
    # Envoy's timers have millisecond granularity and may fire a hair early.
    assert 0.45 <= elapsed < 1.2, f"the timed-out request took {elapsed:.2f}s, expected about 0.5s"
    assert backend.count == 1

    began = time.monotonic()
    status, body, _ = request(port, "/reviews/0", host="reviews")
    elapsed = time.monotonic() - began
    assert (status, body["service"]) == (200, "reviews")
    assert elapsed >= BACKEND_DELAY, f"the request without a timeout took {elapsed:.2f}s"
    assert backend.count == 2
