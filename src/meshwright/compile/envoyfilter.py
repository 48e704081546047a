"""EnvoyFilter config patches, as Istio applies them: LISTENER, FILTER_CHAIN, NETWORK_FILTER,
LISTENER_FILTER and HTTP_FILTER on listeners; ROUTE_CONFIGURATION, VIRTUAL_HOST and HTTP_ROUTE
on route configs; CLUSTER (ADD, REMOVE, MERGE); BOOTSTRAP (MERGE, into the bootstrap the
delivery writes: compile/bootstrap.py); EXTENSION_CONFIG (ADD), given to the filters that ask
for it by extension config discovery as their typed_config, the static equivalent of Istio's
ECDS (meshwright's config reloads from files: a changed extension config reloads the
listeners that use it). Matches and operations read the way Istio's envoyfilter package reads
them; validation (validate/semantics.py) refuses the rest.

Patches apply in order of priority, root namespace first, name, and then list order, so the
result is deterministic. They change the resources given in place: compile/build.py hands
each patched proxy its own deep copy, never the objects a proxy class shares.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import re2

from meshwright.compile.authorization import HTTP_RBAC_FILTER
from meshwright.compile.capture import VIRTUAL_INBOUND, VIRTUAL_OUTBOUND
from meshwright.compile.envoy_values import HCM_FILTER, ROUTER_FILTER
from meshwright.compile.gateway import GATEWAY
from meshwright.compile.proxy import Proxy, node_metadata
from meshwright.compile.request_authentication import JWT_FILTER
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


def merge(target: dict, patch: dict, replace_lists: bool = False) -> None:
    """Protobuf merge semantics on JSON: messages merge, lists append, scalars replace.
    A patch value with a different @type replaces the message whole. replace_lists
    (MERGE_AND_REPLACE_LIST): a list in the patch replaces the one there, except inside typed
    (Any) configs, which merge as MERGE does (Istio's rule)."""
    for key, value in patch.items():
        current = target.get(key)
        if isinstance(current, dict) and isinstance(value, dict) and current.get("@type") == value.get("@type"):
            merge(current, value, replace_lists and "@type" not in value)
        elif isinstance(current, list) and isinstance(value, list) and not replace_lists:
            current.extend(copy.deepcopy(value))
        else:
            target[key] = copy.deepcopy(value)


def _set(match: dict, key: str):
    """A match field's value, None when unset: Istio's API is proto3, where "" and 0 mean
    unset (the rate limit task's `vhost.name: ""` matches every virtual host)."""
    value = match.get(key)
    return None if value in ("", 0) else value


def _listener_port(listener: dict) -> int:
    return listener["address"]["socket_address"]["port_value"]


def _is_virtual(listener: dict) -> bool:
    return listener["name"] in (VIRTUAL_INBOUND, VIRTUAL_OUTBOUND)


def _listener_matches(listener: dict, match: dict) -> bool:
    """Istio's listenerMatch: on the virtual listeners a port number selects filter chains
    by destination port (_chain_matches), not the listener, unless a listener filter is asked."""
    if _set(match, "name") not in (None, listener["name"]):
        return False
    port = _set(match, "portNumber")
    if port is None or (_is_virtual(listener) and not match.get("listenerFilter")):
        return True
    return _listener_port(listener) == port


def _chain_matches(listener: dict, chain: dict, match: dict) -> bool:
    """Istio's filterChainMatch: name, sni (one of the chain's server names), transport
    protocol, application protocols (each of a comma-separated list), destination port."""
    chain_match = match.get("filterChain") or {}
    fcm = chain.get("filter_chain_match") or {}
    if _set(chain_match, "name") not in (None, chain.get("name")):
        return False
    if _set(chain_match, "sni") and chain_match["sni"] not in fcm.get("server_names", []):
        return False
    if _set(chain_match, "transportProtocol") not in (None, fcm.get("transport_protocol")):
        return False
    protocols = _set(chain_match, "applicationProtocols")
    if protocols and not all(p.strip() in fcm.get("application_protocols", []) for p in protocols.split(",")):
        return False
    if _set(chain_match, "destinationPort") not in (None, fcm.get("destination_port")):
        return False
    port = _set(match, "portNumber")
    return not (_is_virtual(listener) and port is not None and fcm.get("destination_port") != port)


def _chains(resources: Patchable, context: str, listener_match: dict):
    for listener in resources.of("listener", context):
        if _listener_matches(listener, listener_match):
            for chain in listener["filter_chains"]:
                if _chain_matches(listener, chain, listener_match):
                    yield listener, chain


def _filter_name_matches(network_filter: dict, filter_match: dict) -> bool:
    return _set(filter_match, "name") in (None, network_filter["name"])


def _managers(resources: Patchable, context: str, listener_match: dict):
    """The HTTP connection managers a listener match selects (filterChain.filter.name, when
    set, must name the manager)."""
    filter_match = (listener_match.get("filterChain") or {}).get("filter") or {}
    for dummy, chain in _chains(resources, context, listener_match):
        for network_filter in chain["filters"]:
            if network_filter["name"] == HCM_FILTER and _filter_name_matches(network_filter, filter_match):
                yield network_filter["typed_config"]


def _patch_named_list(items: list, operation: str, value: dict, anchor: str | None, last: str | None = None) -> None:
    """Istio's operations on a list of named filters (HTTP, network, listener filters);
    anchor: the name the match gives (subFilter, filter or listener filter); last: a filter
    that must stay last (the router, a terminal network filter), so ADD goes before it."""
    names = [item["name"] for item in items]
    if operation == "REMOVE":
        items[:] = [item for item in items if item["name"] != anchor]
    elif operation == "INSERT_FIRST":
        items.insert(0, value)
    elif operation == "ADD":
        # Appending after the router would never run: Istio keeps the router last.
        items.insert(names.index(last) if last in names else len(items), value)
    elif operation == "INSERT_BEFORE":
        # Istio: without a filter to insert before, the filter goes first.
        if anchor is None:
            items.insert(0, value)
        elif anchor in names:
            items.insert(names.index(anchor), value)
    elif operation == "INSERT_AFTER":
        # Istio: without a filter to insert after, the filter goes last.
        if anchor is None:
            items.append(value)
        elif anchor in names:
            items.insert(names.index(anchor) + 1, value)
    elif operation == "REPLACE":
        items[:] = [copy.deepcopy(value) if item["name"] == anchor else item for item in items]
    elif operation == "MERGE":
        for existing in items:
            if existing["name"] == anchor:
                merge(existing, value)


def _route_config_port(route_config: dict) -> int | None:
    """Istio names route configs by port: "9080", "http.8080", "inbound|9080||"."""
    name = route_config["name"]
    for part in name.replace("|", ".").split("."):
        if part.isdigit():
            return int(part)
    return None


def _gateway_route_parts(name: str) -> tuple[str, str]:
    """(port name, gateway) of a gateway route config: https.PORT.PORTNAME.GATEWAY.NAMESPACE
    (Istio's ParseGatewayRDSRouteName; http.PORT has neither)."""
    parts = name.split(".")
    if parts[0] == "https" and len(parts) >= 5:
        return parts[2], f"{parts[-1]}/{'.'.join(parts[3:-1])}"
    return "", ""


def _route_config_matches(route_config: dict, context: str, match: dict) -> bool:
    if _set(match, "portNumber") not in (None, _route_config_port(route_config)):
        return False
    if _set(match, "name") not in (None, route_config["name"]):
        return False
    if _set(match, "portName") is None and _set(match, "gateway") is None:
        return True
    port_name, gateway = _gateway_route_parts(route_config["name"])
    return context in ("ANY", GATEWAY) and _set(match, "portName") in (None, port_name) and _set(match, "gateway") in (None, gateway)


def _vhost_matches(vhost: dict, match: dict) -> bool:
    if _set(match, "name") not in (None, vhost["name"]):
        return False
    return _set(match, "domainName") in (None, *vhost.get("domains", []))


def _route_configs(resources: Patchable, context: str, match: dict):
    return [rc for rc in resources.of("route", context) if _route_config_matches(rc, context, match)]


def _vhosts(resources: Patchable, context: str, match: dict):
    vhost_match = match.get("vhost") or {}
    for route_config in _route_configs(resources, context, match):
        for vhost in route_config["virtual_hosts"]:
            if _vhost_matches(vhost, vhost_match):
                yield route_config, vhost


def _route_matches(route: dict, match: dict) -> bool:
    action = match.get("action", "ANY")
    if action != "ANY" and action.lower() not in route:
        return False
    return _set(match, "name") in (None, route.get("name"))


def _cluster_matches(cluster: dict, match: dict) -> bool:
    """outbound|PORT|SUBSET|HOST, as Istio's clusterMatch reads it."""
    parts = cluster["name"].split("|")
    wanted = {"portNumber": 1, "subset": 2, "service": 3}
    if _set(match, "name") not in (None, cluster["name"]):
        return False
    for field_name, index in wanted.items():
        value = _set(match, field_name)
        if value is not None and (len(parts) <= index or parts[index] != str(value)):
            return False
    return True


@dataclass(frozen=True)
class Patch:
    """One config patch, its value unwrapped and its match read."""

    apply_to: str
    context: str
    operation: str
    value: dict
    match: dict
    filter_class: str | None = None  # AUTHN, AUTHZ, STATS: where an inserted HTTP filter goes

    @classmethod
    def of(cls, patch: dict) -> "Patch":
        match = patch.get("match") or {}
        filter_class = patch["patch"].get("filterClass")
        return cls(patch["applyTo"], match.get("context", "ANY"), patch["patch"]["operation"],
                   unwrap_typed_structs(patch["patch"].get("value") or {}), match,
                   None if filter_class in (None, "UNSPECIFIED") else filter_class)

    @property
    def listener(self) -> dict:
        return self.match.get("listener") or {}

    @property
    def route_configuration(self) -> dict:
        return self.match.get("routeConfiguration") or {}

    def fresh_value(self) -> dict:
        """A copy of the value for one place: patched objects never share parts."""
        return copy.deepcopy(self.value)

    def merge_into(self, target: dict) -> None:
        merge(target, self.value, replace_lists=self.operation == "MERGE_AND_REPLACE_LIST")


def _patch_whole(patch: Patch, resources: Patchable, kind: str, matches) -> None:
    """ADD, REMOVE, MERGE of whole listeners or clusters."""
    if patch.operation == "ADD":
        # Istio adds whatever the object match says: only context and proxy select it.
        resources.items.append((patch.context, kind, patch.fresh_value()))
        return
    chosen = [item for item in resources.of(kind, patch.context) if matches(item)]
    if patch.operation == "REMOVE":
        gone = {id(item) for item in chosen}
        resources.items[:] = [entry for entry in resources.items if id(entry[2]) not in gone]
    else:
        for item in chosen:
            patch.merge_into(item)


def _apply_listener(patch: Patch, resources: Patchable) -> None:
    _patch_whole(patch, resources, "listener", lambda listener: _listener_matches(listener, patch.listener))


def _apply_cluster(patch: Patch, resources: Patchable) -> None:
    _patch_whole(patch, resources, "cluster", lambda cluster: _cluster_matches(cluster, patch.match.get("cluster") or {}))


def _apply_filter_chain(patch: Patch, resources: Patchable) -> None:
    if patch.operation == "ADD":
        for listener in resources.of("listener", patch.context):
            if _listener_matches(listener, patch.listener):
                listener["filter_chains"].append(patch.fresh_value())
        return
    for listener, chain in list(_chains(resources, patch.context, patch.listener)):
        if patch.operation == "REMOVE":
            listener["filter_chains"] = [c for c in listener["filter_chains"] if c is not chain]
        else:
            patch.merge_into(chain)


def _apply_network_filter(patch: Patch, resources: Patchable) -> None:
    anchor = _set((patch.listener.get("filterChain") or {}).get("filter") or {}, "name")
    for dummy, chain in _chains(resources, patch.context, patch.listener):
        # The last network filter is the terminal one (the HTTP connection manager, TCP proxy):
        # Envoy refuses a filter after it, so ADD goes before it, as HTTP filters before the router.
        terminal = chain["filters"][-1]["name"] if chain["filters"] else None
        _patch_named_list(chain["filters"], patch.operation, patch.fresh_value(), anchor, last=terminal)


def _apply_listener_filter(patch: Patch, resources: Patchable) -> None:
    anchor = _set(patch.listener, "listenerFilter")
    for listener in resources.of("listener", patch.context):
        if _listener_matches(listener, patch.listener):
            filters = listener.setdefault("listener_filters", [])
            _patch_named_list(filters, patch.operation, patch.fresh_value(), anchor)
            if not filters:
                del listener["listener_filters"]


def _after_last(names: list[str], name: str) -> int | None:
    return max(index for index, each in enumerate(names) if each == name) + 1 if name in names else None


def filter_class_index(http_filters: list[dict], filter_class: str) -> int:
    """Where Istio's filterClass puts an HTTP filter: AUTHN after the authentication filters
    (JWT), AUTHZ after the authorization ones (RBAC; else where AUTHN goes), STATS just before
    the router (where Istio's stats filter is)."""
    names = [item["name"] for item in http_filters]
    authn = _after_last(names, JWT_FILTER) or 0
    if filter_class == "AUTHN":
        return authn
    if filter_class == "AUTHZ":
        return _after_last(names, HTTP_RBAC_FILTER) or authn
    return names.index(ROUTER_FILTER) if ROUTER_FILTER in names else len(names)


def _apply_http_filter(patch: Patch, resources: Patchable) -> None:
    filter_match = (patch.listener.get("filterChain") or {}).get("filter") or {}
    anchor = _set(filter_match.get("subFilter") or {}, "name")
    for manager in _managers(resources, patch.context, patch.listener):
        if patch.filter_class:
            # Istio: the class decides the place, whatever the insert operation says.
            manager["http_filters"].insert(filter_class_index(manager["http_filters"], patch.filter_class), patch.fresh_value())
        else:
            _patch_named_list(manager["http_filters"], patch.operation, patch.fresh_value(), anchor, last=ROUTER_FILTER)


def _apply_route_configuration(patch: Patch, resources: Patchable) -> None:
    for route_config in _route_configs(resources, patch.context, patch.route_configuration):
        patch.merge_into(route_config)


def _apply_virtual_host(patch: Patch, resources: Patchable) -> None:
    if patch.operation == "ADD":
        for route_config in _route_configs(resources, patch.context, patch.route_configuration):
            route_config["virtual_hosts"].append(patch.fresh_value())
        return
    for route_config, vhost in list(_vhosts(resources, patch.context, patch.route_configuration)):
        if patch.operation == "REMOVE":
            route_config["virtual_hosts"] = [v for v in route_config["virtual_hosts"] if v is not vhost]
        else:
            patch.merge_into(vhost)


def _apply_http_route(patch: Patch, resources: Patchable) -> None:
    """Istio's route patches: MERGE and REMOVE act on every matched route; INSERT_BEFORE and
    INSERT_AFTER place the route beside the first matched one (the first route without a
    route match); INSERT_FIRST and ADD put it first and last (last is after Istio's catch-all
    routes, as in Istio: a route there may never match)."""
    route_match = (patch.route_configuration.get("vhost") or {}).get("route") or {}
    for dummy, vhost in _vhosts(resources, patch.context, patch.route_configuration):
        routes = vhost["routes"]
        matched = [index for index, route in enumerate(routes) if _route_matches(route, route_match)]
        if patch.operation in _MERGES:
            for index in matched:
                patch.merge_into(routes[index])
        elif patch.operation == "REMOVE":
            vhost["routes"] = [route for index, route in enumerate(routes) if index not in matched]
        elif patch.operation == "INSERT_FIRST":
            routes.insert(0, patch.fresh_value())
        elif patch.operation == "ADD":
            routes.append(patch.fresh_value())
        elif matched:
            routes.insert(matched[0] + (patch.operation == "INSERT_AFTER"), patch.fresh_value())


_MERGES = ("MERGE", "MERGE_AND_REPLACE_LIST")

APPLY = {
    "LISTENER": _apply_listener,
    "FILTER_CHAIN": _apply_filter_chain,
    "NETWORK_FILTER": _apply_network_filter,
    "LISTENER_FILTER": _apply_listener_filter,
    "HTTP_FILTER": _apply_http_filter,
    "ROUTE_CONFIGURATION": _apply_route_configuration,
    "VIRTUAL_HOST": _apply_virtual_host,
    "HTTP_ROUTE": _apply_http_route,
    "CLUSTER": _apply_cluster,
}


def proxy_version_matches(match: dict, envoy_version: str) -> bool:
    """match.proxy.proxyVersion: an RE2 regex searched in the Envoy version the proxies run
    (the MeshConfig's envoyVersion), as Istio searches its proxies' version."""
    version = _set(match.get("proxy") or {}, "proxyVersion")
    return version is None or re2.search(version, envoy_version) is not None


def proxy_metadata_matches(match: dict, proxy: Proxy, trust_domain: str) -> bool:
    """match.proxy.metadata: every key's value equals the string the proxy's node metadata
    has for it (Istio's rule; a key the proxy does not send, or a map such as LABELS, never
    matches)."""
    wanted = (match.get("proxy") or {}).get("metadata") or {}
    metadata = node_metadata(proxy, trust_domain)
    return all(isinstance(metadata.get(key), str) and metadata[key] == value for key, value in wanted.items())


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


def _context_includes(context: str, proxy: Proxy) -> bool:
    """Whether a patch of this context applies to the proxy itself (BOOTSTRAP, EXTENSION_CONFIG:
    not a resource of one context)."""
    return context == "ANY" or (context == GATEWAY) == (proxy.kind == "gateway")


def apply_envoy_filters(mesh: Mesh, proxy: Proxy, resources: Patchable) -> tuple[dict, ...]:
    """Patch the proxy's resources in place; returns the BOOTSTRAP patch values to merge into
    its bootstrap, in order."""
    bootstrap, extensions = [], {}
    for envoy_filter in envoy_filters_for(mesh, proxy):
        for patch in envoy_filter.spec["configPatches"]:
            match = patch.get("match") or {}
            if proxy_version_matches(match, mesh.settings.envoy_version) and proxy_metadata_matches(match, proxy, mesh.settings.trust_domain):
                parsed = Patch.of(patch)
                if parsed.apply_to == "BOOTSTRAP":
                    if _context_includes(parsed.context, proxy):
                        bootstrap.append(parsed.fresh_value())
                elif parsed.apply_to == "EXTENSION_CONFIG":
                    if _context_includes(parsed.context, proxy):
                        extensions[parsed.value["name"]] = parsed.value  # a later one of a name replaces it
                else:
                    APPLY[parsed.apply_to](parsed, resources)
    _give_extension_configs(resources, extensions)
    return tuple(bootstrap)


def merge_bootstrap_patches(bootstrap: dict, patches: tuple[dict, ...]) -> dict:
    """The bootstrap with BOOTSTRAP patches merged in (Istio's MERGE: protobuf merge)."""
    if not patches:
        return bootstrap
    patched = copy.deepcopy(bootstrap)
    for value in patches:
        merge(patched, value)
    return patched


def _filter_lists(resources: Patchable):
    """Every list of filters of the proxy's listeners: listener, network and HTTP filters."""
    for listener in resources.listeners():
        yield listener.get("listener_filters") or []
        for chain in listener["filter_chains"]:
            yield chain["filters"]
            for network_filter in chain["filters"]:
                if network_filter["name"] == HCM_FILTER:
                    yield network_filter.get("typed_config", {}).get("http_filters") or []


def _give_extension_configs(resources: Patchable, extensions: dict[str, dict]) -> None:
    """A filter that takes its config by extension config discovery (config_discovery) gets
    the EXTENSION_CONFIG of its name as its typed_config (else its default_config); one that
    gets neither keeps config_discovery, which the config check reports."""
    for filters in _filter_lists(resources):
        for index, item in enumerate(filters):
            discovery = item.get("config_discovery")
            if discovery is None:
                continue
            config = (extensions.get(item["name"]) or {}).get("typed_config") or discovery.get("default_config")
            # Envoy takes an extension config only of a type the filter lists.
            if config is not None and config.get("@type") in discovery.get("type_urls", [config.get("@type")]):
                filters[index] = {**{k: v for k, v in item.items() if k != "config_discovery"}, "typed_config": copy.deepcopy(config)}
