"""EnvoyFilter patches in compiled config, as Istio applies them: each applyTo, operation and
match, read from what the patched proxy's listeners, routes and clusters hold. Other proxies of
the mesh (sharing compiled config by class) must not see a patch meant for one."""

from __future__ import annotations

import textwrap

import pytest

from meshwright.check.pipeline import validate_mesh
from meshwright.compile.build import compile_proxy
from meshwright.compile.proxy import find_proxy
from meshwright.model.load import load_paths

# Two sidecars of one class (reviews-1, reviews-2: only reviews-1 is patched), a gateway and
# a capture-mode sidecar whose virtualInbound picks chains by destination port.
MESH = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratelimit, namespace: default}
spec:
  hosts: [ratelimit.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8081, name: grpc, protocol: GRPC}]
  endpoints: [{address: 10.0.0.9}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-1, namespace: default}
spec: {address: 10.0.0.1, labels: {app: reviews, patched: "yes"}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-2, namespace: default}
spec: {address: 10.0.0.2, labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews, namespace: default}
spec:
  workloadSelector: {labels: {app: reviews}}
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
  egress:
  - hosts: ["./*"]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*/bookinfo.example.com", "*/shop.example.com"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo, namespace: default}
spec:
  hosts: [bookinfo.example.com, shop.example.com]
  gateways: [istio-system/ingress]
  http:
  - route:
    - destination: {host: reviews.default.svc.cluster.local, port: {number: 9080}}
"""

PATCHED = """\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: patch, namespace: default}
spec:
  workloadSelector: {labels: {patched: "yes"}}
  configPatches:
"""

GATEWAY_PATCH = """\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: patch, namespace: istio-system}
spec:
  workloadSelector: {labels: {istio: ingressgateway}}
  configPatches:
"""


def compile_mesh(tmp_path, *texts: str):
    for index, text in enumerate((MESH,) + texts):
        (tmp_path / f"{index}.yaml").write_text(textwrap.dedent(text))
    mesh, problems = validate_mesh(load_paths([str(tmp_path)]))
    assert not [p for p in problems if not p.is_warning], "\n".join(str(p) for p in problems)
    return mesh


def config(mesh, proxy_id: str):
    return compile_proxy(mesh, find_proxy(mesh, proxy_id))


def patched(tmp_path, patches: str, header: str = PATCHED):
    return compile_mesh(tmp_path, header + textwrap.indent(textwrap.dedent(patches), "  "))


def by_name(resources: list[dict]) -> dict:
    return {r["name"]: r for r in resources}


def inbound_listener(cfg) -> dict:
    return next(listener for listener in cfg.listeners if listener["address"]["socket_address"]["port_value"] == 9080)


# The global rate limit task's patches at the ingress gateway (istio.io, "Enabling Rate Limits
# using Envoy"): the filter before the router, the descriptors on every virtual host
# (`vhost.name: ""` is unset in Istio's proto3 API: every virtual host), and the rate limit
# service's cluster added by the older form of the task.
RATE_LIMIT_TASK = """\
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
        timeout: 10s
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
      type: STRICT_DNS
      connect_timeout: 10s
      lb_policy: ROUND_ROBIN
      http2_protocol_options: {}
      load_assignment:
        cluster_name: rate_limit_cluster
        endpoints:
        - lb_endpoints:
          - endpoint:
              address:
                socket_address: {address: ratelimit.default.svc.cluster.local, port_value: 8081}
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
        - request_headers: {header_name: ":path", descriptor_key: "PATH"}
"""


def test_the_global_rate_limit_task_patches_the_gateway(tmp_path):
    mesh = patched(tmp_path, RATE_LIMIT_TASK, GATEWAY_PATCH)
    cfg = config(mesh, "ingress.istio-system")
    manager = cfg.listeners[0]["filter_chains"][0]["filters"][0]["typed_config"]
    names = [f["name"] for f in manager["http_filters"]]
    assert names[-2:] == ["envoy.filters.http.ratelimit", "envoy.filters.http.router"]
    clusters = by_name(cfg.clusters)
    assert clusters["rate_limit_cluster"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"] == 8081
    assert "outbound|8081||ratelimit.default.svc.cluster.local" in clusters, "ADD takes nothing away"
    vhosts = [vhost for route_config in cfg.routes for vhost in route_config["virtual_hosts"]]
    assert len(vhosts) == 2
    assert all(vhost["rate_limits"] == [{"actions": [{"request_headers": {"header_name": ":path", "descriptor_key": "PATH"}}]}] for vhost in vhosts)
    assert [c["name"] for c in cfg.clusters] == sorted(c["name"] for c in cfg.clusters)


def test_a_virtual_host_is_matched_by_name_and_by_domain(tmp_path):
    mesh = patched(tmp_path, """\
    - applyTo: VIRTUAL_HOST
      match: {routeConfiguration: {vhost: {name: "shop.example.com:80"}}}
      patch: {operation: MERGE, value: {include_request_attempt_count: true}}
    - applyTo: VIRTUAL_HOST
      match: {routeConfiguration: {vhost: {domainName: bookinfo.example.com}}}
      patch: {operation: MERGE, value: {include_attempt_count_in_response: true}}
    """, GATEWAY_PATCH)
    vhosts = by_name(config(mesh, "ingress.istio-system").routes[0]["virtual_hosts"])
    assert vhosts["shop.example.com:80"].get("include_request_attempt_count") is True
    assert "include_attempt_count_in_response" not in vhosts["shop.example.com:80"]
    assert vhosts["bookinfo.example.com:80"].get("include_attempt_count_in_response") is True
    assert "include_request_attempt_count" not in vhosts["bookinfo.example.com:80"]


def test_virtual_hosts_are_added_and_removed(tmp_path):
    mesh = patched(tmp_path, """\
    - applyTo: VIRTUAL_HOST
      match: {routeConfiguration: {vhost: {name: "shop.example.com:80"}}}
      patch: {operation: REMOVE}
    - applyTo: VIRTUAL_HOST
      match: {routeConfiguration: {portNumber: 80}}
      patch:
        operation: ADD
        value: {name: health, domains: [health.example.com], routes: [{match: {prefix: /}, direct_response: {status: 200}}]}
    """, GATEWAY_PATCH)
    names = [vhost["name"] for vhost in config(mesh, "ingress.istio-system").routes[0]["virtual_hosts"]]
    assert names == ["bookinfo.example.com:80", "health"]


def test_a_patch_changes_only_the_proxies_it_selects(tmp_path):
    mesh = patched(tmp_path, """\
    - applyTo: ROUTE_CONFIGURATION
      match: {context: SIDECAR_INBOUND, routeConfiguration: {portNumber: 9080}}
      patch: {operation: MERGE, value: {max_direct_response_body_size_bytes: 2048}}
    """)
    patched_routes = by_name(config(mesh, "reviews-1.default").routes)
    other_routes = by_name(config(mesh, "reviews-2.default").routes)
    assert patched_routes["inbound|9080||"]["max_direct_response_body_size_bytes"] == 2048
    assert "max_direct_response_body_size_bytes" not in other_routes["inbound|9080||"]
    # Outbound route configs are SIDECAR_OUTBOUND: untouched.
    assert all("max_direct_response_body_size_bytes" not in rc for name, rc in patched_routes.items() if name != "inbound|9080||")


def test_merge_appends_to_lists_and_merge_and_replace_list_replaces_them(tmp_path):
    mesh = patched(tmp_path, """\
    - applyTo: VIRTUAL_HOST
      match: {context: GATEWAY, routeConfiguration: {vhost: {name: "shop.example.com:80"}}}
      patch: {operation: MERGE, value: {domains: [shop.internal]}}
    - applyTo: VIRTUAL_HOST
      match: {context: GATEWAY, routeConfiguration: {vhost: {name: "bookinfo.example.com:80"}}}
      patch: {operation: MERGE_AND_REPLACE_LIST, value: {domains: [bookinfo.internal]}}
    """, GATEWAY_PATCH)
    vhosts = by_name(config(mesh, "ingress.istio-system").routes[0]["virtual_hosts"])
    assert vhosts["shop.example.com:80"]["domains"][-1] == "shop.internal" and len(vhosts["shop.example.com:80"]["domains"]) > 1
    assert vhosts["bookinfo.example.com:80"]["domains"] == ["bookinfo.internal"]


def test_merge_and_replace_list_still_appends_inside_typed_configs(tmp_path):
    mesh = patched(tmp_path, """\
    - applyTo: LISTENER
      match: {context: GATEWAY}
      patch:
        operation: MERGE_AND_REPLACE_LIST
        value:
          filter_chains:
          - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: replaced
                route_config: {name: local, virtual_hosts: []}
                http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
    """, GATEWAY_PATCH)
    chains = config(mesh, "ingress.istio-system").listeners[0]["filter_chains"]
    assert len(chains) == 1 and chains[0]["filters"][0]["typed_config"]["stat_prefix"] == "replaced"


def test_clusters_are_added_whatever_the_match_and_removed_by_name(tmp_path):
    mesh = patched(tmp_path, """\
    - applyTo: CLUSTER
      match: {context: SIDECAR_OUTBOUND, cluster: {service: nothing.example.com}}
      patch:
        operation: ADD
        value: {name: extra, type: STATIC, connect_timeout: 1s}
    - applyTo: CLUSTER
      patch:
        operation: ADD
        value: {name: unwanted, type: STATIC, connect_timeout: 1s}
    - applyTo: CLUSTER
      match: {cluster: {name: unwanted}}
      patch: {operation: REMOVE}
    """)
    names = [c["name"] for c in config(mesh, "reviews-1.default").clusters]
    assert "extra" in names and "unwanted" not in names
    assert "extra" not in [c["name"] for c in config(mesh, "reviews-2.default").clusters]


def test_network_filters_are_inserted_replaced_and_removed_by_name(tmp_path):
    local_limit = {"@type": "type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit",
                   "stat_prefix": "tcp_limit", "token_bucket": {"max_tokens": 5, "fill_interval": "1s"}}
    mesh = patched(tmp_path, f"""\
    - applyTo: NETWORK_FILTER
      match:
        context: SIDECAR_INBOUND
        listener: {{portNumber: 9080, filterChain: {{filter: {{name: envoy.filters.network.http_connection_manager}}}}}}
      patch:
        operation: INSERT_BEFORE
        value: {{name: envoy.filters.network.local_ratelimit, typed_config: {local_limit}}}
    - applyTo: NETWORK_FILTER
      match: {{context: SIDECAR_INBOUND, listener: {{portNumber: 9080}}}}
      patch:
        operation: ADD
        value: {{name: envoy.filters.network.connection_limit, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit, stat_prefix: conn, max_connections: 100}}}}
    - applyTo: NETWORK_FILTER
      match: {{context: SIDECAR_INBOUND, listener: {{filterChain: {{filter: {{name: envoy.filters.network.connection_limit}}}}}}}}
      patch:
        operation: REPLACE
        value: {{name: envoy.filters.network.connection_limit, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit, stat_prefix: conn, max_connections: 7}}}}
    """)
    filters = inbound_listener(config(mesh, "reviews-1.default"))["filter_chains"][0]["filters"]
    assert [f["name"] for f in filters] == [
        "envoy.filters.network.local_ratelimit", "envoy.filters.network.connection_limit", "envoy.filters.network.http_connection_manager"]
    assert filters[1]["typed_config"]["max_connections"] == 7



def test_a_network_filter_is_removed_in_the_context_matched(tmp_path):
    mesh = patched(tmp_path, """\
    - applyTo: NETWORK_FILTER
      match: {context: SIDECAR_OUTBOUND, listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager}}}}
      patch: {operation: REMOVE}
    """)
    cfg = config(mesh, "reviews-1.default")
    inbound = inbound_listener(cfg)
    assert [f["name"] for f in inbound["filter_chains"][0]["filters"]] == ["envoy.filters.network.http_connection_manager"]
    outbound = [listener for listener in cfg.listeners if listener is not inbound]
    assert outbound and all(f["name"] != "envoy.filters.network.http_connection_manager" for listener in outbound
                            for chain in listener["filter_chains"] for f in chain["filters"])


def test_listener_filters_are_inserted_and_removed_by_name(tmp_path):
    mesh = patched(tmp_path, """\
    - applyTo: LISTENER_FILTER
      match: {context: SIDECAR_INBOUND, listener: {portNumber: 9080}}
      patch:
        operation: INSERT_FIRST
        value: {name: envoy.filters.listener.http_inspector, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector}}
    - applyTo: LISTENER_FILTER
      match: {context: SIDECAR_INBOUND, listener: {portNumber: 9080}}
      patch:
        operation: INSERT_AFTER
        value: {name: envoy.filters.listener.tls_inspector, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}}
    - applyTo: LISTENER_FILTER
      match: {context: SIDECAR_INBOUND, listener: {portNumber: 9080, listenerFilter: envoy.filters.listener.http_inspector}}
      patch: {operation: REMOVE}
    """)
    listener = inbound_listener(config(mesh, "reviews-1.default"))
    assert [f["name"] for f in listener["listener_filters"]] == ["envoy.filters.listener.tls_inspector"]


def test_filter_chains_are_matched_by_transport_protocol_and_destination_port(tmp_path):
    mesh = patched(tmp_path, """\
    - applyTo: FILTER_CHAIN
      match: {context: SIDECAR_INBOUND, listener: {portNumber: 9080, filterChain: {transportProtocol: tls}}}
      patch: {operation: MERGE, value: {transport_socket_connect_timeout: 3s}}
    - applyTo: FILTER_CHAIN
      match: {context: SIDECAR_INBOUND, listener: {portNumber: 9080}}
      patch:
        operation: ADD
        value:
          name: extra
          filter_chain_match: {destination_port: 9999, transport_protocol: tls}
          filters: [{name: envoy.filters.network.tcp_proxy, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: extra, cluster: "inbound|9080||"}}]
    - applyTo: FILTER_CHAIN
      match: {context: SIDECAR_INBOUND, listener: {filterChain: {destinationPort: 9999, sni: none.example.com}}}
      patch: {operation: REMOVE}
    - applyTo: FILTER_CHAIN
      match: {context: SIDECAR_INBOUND, listener: {filterChain: {destinationPort: 9999, transportProtocol: tls}}}
      patch: {operation: MERGE, value: {transport_socket_connect_timeout: 9s}}
    """)
    chains = inbound_listener(config(mesh, "reviews-1.default"))["filter_chains"]
    assert [chain.get("name") for chain in chains][-1] == "extra", "an sni no chain has removes nothing"
    assert chains[-1]["transport_socket_connect_timeout"] == "9s"
    # This mesh has no mTLS: the inbound chain has no transport protocol, so the tls match takes none.
    assert all("transport_socket_connect_timeout" not in chain for chain in chains[:-1])


def test_proxy_version_is_matched_against_the_meshs_envoy_version(tmp_path):
    mesh = patched(tmp_path, r"""
    - applyTo: CLUSTER
      match: {proxy: {proxyVersion: '^1\.40\.'}, cluster: {service: ratelimit.default.svc.cluster.local}}
      patch: {operation: MERGE, value: {connect_timeout: 3s}}
    - applyTo: CLUSTER
      match: {proxy: {proxyVersion: '^1\.2[0-9].*'}, cluster: {service: ratelimit.default.svc.cluster.local}}
      patch: {operation: MERGE, value: {per_connection_buffer_limit_bytes: 1024}}
    """)
    cluster = by_name(config(mesh, "reviews-1.default").clusters)["outbound|8081||ratelimit.default.svc.cluster.local"]
    assert cluster["connect_timeout"] == "3s"
    assert "per_connection_buffer_limit_bytes" not in cluster


def test_a_proxy_version_no_proxy_has_is_warned_about(tmp_path):
    for index, text in enumerate((MESH, PATCHED + textwrap.indent(textwrap.dedent(r"""
    - applyTo: CLUSTER
      match: {proxy: {proxyVersion: '^1\.2[0-9].*'}}
      patch: {operation: MERGE, value: {connect_timeout: 3s}}
    """), "  "))):
        (tmp_path / f"{index}.yaml").write_text(text)
    mesh, problems = validate_mesh(load_paths([str(tmp_path)]))
    assert problems == [] and [w.is_warning for w in mesh.warnings] == [True]
    assert "spec.configPatches[0].match.proxy.proxyVersion: warning: '^1\\.2[0-9].*' does not match 1.40.0, the Envoy version" in str(mesh.warnings[0])


CAPTURED = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: stock, namespace: shop}
spec:
  hosts: [stock.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}, {number: 6379, name: tcp-cache, protocol: TCP}]
  workloadSelector: {labels: {app: stock}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: stock-1
  namespace: shop
  annotations: {sidecar.istio.io/interceptionMode: REDIRECT}
spec: {address: 10.0.4.1, labels: {app: stock}}
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: patch, namespace: shop}
spec:
  workloadSelector: {labels: {app: stock}}
  configPatches:
  - applyTo: FILTER_CHAIN
    match: {context: SIDECAR_INBOUND, listener: {portNumber: 6379}}
    patch: {operation: MERGE, value: {transport_socket_connect_timeout: 7s}}
"""


def test_a_port_number_selects_the_chains_of_virtual_inbound_by_destination_port(tmp_path):
    """With iptables capture every inbound port is a chain of virtualInbound (15006): the
    port number picks the chains for that destination port, as in Istio."""
    mesh = compile_mesh(tmp_path, CAPTURED)
    listener = by_name(config(mesh, "stock-1.shop").listeners)["virtualInbound"]
    patched_ports = {chain["filter_chain_match"].get("destination_port") for chain in listener["filter_chains"]
                     if "transport_socket_connect_timeout" in chain}
    assert patched_ports == {6379}
    assert any(chain.get("filter_chain_match", {}).get("destination_port") == 80 for chain in listener["filter_chains"])


def test_routes_are_inserted_beside_the_matched_route_and_removed(tmp_path):
    health = '{name: health, match: {path: /healthz}, direct_response: {status: 200}}'
    mesh = patched(tmp_path, f"""\
    - applyTo: HTTP_ROUTE
      match: {{context: GATEWAY, routeConfiguration: {{vhost: {{name: "shop.example.com:80"}}}}}}
      patch: {{operation: INSERT_FIRST, value: {health}}}
    - applyTo: HTTP_ROUTE
      match: {{context: GATEWAY, routeConfiguration: {{vhost: {{name: "shop.example.com:80", route: {{name: health}}}}}}}}
      patch: {{operation: INSERT_AFTER, value: {{name: ready, match: {{path: /ready}}, direct_response: {{status: 204}}}}}}
    - applyTo: HTTP_ROUTE
      match: {{context: GATEWAY, routeConfiguration: {{vhost: {{name: "bookinfo.example.com:80", route: {{action: ROUTE}}}}}}}}
      patch: {{operation: REMOVE}}
    - applyTo: HTTP_ROUTE
      match: {{context: GATEWAY, routeConfiguration: {{vhost: {{name: "bookinfo.example.com:80"}}}}}}
      patch: {{operation: ADD, value: {{name: gone, match: {{prefix: /}}, direct_response: {{status: 410}}}}}}
    """, GATEWAY_PATCH)
    vhosts = by_name(config(mesh, "ingress.istio-system").routes[0]["virtual_hosts"])
    shop = vhosts["shop.example.com:80"]["routes"]
    assert [r.get("name") for r in shop[:2]] == ["health", "ready"] and "route" in shop[2]
    assert vhosts["bookinfo.example.com:80"]["routes"] == [{"name": "gone", "match": {"prefix": "/"}, "direct_response": {"status": 410}}]


REMOVE_REVIEWS_CLUSTER = """\
- applyTo: CLUSTER
  match: {cluster: {name: "outbound|9080||reviews.default.svc.cluster.local"}}
  patch: {operation: REMOVE}
"""


@pytest.mark.parametrize("header, proxy, virtual_hosts", [
    (GATEWAY_PATCH, "ingress.istio-system", ["bookinfo.example.com:80", "shop.example.com:80"]),
    (PATCHED, "reviews-1.default", ["reviews.default.svc.cluster.local:9080"]),  # its Sidecar imports reviews
])
def test_a_cluster_an_envoy_filter_removes_is_blamed_on_the_envoy_filter(tmp_path, header, proxy, virtual_hosts):
    """Routes that send traffic to a cluster an EnvoyFilter removed: the problem points at the
    EnvoyFilter, not at the proxy or its Sidecar's egress hosts (which do import the service)."""
    (tmp_path / "0.yaml").write_text(MESH)
    (tmp_path / "1.yaml").write_text(header + textwrap.indent(REMOVE_REVIEWS_CLUSTER, "  "))
    _, problems = validate_mesh(load_paths([str(tmp_path)]))
    namespace = header.split("namespace: ")[1].split("}")[0]
    assert [str(p) for p in problems if not p.is_warning] == [
        f"{tmp_path / '1.yaml'}:1: EnvoyFilter/{namespace}/patch: proxy {proxy}: the routes of {virtual_host} send traffic to "
        f"outbound|9080||reviews.default.svc.cluster.local, which the EnvoyFilters patching this proxy (EnvoyFilter/{namespace}/patch) "
        "remove or rename: keep the cluster, or patch the routes too"
        for virtual_host in virtual_hosts
    ]
