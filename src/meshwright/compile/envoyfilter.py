"""EnvoyFilter config patches, in the forms Istio's docs use: HTTP_FILTER insert/add/remove
(local rate limiting), HTTP_ROUTE merge (typed_per_filter_config), CLUSTER and LISTENER merge.

Patches apply in order of priority, root namespace first, name, and then list order, so the
result is deterministic. Any other form is rejected by validation before it gets here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from meshwright.compile.envoy_values import HCM_FILTER, ROUTER_FILTER
from meshwright.compile.proxy import Proxy
from meshwright.mesh import ROOT_NAMESPACE, Mesh, labels_match

# EnvoyFilters in the root namespace without a workloadSelector apply to every proxy; with
# one, to the workloads it selects in any namespace (Istio's root namespace rules).
TYPED_STRUCTS = ("type.googleapis.com/udpa.type.v1.TypedStruct", "type.googleapis.com/xds.type.v3.TypedStruct")


@dataclass
class Patchable:
    """Generated resources tagged with their patch context (SIDECAR_INBOUND, ...)."""

    items: list[tuple[str, str, dict]] = field(default_factory=list)  # (context, type, resource)

    def add(self, context: str, listeners: list, routes: list, clusters: list) -> None:
        for kind, resources in (("listener", listeners), ("route", routes), ("cluster", clusters)):
            self.items.extend((context, kind, r) for r in resources)

    def of(self, kind: str, context: str = "ANY"):
        return [r for c, k, r in self.items if k == kind and context in ("ANY", c)]

    def listeners(self):
        return self.of("listener")

    def routes(self):
        return self.of("route")

    def clusters(self):
        return self.of("cluster")


def unwrap_typed_structs(value):
    """Istio's docs wrap configs in TypedStruct; Envoy and the proto check want the real type."""
    if isinstance(value, list):
        return [unwrap_typed_structs(v) for v in value]
    if not isinstance(value, dict):
        return value
    if value.get("@type") in TYPED_STRUCTS and "type_url" in value:
        return {"@type": value["type_url"], **unwrap_typed_structs(value.get("value") or {})}
    return {key: unwrap_typed_structs(v) for key, v in value.items()}


def merge(target: dict, patch: dict) -> None:
    """Protobuf merge semantics on JSON: messages merge, lists append, scalars replace.
    A patch value with a different @type replaces the message whole."""
    for key, value in patch.items():
        current = target.get(key)
        if isinstance(current, dict) and isinstance(value, dict) and current.get("@type") == value.get("@type"):
            merge(current, value)
        elif isinstance(current, list) and isinstance(value, list):
            current.extend(copy.deepcopy(value))
        else:
            target[key] = copy.deepcopy(value)


def _listener_port(listener: dict) -> int:
    return listener["address"]["socket_address"]["port_value"]


def _listener_matches(listener: dict, match: dict) -> bool:
    if "portNumber" in match and _listener_port(listener) != match["portNumber"]:
        return False
    return match.get("name", listener["name"]) == listener["name"]


def _managers(listener: dict, filter_match: dict):
    """The HTTP connection managers of a listener that a filterChain.filter match selects."""
    wanted = filter_match.get("name", HCM_FILTER)
    for chain in listener["filter_chains"]:
        for network_filter in chain["filters"]:
            if network_filter["name"] == HCM_FILTER and wanted == HCM_FILTER:
                yield network_filter["typed_config"]


def _patch_http_filters(filters: list, operation: str, value: dict, sub_filter: str | None) -> None:
    names = [f["name"] for f in filters]
    if operation == "REMOVE":
        filters[:] = [f for f in filters if f["name"] != sub_filter]
        return
    if operation == "INSERT_FIRST":
        filters.insert(0, value)
    elif operation == "ADD":
        # Appending after the router would never run: Istio keeps the router last.
        filters.insert(names.index(ROUTER_FILTER) if ROUTER_FILTER in names else len(filters), value)
    elif operation == "INSERT_BEFORE":
        # Istio: without a subFilter to insert before, the filter goes first.
        if sub_filter is None:
            filters.insert(0, value)
        elif sub_filter in names:
            filters.insert(names.index(sub_filter), value)
    elif operation == "INSERT_AFTER":
        if sub_filter in names:
            filters.insert(names.index(sub_filter) + 1, value)
    elif operation == "MERGE":
        for existing in filters:
            if existing["name"] == sub_filter:
                merge(existing, value)


def _route_config_port(route_config: dict) -> int | None:
    """Istio names route configs by port: "9080", "http.8080", "inbound|9080||"."""
    name = route_config["name"]
    for part in name.replace("|", ".").split("."):
        if part.isdigit():
            return int(part)
    return None


def _apply_patch(patch: dict, resources: Patchable) -> None:
    apply_to = patch["applyTo"]
    match = patch.get("match") or {}
    context = match.get("context", "ANY")
    operation = patch["patch"]["operation"]
    value = unwrap_typed_structs(patch["patch"].get("value") or {})
    if apply_to == "HTTP_FILTER":
        listener_match = match.get("listener") or {}
        filter_match = (listener_match.get("filterChain") or {}).get("filter") or {}
        sub_filter = (filter_match.get("subFilter") or {}).get("name")
        for listener in resources.of("listener", context):
            if _listener_matches(listener, listener_match):
                for manager in _managers(listener, filter_match):
                    _patch_http_filters(manager["http_filters"], operation, copy.deepcopy(value), sub_filter)
    elif apply_to == "HTTP_ROUTE":
        route_match = match.get("routeConfiguration") or {}
        vhost_match = route_match.get("vhost") or {}
        wanted_route = vhost_match.get("route") or {}
        for route_config in resources.of("route", context):
            if "portNumber" in route_match and _route_config_port(route_config) != route_match["portNumber"]:
                continue
            if route_match.get("name", route_config["name"]) != route_config["name"]:
                continue
            for vhost in route_config["virtual_hosts"]:
                if vhost_match.get("name", vhost["name"]) != vhost["name"]:
                    continue
                for route in vhost["routes"]:
                    action = wanted_route.get("action", "ANY")
                    if action != "ANY" and action.lower() not in route:
                        continue
                    if wanted_route.get("name", route.get("name")) == route.get("name"):
                        merge(route, value)
    elif apply_to == "CLUSTER":
        cluster_match = match.get("cluster") or {}
        for cluster in resources.of("cluster", context):
            parts = cluster["name"].split("|")
            if cluster_match.get("name", cluster["name"]) != cluster["name"]:
                continue
            if "portNumber" in cluster_match and (len(parts) < 2 or parts[1] != str(cluster_match["portNumber"])):
                continue
            if "service" in cluster_match and (len(parts) < 4 or parts[3] != cluster_match["service"]):
                continue
            if "subset" in cluster_match and (len(parts) < 3 or parts[2] != cluster_match["subset"]):
                continue
            merge(cluster, value)
    elif apply_to == "LISTENER":
        for listener in resources.of("listener", context):
            if _listener_matches(listener, match.get("listener") or {}):
                merge(listener, value)


def envoy_filters_for(mesh: Mesh, proxy: Proxy) -> list:
    selected = []
    for envoy_filter in mesh.of_kind("EnvoyFilter"):
        selector = (envoy_filter.spec.get("workloadSelector") or {}).get("labels")
        if envoy_filter.namespace not in (proxy.namespace, ROOT_NAMESPACE):
            continue
        if selector is None or labels_match(selector, proxy.label_map):
            selected.append(envoy_filter)
    # Istio's order: priority, then (creation time, which YAML does not have) the root
    # namespace's filters before the workload namespace's, then name.
    return sorted(selected, key=lambda f: (f.spec.get("priority", 0), f.namespace != ROOT_NAMESPACE, f.name, f.namespace))


def apply_envoy_filters(mesh: Mesh, proxy: Proxy, resources: Patchable) -> None:
    for envoy_filter in envoy_filters_for(mesh, proxy):
        for patch in envoy_filter.spec["configPatches"]:
            _apply_patch(patch, resources)
