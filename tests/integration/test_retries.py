"""Istio's retries (VirtualService `retries`), on real Envoy with real traffic.

`ratings` is flaky: its first calls fail (503) or hang. The client's VirtualService picks a
retry policy by the `x-retries` header: `attempts: 3, retryOn: 5xx` by default, `attempts: 0`
(retries off), no `retries` field at all (Istio's default policy), or a per-try timeout.
"""

from __future__ import annotations

import time

from tests.harness import free_offset, request

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
  - {{address: 127.0.0.1, ports: {{http: {port}}}, labels: {{app: ratings}}}}
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
        x-retries: {{exact: "off"}}
    retries: {{attempts: 0}}
    route:
    - destination: {{host: ratings}}
  - match:
    - headers:
        x-retries: {{exact: istio-default}}
    route:
    - destination: {{host: ratings}}
  - match:
    - headers:
        x-retries: {{exact: per-try}}
    retries: {{attempts: 2, perTryTimeout: 0.3s, retryOn: 5xx}}
    route:
    - destination: {{host: ratings}}
  - retries: {{attempts: 3, retryOn: 5xx}}
    route:
    - destination: {{host: ratings}}
"""


def start(lab, behaviour):
    backend = lab.backend("ratings", "ratings-1", behaviour=behaviour)
    offset = free_offset()
    lab.write_mesh(MESH.format(port=backend.port, offset=offset))
    lab.proxy("client.default", 15000 + offset)
    return backend, 15001 + offset


def fail_first_two(handler, count):
    return (503, {"error": "not yet"}) if count <= 2 else None


def test_retries_hide_two_503s_from_the_client(lab):
    """retries {attempts: 3, retryOn: 5xx}: the backend's first two 503s are retried by Envoy;
    the client sees only the third call's 200."""
    backend, port = start(lab, fail_first_two)
    status, body, _ = request(port, "/ratings/0", host="ratings")
    assert (status, body.get("error")) == (200, None)
    assert backend.count == 3


def test_zero_attempts_passes_the_503_through(lab):
    """retries {attempts: 0} turns retries off: the client gets the backend's first 503."""
    backend, port = start(lab, fail_first_two)
    status, body, _ = request(port, "/ratings/0", host="ratings", headers={"x-retries": "off"})
    assert (status, body["error"]) == (503, "not yet")
    assert backend.count == 1


def test_istio_default_policy_retries_503_twice(lab):
    """A route without `retries` gets Istio's default: 2 retries on 503 (retriable-status-codes),
    so two 503s in a row are still hidden from the client."""
    backend, port = start(lab, fail_first_two)
    status, _, _ = request(port, "/ratings/0", host="ratings", headers={"x-retries": "istio-default"})
    assert status == 200
    assert backend.count == 3


def test_per_try_timeout_retries_a_slow_first_try(lab):
    """retries {perTryTimeout: 0.3s}: the first call hangs, Envoy abandons it after 0.3 s and
    retries; the client gets the second call's 200 long before the first would have answered."""

    def slow_first(handler, count):
        if count == 1:
            time.sleep(2)
        return None

    backend, port = start(lab, slow_first)
    began = time.monotonic()
    status, _, _ = request(port, "/ratings/0", host="ratings", headers={"x-retries": "per-try"})
    elapsed = time.monotonic() - began
    assert status == 200
    # Envoy's timers have millisecond granularity and may fire a hair early.
    assert 0.25 <= elapsed < 1.2, f"the retried request took {elapsed:.2f}s, expected about 0.3s"
    assert backend.count == 2
