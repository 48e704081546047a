"""Istio's outlier detection (DestinationRule trafficPolicy.outlierDetection), on real Envoy
with real traffic.

`httpbin` has healthy endpoints and endpoints that always answer 500. Once a failing endpoint
has returned its consecutive 5xx errors, Envoy ejects it from the load-balancing pool and
every later request goes to a healthy endpoint.
"""

from __future__ import annotations

import time

from tests.harness import free_offset, request

CLUSTER = "outbound|8000||httpbin.default.svc.cluster.local"

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
{endpoints}
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
  trafficPolicy:
    outlierDetection:
{outlier}
"""


def always_500(handler, count):
    return 500, {"error": "broken"}


def start(lab, healthy: int, failing: int, outlier: str):
    good = [lab.backend("httpbin", f"good-{i}") for i in range(healthy)]
    bad = [lab.backend("httpbin", f"bad-{i}", behaviour=always_500) for i in range(failing)]
    endpoints = "\n".join(f"  - {{address: 127.0.0.1, ports: {{http: {b.port}}}}}" for b in good + bad)
    offset = free_offset()
    lab.write_mesh(MESH.format(endpoints=endpoints, offset=offset, outlier=outlier))
    envoy = lab.proxy("client.default", 15000 + offset)
    return envoy, good, bad, 15001 + offset


def call(port: int) -> tuple[int, str]:
    status, body, _ = request(port, "/status", host="httpbin:8000")
    return status, body.get("instance", "")


def call_until(port: int, done, limit: int) -> None:
    """Calls until done() holds, at most `limit` calls (the load balancer picks at random)."""
    for _ in range(limit):
        if done():
            return
        call(port)
    assert done(), f"condition not reached in {limit} calls"


def outlier_stat(envoy, name: str) -> int:
    return envoy.cluster_stat(CLUSTER, f"outlier_detection.{name}")


def wait_for_stat(envoy, name: str, at_least: int, timeout: float = 3) -> int:
    """Ejection happens on Envoy's main thread just after the failing answer: poll for it."""
    deadline = time.monotonic() + timeout
    while True:
        value = outlier_stat(envoy, name)
        if value >= at_least or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_failing_endpoint_is_ejected_and_healthy_one_serves_everything(lab):
    """consecutive5xxErrors 1, interval 1s, baseEjectionTime 30s, maxEjectionPercent 100:
    the endpoint answering 500 is ejected after its first failure; the next 20 calls all
    succeed, from the healthy endpoint."""
    envoy, (good,), (bad,), port = start(lab, 1, 1, """\
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 30s
      maxEjectionPercent: 100""")
    call_until(port, lambda: bad.count >= 1, limit=30)

    assert wait_for_stat(envoy, "ejections_enforced_total", 1) >= 1
    assert outlier_stat(envoy, "ejections_active") == 1
    failing_calls = bad.count
    results = [call(port) for _ in range(20)]
    assert results == [(200, "good-0")] * 20
    assert bad.count == failing_calls, "an ejected endpoint got traffic"


def test_no_panic_routing_to_ejected_endpoints_when_most_fail(lab):
    """Istio's minHealthPercent defaults to 0: even with two of three endpoints ejected (33%
    healthy, below Envoy's own 50% panic threshold), traffic goes only to the healthy one."""
    envoy, (good,), bad, port = start(lab, 1, 2, """\
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 30s
      maxEjectionPercent: 100""")
    call_until(port, lambda: all(b.count >= 1 for b in bad), limit=60)

    assert wait_for_stat(envoy, "ejections_active", 2) == 2
    # Envoy hands a second health change within 1 s of the first to its workers when its
    # update merge window closes, so the second ejection may take up to a second to apply.
    # In panic mode a third of the calls would keep failing and no streak would form.
    deadline = time.monotonic() + 3
    streak = 0
    while streak < 20 and time.monotonic() < deadline:
        streak = streak + 1 if call(port) == (200, "good-0") else 0
    assert streak == 20, "calls kept reaching ejected endpoints"


def test_consecutive_5xx_errors_default_to_five(lab):
    """Without consecutive5xxErrors, Istio ejects after 5 consecutive 5xx (its documented
    default): four failures keep the endpoint in the pool, the fifth ejects it."""
    envoy, (good,), (bad,), port = start(lab, 1, 1, """\
      interval: 1s
      baseEjectionTime: 30s
      maxEjectionPercent: 100""")
    call_until(port, lambda: bad.count >= 4, limit=60)
    assert outlier_stat(envoy, "ejections_enforced_total") == 0

    call_until(port, lambda: bad.count >= 5, limit=30)
    assert wait_for_stat(envoy, "ejections_enforced_total", 1) == 1
    results = [call(port) for _ in range(20)]
    assert results == [(200, "good-0")] * 20
