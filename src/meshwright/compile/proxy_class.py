"""Proxy classes: proxies whose compiled config is the same but for their own names.

Two proxies of one class see the same services under the same policies, so their listeners,
routes, clusters and endpoints are equal; each proxy's own metric labels are fixed tags of its
bootstrap (compile/telemetry.py own_stat_tags). build.compile_proxy compiles a class once and
hands each of its proxies that shared config (with its own stat names on top only where
tagOverrides rewrite its own labels: telemetry.stat_names_per_proxy).

The key holds everything the compiler reads of a proxy besides its name, address and the
labels no selector looks at: kind, namespace, capture, port offset, locality (endpoint
priorities), the Gateways it serves, the ports its workload serves under capture, and its
labels restricted to the keys that selectors of proxies name (PROXY_SELECTORS). Two proxies
that agree on every such key are selected by exactly the same selectors.
"""

from __future__ import annotations

from meshwright.compile.clusters import failover_priorities
from meshwright.compile.envoyfilter import envoy_filters_for
from meshwright.compile.proxy import Proxy
from meshwright.compile.scope import workload_service_ports
from meshwright.compile.telemetry import effective_telemetry
from meshwright.mesh import Mesh
from meshwright.model.providers import OPENTELEMETRY

# Where each kind selects proxies by label: paths into its spec ("*" walks a list).
PROXY_SELECTORS = {
    "Sidecar": (("workloadSelector", "labels"),),
    "EnvoyFilter": (("workloadSelector", "labels"),),
    "Gateway": (("selector",),),
    "AuthorizationPolicy": (("selector", "matchLabels"),),
    "RequestAuthentication": (("selector", "matchLabels"),),
    "PeerAuthentication": (("selector", "matchLabels"),),
    "Telemetry": (("selector", "matchLabels"),),
    # A rule's workloadSelector picks the clients it applies to (Mesh.destination_rule_for).
    "DestinationRule": (("workloadSelector", "matchLabels"),),
    "VirtualService": tuple((kind, "*", "match", "*", "sourceLabels") for kind in ("http", "tcp", "tls")),
}
# Kinds whose selectors pick endpoints or nothing: they never tell two proxies apart.
NO_PROXY_SELECTORS = ("ServiceEntry", "WorkloadEntry", "WorkloadGroup", "MeshConfig")


def _values_at(value, path: tuple[str, ...]) -> list:
    if not path:
        return [value]
    if path[0] == "*":
        return [found for item in value for found in _values_at(item, path[1:])] if isinstance(value, list) else []
    if not isinstance(value, dict) or path[0] not in value:
        return []
    return _values_at(value[path[0]], path[1:])


def selected_label_keys(mesh: Mesh) -> frozenset[str]:
    """The label keys any selector of proxies in the mesh names."""

    def compute():
        keys: set[str] = set()
        for kind, paths in PROXY_SELECTORS.items():
            for resource in mesh.of_kind(kind):
                for path in paths:
                    for selector in _values_at(resource.spec, path):
                        keys.update(selector or {})
        return frozenset(keys) | _failover_priority_keys(mesh)

    return mesh.memo(("selected-label-keys",), compute)


def _failover_priority_keys(mesh: Mesh) -> frozenset[str]:
    """The label keys DestinationRules' failoverPriority compares clients on: endpoint
    priorities differ with the client's values of them."""
    return mesh.memo(("failover-priority-keys",), lambda: frozenset(
        entry.partition("=")[0] for rule in mesh.of_kind("DestinationRule") for entry in failover_priorities(rule)
    ))


def class_key(mesh: Mesh, proxy: Proxy) -> tuple | None:
    """The proxy's class; None when its config is its own: EnvoyFilters patch it (they may
    read and change anything, stat names included), or OpenTelemetry spans name it."""
    if envoy_filters_for(mesh, proxy):
        return None
    if any(t.provider.type == OPENTELEMETRY for t in effective_telemetry(mesh, proxy).tracings):
        return None
    keys = selected_label_keys(mesh)
    labels = tuple((key, value) for key, value in proxy.labels if key in keys)
    ports = tuple(workload_service_ports(mesh, proxy.id)) if proxy.captures else ()
    key = (proxy.kind, proxy.namespace, proxy.interception, proxy.port_offset, proxy.locality, proxy.gateways, labels, ports)
    # Istio's failoverPriority orders nothing for a client without labels.
    return key + (bool(proxy.labels),) if _failover_priority_keys(mesh) else key


def proxy_classes(mesh: Mesh, proxies: list[Proxy]) -> list[list[Proxy]]:
    """The proxies grouped by class, each group in the given order and the groups in the
    order of their first proxy; a proxy without a class is a group of its own."""
    groups: dict[tuple, list[Proxy]] = {}
    for proxy in proxies:
        key = class_key(mesh, proxy)
        groups.setdefault(("class", key) if key is not None else ("own", proxy.id), []).append(proxy)
    return list(groups.values())
