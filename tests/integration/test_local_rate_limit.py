"""Istio's local rate limiting task (an EnvoyFilter inserting envoy.filters.http.local_ratelimit
into a workload's inbound HTTP filters), on real Envoy with real traffic.

`productpage` has a sidecar whose inbound listeners (Sidecar ingress) forward to the app.
A token bucket of 10 tokens, refilled with 10 every second, lets 10 quick requests through;
the rest are answered 429 by the sidecar itself and never reach the app.

Envoy refills the bucket continuously (10 per second is one token every 100 ms, counted from
the first request that took a token), so a burst that happens to take longer than 100 ms may
see one more request through per 100 ms; the tests measure that time and allow exactly that.
"""

from __future__ import annotations

import time

from tests.harness import free_offset, free_port, request

MESH = """
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: productpage
  namespace: default
  annotations: {{meshwright.io/port-offset: "{offset}"}}
spec: {{address: 127.0.0.1, labels: {{app: productpage}}}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: productpage, namespace: default}}
spec:
  workloadSelector:
    labels: {{app: productpage}}
  ingress:
  - port: {{number: {limited}, protocol: HTTP, name: http}}
    bind: 127.0.0.1
    defaultEndpoint: 127.0.0.1:{app}
  - port: {{number: {other}, protocol: HTTP, name: http-other}}
    bind: 127.0.0.1
    defaultEndpoint: 127.0.0.1:{app}
"""

# The bucket settings of the task, with the numbers of this test.
BUCKET = """\
stat_prefix: http_local_rate_limiter
token_bucket:
  max_tokens: 10
  tokens_per_fill: 10
  fill_interval: 1s
filter_enabled:
  runtime_key: local_rate_limit_enabled
  default_value:
    numerator: 100
    denominator: HUNDRED
filter_enforced:
  runtime_key: local_rate_limit_enforced
  default_value:
    numerator: 100
    denominator: HUNDRED
response_headers_to_add:
- append_action: OVERWRITE_IF_EXISTS_OR_ADD
  header:
    key: x-local-rate-limit
    value: 'true'
"""

# Istio's docs, "Local rate limit": the filter on every inbound HTTP listener of the workload.
LISTENER_FILTER = """
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata:
  name: filter-local-ratelimit-svc
  namespace: istio-system
spec:
  workloadSelector:
    labels:
      app: productpage
  configPatches:
    - applyTo: HTTP_FILTER
      match:
        context: SIDECAR_INBOUND
        listener:
          filterChain:
            filter:
              name: "envoy.filters.network.http_connection_manager"
      patch:
        operation: INSERT_BEFORE
        value:
          name: envoy.filters.http.local_ratelimit
          typed_config:
            "@type": type.googleapis.com/udpa.type.v1.TypedStruct
            type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
            value:
{bucket}"""

# Istio's docs, the per-route form: the filter is inserted without a bucket (so it does
# nothing by itself) and the bucket is merged into the routes of one virtual host.
ROUTE_FILTER = """
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata:
  name: filter-local-ratelimit-svc
  namespace: istio-system
spec:
  workloadSelector:
    labels:
      app: productpage
  configPatches:
    - applyTo: HTTP_FILTER
      match:
        context: SIDECAR_INBOUND
        listener:
          filterChain:
            filter:
              name: "envoy.filters.network.http_connection_manager"
      patch:
        operation: INSERT_BEFORE
        value:
          name: envoy.filters.http.local_ratelimit
          typed_config:
            "@type": type.googleapis.com/udpa.type.v1.TypedStruct
            type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
            value:
              stat_prefix: http_local_rate_limiter
    - applyTo: HTTP_ROUTE
      match:
        context: SIDECAR_INBOUND
        routeConfiguration:
          vhost:
            name: "inbound|http|{limited}"
            route:
              action: ANY
      patch:
        operation: MERGE
        value:
          typed_per_filter_config:
            envoy.filters.http.local_ratelimit:
              "@type": type.googleapis.com/udpa.type.v1.TypedStruct
              type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              value:
{bucket}"""


def indent(text: str, spaces: int) -> str:
    return "".join(" " * spaces + line + "\n" for line in text.splitlines())


def start(lab, envoy_filter: str, bucket_indent: int):
    app = lab.backend("productpage", "productpage-1")
    offset = free_offset()
    ports = {"limited": free_port(), "other": free_port()}
    envoy_filter = envoy_filter.format(bucket=indent(BUCKET, bucket_indent), **ports)
    lab.write_mesh(MESH.format(offset=offset, app=app.port, **ports) + envoy_filter)
    envoy = lab.proxy("productpage.default", 15000 + offset)
    return envoy, app, ports


def burst(port: int, count: int = 20) -> tuple[list[int], float, list[dict]]:
    """`count` requests back to back: (statuses, seconds from the first request to the
    last, response headers)."""
    statuses, headers = [], []
    first = time.monotonic()
    for _ in range(count):
        status, _, response_headers = request(port, "/productpage")
        statuses.append(status)
        headers.append(response_headers)
    return statuses, time.monotonic() - first, headers


def assert_limited_to_ten(statuses: list[int], elapsed: float, headers: list[dict]) -> int:
    """The first 10 requests pass and the rest are 429, give or take the tokens refilled
    while the burst ran. Returns how many passed."""
    refilled = int(elapsed / 0.1)
    passed = statuses.count(200)
    assert statuses[:10] == [200] * 10, statuses
    assert 10 <= passed <= 10 + refilled, f"{passed} passed in {elapsed:.3f}s: {statuses}"
    assert statuses.count(429) == len(statuses) - passed, statuses
    assert all(h.get("x-local-rate-limit") == "true" for s, h in zip(statuses, headers) if s == 429)
    return passed


def test_inbound_listener_rate_limit_lets_ten_of_twenty_quick_requests_through(lab):
    """The EnvoyFilter of Istio's docs (HTTP_FILTER INSERT_BEFORE on SIDECAR_INBOUND, a
    TypedStruct-wrapped LocalRateLimit): 20 quick requests, 10 answered by the app, 10 by the
    sidecar with 429; a second later the bucket is full again."""
    envoy, app, ports = start(lab, LISTENER_FILTER, 14)

    statuses, elapsed, headers = burst(ports["limited"])
    passed = assert_limited_to_ten(statuses, elapsed, headers)
    assert app.count == passed, "rate-limited requests reached the app"
    assert envoy.stat("http_local_rate_limiter.http_local_rate_limit.rate_limited") == 20 - passed
    # Every inbound HTTP listener of the workload got the filter, each with its own bucket.
    assert_limited_to_ten(*burst(ports["other"]))

    time.sleep(1)
    statuses, elapsed, headers = burst(ports["limited"])
    assert_limited_to_ten(statuses, elapsed, headers)


def test_per_route_rate_limit_applies_to_the_routes_of_the_matched_virtual_host_only(lab):
    """Istio's per-route form: the filter without a bucket on the listener, the bucket merged
    (HTTP_ROUTE MERGE typed_per_filter_config) into the routes of vhost inbound|http|PORT:
    that port is limited to 10 of 20, the workload's other inbound port is not limited."""
    envoy, app, ports = start(lab, ROUTE_FILTER, 16)

    assert_limited_to_ten(*burst(ports["limited"]))
    statuses, _, _ = burst(ports["other"])
    assert statuses == [200] * 20
