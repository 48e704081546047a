"""Semantic checks: what is well-formed field by field but wrong as a whole."""

from __future__ import annotations

import ipaddress
import os
import re

from meshwright.compile.envoy_versions import envoy_version_problem
from meshwright.compile.proxy import (
    ADMIN_PORT, HEALTH_PORT, INBOUND_CAPTURE_PORT, INTERCEPTION_ANNOTATION, NONE, OUTBOUND_PORT, PORT_OFFSET_ANNOTATION, REDIRECT,
    STATS_PORT, list_proxies,
)
from meshwright.compile.capture import address_ranges
from meshwright.compile.scope import sidecar_for, workload_service_ports
from meshwright.mesh import DEFAULT_CERTIFICATES_DIR, Mesh, certificates_dir_problem, exports_overlap, resolve_host, rule_selector
from meshwright.model.resource import Resource
from meshwright.problems import Problems, format_path
from meshwright.registry.inventory import ENDPOINT_ANNOTATION, NO_SIDECAR, NOT_READY, SIDECAR_ANNOTATION
from meshwright.registry.model import HTTP_PROTOCOLS

_MERGES = ("MERGE", "MERGE_AND_REPLACE_LIST")
_WHOLE = ("ADD", "REMOVE", *_MERGES)
_INSERTS = ("INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST", "ADD", "REMOVE")
# The operations Istio acts on per applyTo (it ignores the others silently; meshwright refuses them).
PATCH_OPERATIONS = {
    "LISTENER": _WHOLE,
    "FILTER_CHAIN": _WHOLE,
    "NETWORK_FILTER": (*_INSERTS, "MERGE", "REPLACE"),
    "LISTENER_FILTER": _INSERTS,
    "HTTP_FILTER": (*_INSERTS, "MERGE", "REPLACE"),
    "ROUTE_CONFIGURATION": _MERGES,
    "VIRTUAL_HOST": _WHOLE,
    "HTTP_ROUTE": (*_MERGES, "INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST", "ADD", "REMOVE"),
    "CLUSTER": _WHOLE,
    "BOOTSTRAP": ("MERGE",),
    "EXTENSION_CONFIG": ("ADD",),
}
MATCH_FIELD = {
    **dict.fromkeys(("LISTENER", "FILTER_CHAIN", "NETWORK_FILTER", "LISTENER_FILTER", "HTTP_FILTER"), "listener"),
    **dict.fromkeys(("ROUTE_CONFIGURATION", "VIRTUAL_HOST", "HTTP_ROUTE"), "routeConfiguration"),
    "CLUSTER": "cluster",
}
# The filter a relative operation acts on, per applyTo: (what it is, operations, where the match names it).
PATCH_ANCHORS = {
    "HTTP_FILTER": ("an HTTP filter", ("REMOVE", "INSERT_AFTER", "MERGE", "REPLACE"), ("listener", "filterChain", "filter", "subFilter", "name")),
    "NETWORK_FILTER": ("a network filter", ("REMOVE", "MERGE", "REPLACE"), ("listener", "filterChain", "filter", "name")),
    "LISTENER_FILTER": ("a listener filter", ("REMOVE",), ("listener", "listenerFilter")),
}
# What a BOOTSTRAP patch may not change: the delivery's (where the config files are, the
# admin address the roles and health checks use, the node identity the stats and xDS name).
PROTECTED_BOOTSTRAP_FIELDS = {
    "node": "the node's identity (id, cluster, metadata, locality) comes from the proxy's WorkloadEntry or Gateway",
    "admin": "the admin address is 127.0.0.1 at the proxy's port 15000 (plus its port offset), which health checks and the roles use",
    "dynamic_resources": "listeners and clusters come from the files meshwright delivers",
}
# The operations that insert a filter, which filterClass then places instead (Istio's).
FILTER_CLASS_OPERATIONS = ("ADD", "INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST")
# ADDed objects Envoy and the compiler find by name.
NAMED_ADDS = ("LISTENER", "CLUSTER", "VIRTUAL_HOST", "NETWORK_FILTER", "LISTENER_FILTER", "HTTP_FILTER", "EXTENSION_CONFIG")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


# Envoy adds the weights of a route's clusters into a 32-bit unsigned integer.
MAX_TOTAL_WEIGHT = 2**32 - 1


def check_weights(resource: Resource, problems: Problems) -> None:
    """Weights are relative, as in Istio: a destination gets weight / sum of the weights, and
    a single destination all the traffic. Several destinations all of weight 0 send it
    nowhere (Istio refuses them too); a sum other than 100 is valid, but was Istio's rule
    before and is often a slip (80 + 30), so it is shown as a warning with the shares."""
    for kind in ("http", "tcp"):
        for index, route in enumerate(resource.spec.get(kind) or []):
            destinations = route.get("route") or []
            if len(destinations) < 2:
                continue
            weights = [d.get("weight", 0) for d in destinations]
            total, shown, path = sum(weights), " + ".join(str(w) for w in weights), ("spec", kind, index, "route")
            if total == 0:
                problems.add(resource, path, f"every destination has weight 0 ({shown}), so no traffic could go anywhere: give the destinations "
                                             "weights (relative: each gets weight / sum of the weights)")
            elif total > MAX_TOTAL_WEIGHT:
                problems.add(resource, path, f"weights sum to {total}, more than Envoy can add up ({MAX_TOTAL_WEIGHT}): use smaller weights in the "
                                             "same proportions")
            elif total != 100:
                shares = ", ".join(f"{100 * w / total:.3g}%" for w in weights)
                problems.warn(resource, path, f"weights sum to {total} ({shown}), not 100: they are relative, so the destinations get {shares} of the traffic")


# Fields of an HTTP route that a redirect leaves without effect (Istio rejects the first two
# together with a redirect and ignores the others; meshwright ignores nothing).
NOT_WITH_REDIRECT = {
    "rewrite": "a redirect answers the client itself: nothing is forwarded to rewrite",
    "fault": "Istio does not allow fault injection on a redirect",
    "timeout": "a redirect is answered by the proxy: nothing times out",
    "retries": "a redirect is answered by the proxy: nothing is retried",
    "mirror": "a redirect is answered by the proxy: nothing is mirrored",
    "mirrorPercentage": "a redirect is answered by the proxy: nothing is mirrored",
    "mirrorPercent": "a redirect is answered by the proxy: nothing is mirrored",
    "mirrors": "a redirect is answered by the proxy: nothing is mirrored",
}
# The same for a direct response (the proxy answers; nothing is forwarded).
NOT_WITH_DIRECT_RESPONSE = {
    field: why.replace("a redirect answers the client itself", "a direct response answers the client itself").replace("a redirect is", "a direct response is")
    for field, why in NOT_WITH_REDIRECT.items() if field != "fault"
}


def check_http_routes(resource: Resource, problems: Problems) -> None:
    for index, http in enumerate(resource.spec.get("http") or []):
        path = ("spec", "http", index)
        answered = "redirect" if "redirect" in http else "directResponse" if "directResponse" in http else None
        if answered:
            for field, why in (NOT_WITH_REDIRECT if answered == "redirect" else NOT_WITH_DIRECT_RESPONSE).items():
                if field in http:
                    problems.add(resource, path + (field,), f"{field} cannot be used with {answered}: {why}")
        else:
            for field in ("mirrorPercentage", "mirrorPercent"):
                if field in http and "mirror" not in http:
                    problems.add(resource, path + (field,), f"{field} without mirror: name the destination to mirror to in mirror"
                                 + (" (each entry of mirrors has its own percentage)" if "mirrors" in http else ""))
        if "mirrorPercent" in http:
            problems.warn(resource, path + ("mirrorPercent",), "mirrorPercent is deprecated (Istio): write mirrorPercentage: {value: N}")
            if "mirrorPercentage" in http:
                problems.add(resource, path + ("mirrorPercent",), "set only one of mirrorPercentage, mirrorPercent")


# What a delegate VirtualService (no hosts) cannot hold, as Istio validates it.
NOT_IN_DELEGATE = {
    "gateways": "a delegate takes the gateways of the VirtualServices that delegate to it",
    "tcp": "only http routes are delegated",
    "tls": "only http routes are delegated",
}


def check_delegate_shape(resource: Resource, problems: Problems) -> None:
    """A VirtualService without hosts is a delegate: http routes only, none delegating further."""
    if resource.spec.get("hosts"):
        return
    for field in ("gateways", "tcp", "tls"):
        if field in resource.spec:
            problems.add(resource, ("spec", field), f"{field} cannot be used in a delegate VirtualService (one without hosts): {NOT_IN_DELEGATE[field]}")
    if not resource.spec.get("http"):
        problems.add(resource, ("spec",), "a VirtualService without hosts is a delegate and needs http routes (or give it hosts)")
    for index, http in enumerate(resource.spec.get("http") or []):
        if "delegate" in http:
            problems.add(resource, ("spec", "http", index, "delegate"), "a delegate VirtualService cannot delegate further (Istio delegates one level)")


def check_service_entry(resource: Resource, problems: Problems) -> None:
    spec = resource.spec
    for field in ("name", "number"):
        seen = set()
        for index, port in enumerate(spec["ports"]):
            if port[field] in seen:
                problems.add(resource, ("spec", "ports", index, field), f"port {field} {port[field]!r} is used twice")
            seen.add(port[field])
    resolution = spec.get("resolution", "NONE")
    if resolution == "STATIC":
        for index, endpoint in enumerate(spec.get("endpoints") or []):
            if not _is_ip(endpoint["address"]):
                problems.add(resource, ("spec", "endpoints", index, "address"), f"{endpoint['address']!r} is not an IP address: resolution STATIC "
                                                                                "needs IPs (use DNS for names)")
        if not spec.get("endpoints") and not spec.get("workloadSelector"):
            problems.add(resource, ("spec",), "resolution STATIC needs endpoints or a workloadSelector")
    if resolution == "DNS_ROUND_ROBIN" and len(spec.get("endpoints") or []) > 1:
        # Envoy's LOGICAL_DNS cluster connects to one name; Istio refuses more, as here.
        problems.add(resource, ("spec", "endpoints"), "resolution DNS_ROUND_ROBIN takes at most one endpoint: use DNS to balance over several names")
    for index, address in enumerate(spec.get("addresses") or []):
        if ipaddress.ip_network(address, strict=False).version != 4:
            problems.add(resource, ("spec", "addresses", index), f"{address} is not an IPv4 address: iptables capture redirects IPv4 only")
    if resolution in ("DNS", "DNS_ROUND_ROBIN"):
        for index, host in enumerate(spec["hosts"]):
            if "*" in host and not spec.get("endpoints"):
                problems.add(resource, ("spec", "hosts", index), "a wildcard host cannot be resolved by DNS: give endpoints or use resolution NONE")


# A DNS name (RFC 1123 labels, no wildcard): what a WorkloadEntry's address may be besides an IP.
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")


def check_workload_entry(resource: Resource, problems: Problems) -> None:
    address = resource.spec["address"]
    if not _is_ip(address) and not _HOSTNAME.match(address):
        problems.add(resource, ("spec", "address"), f"{address!r} is not an IP address or a hostname")


def _dig(value: dict, keys: tuple):
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _check_whole_proxy_patch(resource: Resource, path: tuple, apply_to: str, value: dict, problems: Problems) -> None:
    """BOOTSTRAP keeps off what delivery depends on; EXTENSION_CONFIG is a whole
    TypedExtensionConfig (name and typed_config)."""
    if apply_to == "BOOTSTRAP":
        for field, reason in PROTECTED_BOOTSTRAP_FIELDS.items():
            if field in value:
                problems.add(resource, path + (field,), f"a BOOTSTRAP patch may not change {field}: {reason}")
    elif apply_to == "EXTENSION_CONFIG" and not isinstance(value.get("typed_config"), dict):
        problems.add(resource, path, "an EXTENSION_CONFIG needs typed_config (with its @type): the config the filters named like it get")


def check_envoy_filter(resource: Resource, problems: Problems) -> None:
    for index, patch in enumerate(resource.spec["configPatches"]):
        path = ("spec", "configPatches", index)
        apply_to, operation = patch["applyTo"], patch["patch"]["operation"]
        if operation not in PATCH_OPERATIONS[apply_to]:
            problems.add(resource, path + ("patch", "operation"), f"{operation} is not supported on {apply_to}: use {' or '.join(PATCH_OPERATIONS[apply_to])}")
        match = patch.get("match") or {}
        for field in ("listener", "routeConfiguration", "cluster"):
            if field in match and field != MATCH_FIELD.get(apply_to):
                where = f"match on {MATCH_FIELD[apply_to]}" if apply_to in MATCH_FIELD else "match only on context and proxy (there is one per proxy)"
                problems.add(resource, path + ("match", field), f"{apply_to} patches {where}, not {field}")
        value = patch["patch"].get("value")
        if isinstance(value, dict):
            _check_whole_proxy_patch(resource, path + ("patch", "value"), apply_to, value, problems)
        if operation != "REMOVE" and not isinstance(value, dict):
            problems.add(resource, path + ("patch",), f"{operation} needs a value (a mapping in Envoy's field names)")
        elif operation in ("ADD", "INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST", "REPLACE") and apply_to in NAMED_ADDS and not value.get("name"):
            problems.add(resource, path + ("patch", "value"), f"{operation} of a {apply_to} needs value.name: Envoy tells them apart by name")
        filter_class = patch["patch"].get("filterClass", "UNSPECIFIED")
        if filter_class != "UNSPECIFIED" and (apply_to != "HTTP_FILTER" or operation not in FILTER_CLASS_OPERATIONS):
            problems.add(resource, path + ("patch", "filterClass"), f"filterClass places an HTTP filter that a patch inserts (applyTo HTTP_FILTER, "
                         f"operation {', '.join(FILTER_CLASS_OPERATIONS)}), not {operation} of {apply_to}: remove it")
            continue
        noun, anchored, where = PATCH_ANCHORS.get(apply_to, ("", (), ()))
        if filter_class == "UNSPECIFIED" and operation in anchored and not _dig(match, where):
            problems.add(resource, path + ("match",), f"{operation} of {noun} needs match.{'.'.join(where)}")


def check_duplicates(resources: list[Resource], problems: Problems) -> list[Resource]:
    """Report every resource defined a second time; returns the first definitions only, so
    that a duplicate is not reported again as a conflict with itself."""
    seen: dict[tuple, Resource] = {}
    for resource in resources:
        if resource.key in seen:
            first = seen[resource.key]
            problems.add(resource, ("metadata", "name"), f"duplicate {resource.kind}: {resource.ref} is also defined at "
                                                         f"{first.source.file}:{first.source.line}")
        else:
            seen[resource.key] = resource
    return list(seen.values())


def check_conflicts(mesh: Mesh, problems: Problems) -> None:
    """One VirtualService per host for sidecars, one DestinationRule per host and namespace,
    one MeshConfig, one default Sidecar per namespace."""
    owners: dict[str, list[Resource]] = {}
    for vs in mesh.of_kind("VirtualService"):
        if vs.spec.get("gateways") and "mesh" not in vs.spec["gateways"]:
            continue
        for index, host in enumerate(vs.spec.get("hosts") or []):
            resolved = resolve_host(host, vs.namespace)
            # Two may route one host when no namespace sees both (exportTo).
            other = next((owner for owner in owners.get(resolved, []) if exports_overlap(owner, vs)), None)
            if other is not None:
                problems.add(vs, ("spec", "hosts", index), f"{resolved} is already routed by {other.ref}: merge the routes into one VirtualService"
                             + (", or export them to different namespaces (exportTo)" if vs.spec.get("exportTo") or other.spec.get("exportTo") else ""))
            else:
                owners.setdefault(resolved, []).append(vs)
    rules: dict[tuple, Resource] = {}
    for rule in mesh.of_kind("DestinationRule"):
        # Rules of one host and namespace may differ by the clients they select.
        selector = tuple(sorted((rule_selector(rule) or {}).items()))
        key = (rule.namespace, resolve_host(rule.spec["host"], rule.namespace), selector)
        if key in rules:
            picks = " for the same workloadSelector" if selector else ""
            problems.add(rule, ("spec", "host"), f"{key[1]} already has {rules[key].ref} in namespace {key[0]}{picks}: merge them")
        else:
            rules[key] = rule
    for extra in mesh.of_kind("MeshConfig")[1:]:
        problems.add(extra, ("metadata", "name"), f"only one MeshConfig is allowed ({mesh.of_kind('MeshConfig')[0].ref} is the first)")
    check_address_ranges(mesh, problems)
    check_networks(mesh, problems)
    defaults: dict[str, Resource] = {}
    for sidecar in mesh.of_kind("Sidecar"):
        if "workloadSelector" in sidecar.spec:
            continue
        if sidecar.namespace in defaults:
            problems.add(sidecar, ("spec",), f"namespace {sidecar.namespace} already has a Sidecar without workloadSelector "
                                             f"({defaults[sidecar.namespace].ref})")
        else:
            defaults[sidecar.namespace] = sidecar


def check_address_ranges(mesh: Mesh, problems: Problems) -> None:
    """A destination range (a CIDR among a ServiceEntry's addresses, or an address after the
    first) picks a TCP port's traffic for one service: under capture, two services claiming
    the same range on the same port would be two identical filter chain matches."""
    owners: dict[tuple, Resource] = {}
    for entry in mesh.of_kind("ServiceEntry"):
        given = entry.spec.get("addresses") or []
        ranges = address_ranges(given)
        tcp_ports = [p["number"] for p in entry.spec["ports"] if p.get("protocol", "TCP") not in HTTP_PROTOCOLS]
        for index, address in enumerate(given):
            network = ipaddress.ip_network(address, strict=False)
            for number in tcp_ports if network in ranges else ():
                first = owners.setdefault((number, network), entry)
                if first is not entry:
                    problems.add(entry, ("spec", "addresses", index), f"{network} on TCP port {number} already belongs to {first.ref}: a destination "
                                                                      "range picks one service's traffic")


def _named_networks(mesh: Mesh) -> list[tuple[Resource, tuple, str]]:
    """(resource, field path, network) of every workload that names its network: the
    WorkloadEntries and the ServiceEntries' inline endpoints."""
    named = [(we, ("spec", "network"), we.spec["network"]) for we in mesh.of_kind("WorkloadEntry") if we.spec.get("network")]
    for entry in mesh.of_kind("ServiceEntry"):
        for index, endpoint in enumerate(entry.spec.get("endpoints") or []):
            if endpoint.get("network"):
                named.append((entry, ("spec", "endpoints", index, "network"), endpoint["network"]))
    return named


def check_networks(mesh: Mesh, problems: Problems) -> None:
    """One network (named the same everywhere, or not named) is the mesh meshwright makes, so
    `network` changes nothing then. Workloads on several networks reach each other only through
    east-west gateways (Istio's multi-network), which meshwright does not make: refused,
    never ignored."""
    named = _named_networks(mesh)
    networks = sorted({network for dummy, dummy, network in named})
    if len(networks) < 2:
        return
    for resource, path, network in named:
        problems.add(resource, path, (
            f"network is not supported by meshwright yet across several networks (this mesh names {', '.join(networks)}): "
            "workloads on different networks reach each other through east-west gateways, which meshwright does not make; "
            "put every workload on one network (one name for all, or none)"
        ))


def _proxy_ports(proxy, outbound: bool) -> dict[int, str]:
    """The ports a proxy binds for itself, by what they are for."""
    ports = {proxy.port(ADMIN_PORT): "admin", proxy.port(HEALTH_PORT): "health", proxy.port(STATS_PORT): "stats"}
    if outbound or proxy.captures:
        ports[proxy.port(OUTBOUND_PORT)] = "outbound"
    if proxy.captures:
        ports[proxy.port(INBOUND_CAPTURE_PORT)] = "inbound capture"
    return ports


def check_sidecar_outbound_traffic_policy(mesh: Mesh, problems: Problems) -> None:
    """A Sidecar's outboundTrafficPolicy decides where captured traffic to unknown
    destinations goes: a warning when no proxy it governs captures (explicit listeners carry
    only the services their egress hosts import, whatever the mode)."""
    # An egressProxy changes explicit listeners too (an unknown Host goes to it).
    setting = [sidecar for sidecar in mesh.of_kind("Sidecar")
               if "outboundTrafficPolicy" in sidecar.spec and "egressProxy" not in sidecar.spec["outboundTrafficPolicy"]]
    if not setting:
        return
    governed: dict[tuple, bool] = {}
    for proxy in list_proxies(mesh):
        sidecar = sidecar_for(mesh, proxy)
        if sidecar is not None:
            governed[sidecar.key] = governed.get(sidecar.key, False) or proxy.captures
    for sidecar in setting:
        if not governed.get(sidecar.key, False):
            problems.warn(sidecar, ("spec", "outboundTrafficPolicy"), "no proxy of this Sidecar captures with iptables (interceptionMode REDIRECT): "
                          "its explicit listeners carry only the services its egress hosts import, so the mode changes nothing")


def check_capture(mesh: Mesh, problems: Problems, proxies: list | None = None) -> None:
    """iptables capture (interceptionMode REDIRECT) is for sidecars, whose outbound traffic
    is then routed by destination: their Sidecar's egress entries give hosts, not ports.
    proxies: those to check (a workload that came: its own, checked alone before), else all."""
    if proxies is None and not _port_offsets_are_valid(mesh):
        return  # the proxies' ports are unknown; check_annotations reports why
    check_sidecar_outbound_traffic_policy(mesh, problems)
    for proxy in list_proxies(mesh) if proxies is None else proxies:
        if not proxy.captures:
            continue
        if proxy.kind == "gateway":
            workload = mesh.find("WorkloadEntry", proxy.namespace, proxy.name)
            problems.add(workload, ("metadata", "annotations", INTERCEPTION_ANNOTATION),
                         f"{proxy.id} is a gateway ({', '.join(proxy.gateways)} selects it): a gateway listens on its servers' ports, "
                         "only sidecars capture with iptables")
            continue
        sidecar = sidecar_for(mesh, proxy)
        if not (sidecar and sidecar.spec.get("ingress")):
            # Its inbound ports come from the services selecting it: none may be its own.
            own = _proxy_ports(proxy, outbound=True)
            for port, dummy in workload_service_ports(mesh, proxy.id):
                if port in own:
                    workload = mesh.find("WorkloadEntry", proxy.namespace, proxy.name)
                    problems.add(workload, ("spec", "ports"),
                                 f"proxy {proxy.id} captures with iptables and serves its services' ports, but port {port} is its "
                                 f"{own[port]} port (never captured): map the service port to another port of the app")
        for index, entry in enumerate((sidecar.spec.get("egress") or []) if sidecar else []):
            if "port" in entry:
                problems.add(sidecar, ("spec", "egress", index, "port"),
                             f"proxy {proxy.id} captures with iptables (interceptionMode REDIRECT): its outbound traffic is routed by "
                             "destination, so egress entries name hosts only (remove port and bind)")


def check_listener_ports(mesh: Mesh, problems: Problems, proxies: list | None = None) -> None:
    """One listener per port on a proxy: a Sidecar's ingress and egress listeners must not
    share a port with each other, nor with the proxy's own ports (admin, health, stats, and
    the outbound listener when no egress entry has a port); a Gateway's servers must not take
    its proxy's own ports either (servers that share a port share its listener). proxies:
    those to check (see check_capture), else all."""
    if proxies is None and not _port_offsets_are_valid(mesh):
        return  # the proxies' ports are unknown; check_annotations reports why
    proxies = list_proxies(mesh) if proxies is None else proxies
    # Each proxy's Sidecar looked up once (not once per Sidecar): linear in Sidecars + proxies.
    proxies_of: dict[int, list] = {}
    for proxy in proxies:
        if proxy.kind == "sidecar":
            proxies_of.setdefault(id(sidecar_for(mesh, proxy)), []).append(proxy)
    for sidecar in mesh.of_kind("Sidecar"):
        listeners = []  # (field path, port number)
        for direction in ("ingress", "egress"):
            for index, entry in enumerate(sidecar.spec.get(direction) or []):
                if "port" in entry:
                    listeners.append((("spec", direction, index, "port", "number"), entry["port"]["number"]))
        first: dict[int, tuple] = {}
        for path, number in listeners:
            if number in first:
                problems.add(sidecar, path, f"port {number} is already a listener of this Sidecar ({format_path(first[number])}): a proxy has one "
                                            "listener per port")
            else:
                first[number] = path
        outbound = not any(path[1] == "egress" for path, dummy in listeners)
        for proxy in proxies_of.get(id(sidecar), []):
            own = _proxy_ports(proxy, outbound)
            for path, number in listeners:
                if number in own:
                    problems.add(sidecar, path, f"port {number} is the {own[number]} port of proxy {proxy.id} (port offset {proxy.port_offset}): "
                                                "choose another port")
    for proxy in proxies:
        if proxy.kind != "gateway":
            continue
        own = _proxy_ports(proxy, outbound=False)
        for gateway_id in proxy.gateways:
            gateway = mesh.find("Gateway", *gateway_id.split("/"))
            for index, server in enumerate(gateway.spec["servers"]):
                number = server["port"]["number"]
                if number in own:
                    problems.add(gateway, ("spec", "servers", index, "port", "number"), f"port {number} is the {own[number]} port of proxy {proxy.id} "
                                                                                        f"(port offset {proxy.port_offset}): choose another port")


def _port_offsets_are_valid(mesh: Mesh) -> bool:
    """Whether every proxy's ports are known (list_proxies reads the offsets as numbers)."""
    return all(_port_offset_is_valid(r) for r in mesh.of_kind("WorkloadEntry") + mesh.of_kind("Gateway"))


def _port_offset_is_valid(resource: Resource) -> bool:
    value = resource.annotations.get(PORT_OFFSET_ANNOTATION)
    return value is None or (isinstance(value, str) and value.isdigit() and int(value) <= 50000)


def check_annotations(resource: Resource, problems: Problems) -> None:
    value = resource.annotations.get(PORT_OFFSET_ANNOTATION)
    if not _port_offset_is_valid(resource):
        problems.add(resource, ("metadata", "annotations", PORT_OFFSET_ANNOTATION), f"{value!r} is not a port offset: expected a whole number from 0 "
                                                                                    "to 50000, as a string")
    mode = resource.annotations.get(INTERCEPTION_ANNOTATION)
    if mode is not None and (resource.kind != "WorkloadEntry" or mode not in (NONE, REDIRECT)):
        expected = ("REDIRECT (iptables nat rules; TPROXY is not supported) or NONE (explicit listeners)" if resource.kind == "WorkloadEntry"
                    else "set on the WorkloadEntry of the sidecar")
        problems.add(resource, ("metadata", "annotations", INTERCEPTION_ANNOTATION), f"{mode!r}: expected {expected}")
    readiness = resource.annotations.get(ENDPOINT_ANNOTATION)
    if readiness is not None and (resource.kind != "WorkloadEntry" or readiness != NOT_READY):
        expected = (f"{NOT_READY!r} (the workload is in no service's endpoints) or no annotation" if resource.kind == "WorkloadEntry"
                    else "set on a WorkloadEntry")
        problems.add(resource, ("metadata", "annotations", ENDPOINT_ANNOTATION), f"{readiness!r}: expected {expected}")
    check_sidecar_annotation(resource, problems)


def check_sidecar_annotation(resource: Resource, problems: Problems) -> None:
    """meshwright.io/sidecar: "false" on a WorkloadEntry with no proxy beside it (an endpoint only)."""
    sidecar = resource.annotations.get(SIDECAR_ANNOTATION)
    path = ("metadata", "annotations", SIDECAR_ANNOTATION)
    if sidecar is not None and (resource.kind != "WorkloadEntry" or sidecar != NO_SIDECAR):
        expected = (f"{NO_SIDECAR!r} (no proxy runs beside this workload: it is an endpoint only) or no annotation"
                    if resource.kind == "WorkloadEntry" else "set on a WorkloadEntry")
        problems.add(resource, path, f"{sidecar!r}: expected {expected}")
    elif sidecar is not None and resource.annotations.get(INTERCEPTION_ANNOTATION) == REDIRECT:
        problems.add(resource, path, f"a workload without a sidecar has no proxy to capture its traffic: remove {INTERCEPTION_ANNOTATION} "
                                     "or this annotation")


_SOME_CONFIG_DIR = "/meshwright-root/proxy"  # any config directory two levels deep


def check_mesh_config(resource: Resource, problems: Problems) -> None:
    version = (resource.spec or {}).get("envoyVersion")
    problem = envoy_version_problem(version) if version is not None else None
    if problem:
        problems.add(resource, ("spec", "envoyVersion"), problem)
    certificates_dir = ((resource.spec or {}).get("certificates") or {}).get("dir")
    if isinstance(certificates_dir, str) and not os.path.isabs(certificates_dir):
        # A relative folder can be checked now (an absolute one when a proxy is rendered).
        if certificates_dir_problem(_SOME_CONFIG_DIR, certificates_dir):
            problems.add(resource, ("spec", "certificates", "dir"), f"{certificates_dir!r} leaves the meshwright root (the parent of "
                         f"each proxy's config directory): name a folder inside it, such as {DEFAULT_CERTIFICATES_DIR}")


def _traffic_policies(spec: dict) -> list[tuple[tuple, dict]]:
    """(path, policy) of a DestinationRule's traffic policies: top level, subsets, and the
    port-level settings of each."""
    found = []
    tops = [(("spec", "trafficPolicy"), spec.get("trafficPolicy"))]
    tops += [(("spec", "subsets", i, "trafficPolicy"), subset.get("trafficPolicy")) for i, subset in enumerate(spec.get("subsets") or [])]
    for path, policy in tops:
        if policy:
            found.append((path, policy))
            found += [(path + ("portLevelSettings", i), port) for i, port in enumerate(policy.get("portLevelSettings") or [])]
    return found


def _is_prime(number: int) -> bool:
    return number > 1 and all(number % divisor for divisor in range(2, int(number ** 0.5) + 1))


# Labels Istio derives from a workload's locality: 'failover' already orders endpoints by them.
LOCALITY_LABELS = ("topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone")


def _check_failover_priority(resource: Resource, path: tuple, policy: dict, problems: Problems) -> None:
    """Istio's rules: failover beside failoverPriority orders by locality itself, so the
    locality's labels may not be named too; without outlier detection (the policy's, or a
    subset's inherited from the top level) Envoy never fails over, so the field does nothing."""
    settings = (policy.get("loadBalancer") or {}).get("localityLbSetting") or {}
    labels = settings.get("failoverPriority") or []
    where = path + ("loadBalancer", "localityLbSetting", "failoverPriority")
    for index, label in enumerate(labels):
        if settings.get("failover") and label in LOCALITY_LABELS:
            problems.add(resource, where + (index,), f"{label} cannot be named beside failover, which orders endpoints by locality itself (Istio "
                                                     "refuses it too)")
    inherits = path[:2] == ("spec", "subsets") and len(path) == 4 and "outlierDetection" in (resource.spec.get("trafficPolicy") or {})
    if labels and "outlierDetection" not in policy and not inherits:
        problems.warn(resource, where, "failoverPriority needs outlierDetection in the same policy (else Envoy never leaves the first priority): it "
                                       "does nothing here")


def check_destination_rule(resource: Resource, problems: Problems) -> None:
    """What Envoy would refuse or not act on: slow start exists for ROUND_ROBIN and
    LEAST_REQUEST only; a Maglev table has a prime size; failoverPriority as Istio takes it."""
    for path, policy in _traffic_policies(resource.spec):
        _check_failover_priority(resource, path, policy, problems)
        balancer = policy.get("loadBalancer") or {}
        warmup = next((key for key in ("warmup", "warmupDurationSecs") if key in balancer), None)
        if warmup and balancer.get("simple") == "RANDOM":
            problems.add(resource, path + ("loadBalancer", warmup), f"{warmup} needs simple ROUND_ROBIN or LEAST_REQUEST (Envoy has no slow start for RANDOM)")
        size = ((balancer.get("consistentHash") or {}).get("maglev") or {}).get("tableSize")
        if size is not None and not _is_prime(size):
            problems.add(resource, path + ("loadBalancer", "consistentHash", "maglev", "tableSize"), f"tableSize {size} is not a prime number (Envoy's "
                                                                                                     "Maglev needs one, such as 65537)")


def check_semantics(resource: Resource, problems: Problems) -> None:
    check_annotations(resource, problems)
    if resource.kind == "MeshConfig":
        check_mesh_config(resource, problems)
    if resource.kind == "VirtualService":
        check_weights(resource, problems)
        check_http_routes(resource, problems)
        check_delegate_shape(resource, problems)
    elif resource.kind == "ServiceEntry":
        check_service_entry(resource, problems)
    elif resource.kind == "WorkloadEntry":
        check_workload_entry(resource, problems)
    elif resource.kind == "EnvoyFilter":
        check_envoy_filter(resource, problems)
    elif resource.kind == "DestinationRule":
        check_destination_rule(resource, problems)
