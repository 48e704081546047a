"""The Envoy bootstrap of a proxy: identity, admin, the health and stats listeners, and where
its dynamic resources come from (files in its config directory)."""

from __future__ import annotations

from meshwright.compile.clusters import static_cluster
from meshwright.compile.envoyfilter import merge_bootstrap_patches
from meshwright.compile.envoy_values import HCM_FILTER, HTTP_CONNECTION_MANAGER, ROUTER, ROUTER_FILTER, socket_address, typed
from meshwright.compile.proxy import ADMIN_PORT, HEALTH_PORT, STATS_PORT, Proxy, node_metadata
from meshwright.compile.telemetry import ProxyTelemetry, collector_clusters, stats_config
from meshwright.mesh import MeshSettings

ADMIN_CLUSTER = "admin"
DOWNSTREAM_CONNECTIONS = "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"


def _admin_route_listener(name: str, port: int, routes: list[dict]) -> dict:
    """A small HTTP listener that answers from the admin interface (Istio's 15021/15090)."""
    manager = {
        "stat_prefix": name,
        "route_config": {"name": name, "virtual_hosts": [{"name": name, "domains": ["*"], "routes": routes}]},
        "http_filters": [{"name": ROUTER_FILTER, "typed_config": typed(ROUTER)}],
    }
    return {
        "name": name,
        "address": socket_address("0.0.0.0", port),
        "filter_chains": [{"filters": [{"name": HCM_FILTER, "typed_config": typed(HTTP_CONNECTION_MANAGER, **manager)}]}],
    }


def compile_bootstrap(proxy: Proxy, settings: MeshSettings, telemetry: ProxyTelemetry, config_source: dict,
                      patches: tuple[dict, ...] = (), stat_tags: tuple[tuple[str, str], ...] = ()) -> dict:
    """config_source: the ConfigSource of listeners and clusters (set by the delivery).
    telemetry: the proxy's (compile/telemetry.py): with metrics, the stats listener and the
    tags that label its stats; with tracing to a collector outside the mesh, its cluster.
    patches: EnvoyFilter BOOTSTRAP values, merged in last (validation keeps them off the
    node, admin and dynamic_resources that delivery depends on). stat_tags: the proxy's own
    metric labels (telemetry.own_stat_tags), fixed tags on all its stats."""
    health = _admin_route_listener("health", proxy.port(HEALTH_PORT), [
        {"match": {"path": "/healthz/ready"}, "route": {"cluster": ADMIN_CLUSTER, "prefix_rewrite": "/ready"}},
    ])
    stats = _admin_route_listener("stats", proxy.port(STATS_PORT), [
        {"match": {"path": "/stats/prometheus"}, "route": {"cluster": ADMIN_CLUSTER}},
        {"match": {"path": "/metrics"}, "route": {"cluster": ADMIN_CLUSTER, "prefix_rewrite": "/stats/prometheus"}},
    ])
    clusters = [static_cluster(ADMIN_CLUSTER, "127.0.0.1", proxy.port(ADMIN_PORT)), *collector_clusters(telemetry)]
    role = "router" if proxy.kind == "gateway" else "sidecar"
    bootstrap = {
        "node": {
            "id": f"{role}~{proxy.address}~{proxy.name}.{proxy.namespace}~{proxy.namespace}.svc.cluster.local",
            "cluster": f"{proxy.name}.{proxy.namespace}",
            "metadata": node_metadata(proxy, settings.trust_domain),
            **({"locality": dict(zip(("region", "zone", "sub_zone"), proxy.locality.split("/")))} if proxy.locality else {}),
        },
        "admin": {"address": socket_address("127.0.0.1", proxy.port(ADMIN_PORT))},
        "static_resources": {"listeners": [health, stats] if telemetry.metrics else [health], "clusters": clusters},
        "dynamic_resources": {"lds_config": config_source["lds"], "cds_config": config_source["cds"]},
        # Istio's choice: no cap on downstream connections (and no warning about it).
        "overload_manager": {"resource_monitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": typed(DOWNSTREAM_CONNECTIONS, max_active_downstream_connections=2147483647),
        }]},
    }
    if telemetry.metrics:
        bootstrap["stats_config"] = stats_config(telemetry, stat_tags)
    return merge_bootstrap_patches(bootstrap, patches)
