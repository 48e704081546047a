"""EnvoyFilter patches beyond HTTP filters, on real Envoy with real traffic, at an ingress
gateway as in Istio's "Enabling Rate Limits using Envoy" task.

- VIRTUAL_HOST MERGE of `rate_limits` (the task's descriptors, `vhost.name: ""`: every virtual
  host) with a local rate limit filter whose descriptor limits one path: that path gets 429
  after 3 requests, another path of the same host is not limited.
- CLUSTER ADD: a cluster no ServiceEntry declares, used by an HTTP_ROUTE MERGE: requests reach
  the backend through it. And the global rate limit filter of the task, sending to an ADDed
  rate limit service cluster that nobody serves, with `failure_mode_deny`: requests are
  refused, which shows the filter consults that cluster.
- NETWORK_FILTER INSERT_BEFORE the connection manager: a connection rate limit closes the
  third connection.
"""

from __future__ import annotations

import http.client

import pytest

from tests.harness import free_offset, free_port, request

MESH = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: productpage, namespace: default}}
spec:
  hosts: [productpage.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {productpage}}}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: edge
  namespace: istio-system
  annotations: {{meshwright.io/port-offset: "{offset}"}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {http_port}, name: http, protocol: HTTP}}
    bind: 127.0.0.1
    hosts: [bookinfo.example.com, other.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bookinfo, namespace: default}}
spec:
  hosts: [bookinfo.example.com]
  gateways: [istio-system/edge]
  http:
  - route:
    - destination: {{host: productpage, port: {{number: 9080}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: other, namespace: default}}
spec:
  hosts: [other.example.com]
  gateways: [istio-system/edge]
  http:
  - name: other
    route:
    - destination: {{host: productpage, port: {{number: 9080}}}}
"""

# The task's descriptors on every virtual host, and a local rate limit whose descriptor
# limits /limited to 3 requests a minute (the default bucket is large).
LOCAL_BY_DESCRIPTOR = """
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: filter-local-ratelimit-svc, namespace: istio-system}
spec:
  workloadSelector:
    labels:
      istio: ingressgateway
  configPatches:
    - applyTo: HTTP_FILTER
      match:
        context: GATEWAY
        listener:
          filterChain:
            filter:
              name: "envoy.filters.network.http_connection_manager"
              subFilter:
                name: "envoy.filters.http.router"
      patch:
        operation: INSERT_BEFORE
        value:
          name: envoy.filters.http.local_ratelimit
          typed_config:
            "@type": type.googleapis.com/udpa.type.v1.TypedStruct
            type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
            value:
              stat_prefix: http_local_rate_limiter
              token_bucket: {max_tokens: 1000, tokens_per_fill: 1000, fill_interval: 60s}
              filter_enabled:
                runtime_key: local_rate_limit_enabled
                default_value: {numerator: 100, denominator: HUNDRED}
              filter_enforced:
                runtime_key: local_rate_limit_enforced
                default_value: {numerator: 100, denominator: HUNDRED}
              descriptors:
              - entries: [{key: PATH, value: /limited}]
                token_bucket: {max_tokens: 3, tokens_per_fill: 3, fill_interval: 60s}
    - applyTo: VIRTUAL_HOST
      match:
        context: GATEWAY
        routeConfiguration:
          vhost:
            name: ""
            route:
              action: ANY
      patch:
        operation: MERGE
        value:
          rate_limits:
            - actions:
              - request_headers:
                  header_name: ":path"
                  descriptor_key: "PATH"
"""

# The global rate limit task's filter and its rate limit service cluster (the ADD form of
# the task's older versions), at a port nobody serves; and a cluster of our own for one route.
GLOBAL_AND_ADDED_CLUSTER = """
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {{name: filter-ratelimit, namespace: istio-system}}
spec:
  workloadSelector:
    labels:
      istio: ingressgateway
  configPatches:
    - applyTo: HTTP_FILTER
      match:
        context: GATEWAY
        listener:
          filterChain:
            filter:
              name: "envoy.filters.network.http_connection_manager"
              subFilter:
                name: "envoy.filters.http.router"
      patch:
        operation: INSERT_BEFORE
        value:
          name: envoy.filters.http.ratelimit
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
            domain: ratelimit
            failure_mode_deny: true
            timeout: 2s
            rate_limit_service:
              grpc_service:
                envoy_grpc:
                  cluster_name: rate_limit_cluster
              transport_api_version: V3
    - applyTo: CLUSTER
      match:
        cluster:
          service: ratelimit.default.svc.cluster.local
      patch:
        operation: ADD
        value:
          name: rate_limit_cluster
          type: STATIC
          connect_timeout: 1s
          lb_policy: ROUND_ROBIN
          typed_extension_protocol_options:
            envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
              "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
              explicit_http_config: {{http2_protocol_options: {{}}}}
          load_assignment:
            cluster_name: rate_limit_cluster
            endpoints:
            - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{address: 127.0.0.1, port_value: {dead_port}}}
    - applyTo: VIRTUAL_HOST
      match:
        context: GATEWAY
        routeConfiguration:
          vhost:
            name: "bookinfo.example.com:{http_port}"
      patch:
        operation: MERGE
        value:
          rate_limits:
            - actions:
              - request_headers:
                  header_name: ":path"
                  descriptor_key: "PATH"
    - applyTo: CLUSTER
      match:
        context: GATEWAY
      patch:
        operation: ADD
        value:
          name: direct-to-app
          type: STATIC
          connect_timeout: 1s
          load_assignment:
            cluster_name: direct-to-app
            endpoints:
            - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{address: 127.0.0.1, port_value: {direct}}}
    - applyTo: HTTP_ROUTE
      match:
        context: GATEWAY
        routeConfiguration:
          vhost:
            name: "other.example.com:{http_port}"
            route: {{name: other}}
      patch:
        operation: MERGE
        value:
          route: {{cluster: direct-to-app}}
"""


def start(lab, http_port: int, envoy_filters: str):
    """The gateway on http_port with the EnvoyFilters given; (Envoy, the mesh's app)."""
    productpage = lab.backend("productpage", "productpage-1")
    offset = free_offset()
    lab.write_mesh(MESH.format(productpage=productpage.port, offset=offset, http_port=http_port) + envoy_filters)
    return lab.proxy("edge.istio-system", 15000 + offset), productpage


def statuses(port: int, path: str, host: str, count: int) -> list[int]:
    return [request(port, path, host=host)[0] for _ in range(count)]


def test_virtual_host_rate_limits_feed_a_local_rate_limit_descriptor(lab):
    """Descriptors merged into every virtual host (VIRTUAL_HOST MERGE, vhost name ""): the
    path the descriptor names gets 3 of 6 requests through, any other path all of them."""
    port = free_port()
    envoy, app = start(lab, port, LOCAL_BY_DESCRIPTOR)

    assert statuses(port, "/limited", "bookinfo.example.com", 6) == [200] * 3 + [429] * 3
    assert statuses(port, "/free", "bookinfo.example.com", 6) == [200] * 6
    # The other host's virtual host got the descriptors too; the descriptor's bucket is the
    # filter's, shared by every host of the listener, and empty now.
    assert statuses(port, "/limited", "other.example.com", 1) == [429]
    assert app.count == 3 + 6
    assert envoy.stat("http_local_rate_limiter.http_local_rate_limit.rate_limited") == 4


def test_added_clusters_carry_traffic_and_the_global_rate_limit_filter_calls_its_service(lab):
    """A cluster no ServiceEntry declares (CLUSTER ADD) takes the route it is merged into; the
    global rate limit filter on bookinfo's virtual host asks the ADDed rate limit cluster,
    which nobody serves: with failure_mode_deny the request is refused."""
    direct = lab.backend("direct", "direct-1")
    port = free_port()
    envoy, app = start(lab, port, GLOBAL_AND_ADDED_CLUSTER.format(http_port=port, direct=direct.port, dead_port=free_port()))

    assert statuses(port, "/", "other.example.com", 3) == [200] * 3
    assert direct.count == 3 and app.count == 0
    status, _, _ = request(port, "/", host="bookinfo.example.com")
    assert status == 500
    assert app.count == 0
    # The rate limit service's cluster was asked (and failed to connect); the filter counts
    # the error on the cluster of the route it guarded.
    assert envoy.stat("cluster.rate_limit_cluster.upstream_cx_connect_fail") >= 1
    assert envoy.cluster_stat("outbound|9080||productpage.default.svc.cluster.local", "ratelimit.error") == 1


# A connection limit before the HTTP connection manager (NETWORK_FILTER INSERT_BEFORE, named
# by filterChain.filter.name): 2 connections a minute on the gateway's port.
CONNECTION_LIMIT = """
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: connection-rate, namespace: istio-system}
spec:
  workloadSelector:
    labels: {istio: ingressgateway}
  configPatches:
  - applyTo: NETWORK_FILTER
    match:
      context: GATEWAY
      listener:
        filterChain:
          filter: {name: envoy.filters.network.http_connection_manager}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.network.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit
          stat_prefix: gateway_connections
          token_bucket: {max_tokens: 2, tokens_per_fill: 2, fill_interval: 60s}
"""


def test_a_network_filter_inserted_before_the_connection_manager_limits_connections(lab):
    """Each request is a new connection: two are served, the third is closed by the network
    filter before any HTTP is read, and never reaches the app."""
    port = free_port()
    envoy, app = start(lab, port, CONNECTION_LIMIT)

    assert statuses(port, "/productpage", "bookinfo.example.com", 2) == [200, 200]
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        request(port, "/productpage", host="bookinfo.example.com")
    assert app.count == 2
    limited = {name: value for name, value in envoy.stats().items() if "gateway_connections" in name and name.endswith("rate_limited")}
    assert list(limited.values()) == [1], limited
