"""A sidecar's listeners under iptables capture (Istio's interceptionMode REDIRECT).

The host's nat rules (roles/envoy_proxy/templates/capture.rules.j2) send the apps' outbound
TCP to 15001 and inbound TCP to 15006; the proxy's own traffic (its uid) is left alone.

- virtualOutbound (0.0.0.0:15001, use_original_dst): hands each connection to the listener of
  its original destination: `0.0.0.0_<port>` (HTTP: routes by Host to the services on that
  port) or `<VIP>_<port>` (TCP: one service). Those listeners bind no socket. Anything else
  goes to PassthroughCluster (outboundTrafficPolicy ALLOW_ANY, Istio's default) or to
  BlackHoleCluster (REGISTRY_ONLY).
- virtualInbound (0.0.0.0:15006, original_dst filter): one filter chain per workload port,
  matched on the original destination port, with mTLS and authorization as for any inbound
  listener. The ports are the Sidecar's ingress entries (to their defaultEndpoint) where it
  has any; else, as Istio does, the ports of the services that select the workload, each
  service port mapped through the WorkloadEntry's `ports` (or targetPort) to the port the app
  listens on, at 127.0.0.1:<that port> (cluster `inbound|<port>||`). Other ports pass through
  to the original destination, sent from 127.0.0.6 (Istio's address, which the rules let
  through).
- Both have Istio's black hole chain (`virtualOutbound-blackhole`, `virtualInbound-blackhole`):
  a connection whose original destination is the capture port itself (one made to 15001 or
  15006 directly, not redirected) goes to BlackHoleCluster. Passed through, it would come back
  to the same port, again and again (the proxy's own connections are never redirected).

Apps reach services by name: each service has a VIP, its ServiceEntry's first single address
or one allocated from 240.240.0.0/16 (Istio's auto allocation range), and the host maps the
name to it (/etc/hosts), with the short forms Kubernetes DNS would resolve. The VIP is never
routed: the rules redirect it to 15001 first. CIDR ranges among a ServiceEntry's addresses
(and addresses after the first) pick its TCP ports' traffic by destination, as in Istio: a
chain matching those prefixes in the port's `0.0.0.0_<port>` listener.
"""

from __future__ import annotations

import copy
import ipaddress

from meshwright.compile.authorization import authorize_chain
from meshwright.compile.clusters import DEFAULT_CONNECT_TIMEOUT
from meshwright.compile.envoy_values import TYPE_PREFIX, socket_address, typed
from meshwright.compile.listeners import http_connection_manager, listener, listener_name, tcp_proxy
from meshwright.compile.mtls import MESH_ALPN, inbound_filter_chains
from meshwright.compile.peer_authentication import PERMISSIVE, STRICT, mtls_mode
from meshwright.compile.proxy import ADMIN_PORT, HEALTH_PORT, INBOUND_CAPTURE_PORT, OUTBOUND_PORT, STATS_PORT, Proxy
from meshwright.compile.scope import services_in_scope, sidecar_for, workload_service_ports
from meshwright.compile.sidecar import egress_proxy_cluster, egress_proxy_virtual_host, inbound_entries, inbound_port
from meshwright.compile.tls_routing import outbound_tcp_proxy, service_tls_chains, tcp_destinations
from meshwright.compile.virtual_hosts import outbound_virtual_hosts, route_configuration, service_names
from meshwright.mesh import Mesh, is_wildcard_host
from meshwright.names import is_host
from meshwright.registry.model import Service

PASSTHROUGH, BLACKHOLE, INBOUND_PASSTHROUGH = "PassthroughCluster", "BlackHoleCluster", "InboundPassthroughCluster"
VIRTUAL_OUTBOUND, VIRTUAL_INBOUND = "virtualOutbound", "virtualInbound"
# Istio's source address for inbound passthrough: the rules never redirect it.
INBOUND_PASSTHROUGH_SOURCE = "127.0.0.6"
AUTO_ALLOCATE_RANGE = ipaddress.ip_network("240.240.0.0/16")
ORIGINAL_DST = TYPE_PREFIX + "envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
ALLOW_ANY, REGISTRY_ONLY = "ALLOW_ANY", "REGISTRY_ONLY"


def service_addresses(mesh: Mesh) -> dict[str, str]:
    """hostname -> VIP for every service of the mesh (the same on every proxy): its
    ServiceEntry's first single address, else the next free one of 240.240.0.0/16 in hostname
    order (x.x.x.0 and x.x.x.255 skipped, as Istio does). Wildcard hosts, resolution NONE
    services without addresses and services given CIDR ranges only get none: their traffic
    passes through to where it was sent, or is picked by its range (address_ranges)."""

    def compute():
        addresses, wanting = {}, []
        for service in mesh.registry.sorted():
            given = given_addresses(mesh, service)
            vip = virtual_ip(given)
            if vip:
                addresses[service.hostname] = vip
            elif not given and not is_wildcard_host(service.hostname) and service.resolution != "NONE":
                wanting.append(service.hostname)
        taken = set(addresses.values())
        free = (str(a) for a in AUTO_ALLOCATE_RANGE.hosts() if a.packed[-1] not in (0, 255) and str(a) not in taken)
        addresses.update(zip(wanting, free))
        return addresses

    return mesh.memo(("service-addresses",), compute)


def given_addresses(mesh: Mesh, service: Service) -> list[str]:
    """The `addresses` of the ServiceEntry that defines the service (IPs and CIDR ranges)."""
    kind, dummy, rest = service.source.partition("/")
    if kind != "ServiceEntry":
        return []
    namespace, name = rest.split("/", 1)
    entry = mesh.find("ServiceEntry", namespace, name)
    return list(entry.spec.get("addresses") or []) if entry else []


def _is_single_address(address: str) -> bool:
    return ipaddress.ip_network(address, strict=False).num_addresses == 1


def virtual_ip(given: list[str]) -> str | None:
    """The first single address (an IP, or a /32) of a ServiceEntry's addresses: the VIP its
    names map to."""
    single = next((a for a in given if _is_single_address(a)), None)
    return single.split("/")[0] if single else None


def address_ranges(given: list[str]) -> list[ipaddress.IPv4Network]:
    """The networks a ServiceEntry's addresses select by destination besides its VIP (CIDR
    ranges, and single addresses after the first), as Istio matches them: a connection to any
    address in them, on one of the service's TCP ports, is the service's."""
    vip = virtual_ip(given)
    networks = [ipaddress.ip_network(a, strict=False) for a in given if a.split("/")[0] != vip]
    return sorted(set(networks), key=lambda n: (n.version, int(n.network_address), n.prefixlen))


def outbound_traffic_policy(mesh: Mesh, proxy: Proxy) -> str:
    """Where captured traffic to no known service goes: the proxy's Sidecar's
    outboundTrafficPolicy, else the MeshConfig's, else ALLOW_ANY (Istio's order)."""
    sidecar = sidecar_for(mesh, proxy)
    if sidecar is not None and "outboundTrafficPolicy" in sidecar.spec:
        return sidecar.spec["outboundTrafficPolicy"].get("mode", ALLOW_ANY)
    configs = mesh.of_kind("MeshConfig")
    policy = (configs[0].spec.get("outboundTrafficPolicy") or {}) if configs else {}
    return policy.get("mode", ALLOW_ANY)


def capture_settings(mesh: Mesh, proxy: Proxy) -> dict | None:
    """What the host's rules and name mapping need (None without capture): the capture
    ports, the proxy's own ports (never captured inbound) and the VIPs of its services."""
    if not proxy.captures:
        return None
    addresses = service_addresses(mesh)
    own = {proxy.port(p) for p in (ADMIN_PORT, OUTBOUND_PORT, INBOUND_CAPTURE_PORT, HEALTH_PORT, STATS_PORT)}
    return {
        "mode": proxy.interception,
        "outbound_port": proxy.port(OUTBOUND_PORT),
        "inbound_port": proxy.port(INBOUND_CAPTURE_PORT),
        "exclude_inbound_ports": sorted(own),
        "hosts": _scope_host_names(mesh, proxy, addresses),
    }


def _scope_host_names(mesh: Mesh, proxy: Proxy, addresses: dict[str, str]) -> dict[str, str]:
    """_host_names, once per namespace and Sidecar (what the names depend on): the proxies of a
    class share the mapping (never changed)."""
    sidecar = sidecar_for(mesh, proxy)
    key = ("capture host names", proxy.namespace, sidecar.ref if sidecar else None)
    return mesh.memo(key, lambda: _host_names(mesh, proxy, addresses))


def _host_names(mesh: Mesh, proxy: Proxy, addresses: dict[str, str]) -> dict[str, str]:
    """name -> VIP for the services in the proxy's scope: each hostname, and the shorter
    names Kubernetes DNS would resolve for an app in the proxy's namespace (the same names
    its routes take in Host). A hostname of its own always wins over another's short name."""
    scoped = [s for s in services_in_scope(mesh, proxy) if s.hostname in addresses]
    names = {s.hostname: addresses[s.hostname] for s in scoped}
    for service in scoped:
        for name in service_names(service, proxy.namespace):
            names.setdefault(name, addresses[service.hostname])
    # A wildcard is no name a resolver looks up: /etc/hosts cannot hold it.
    return checked_host_names({name: vip for name, vip in sorted(names.items()) if not is_wildcard_host(name)})


def checked_host_names(names: dict[str, str]) -> dict[str, str]:
    """Every name is a DNS name (validation refused others already; checked again here because
    a newline or space in one would write extra /etc/hosts lines on the host)."""
    bad = sorted(name for name in names if not is_host(name))
    if bad:
        raise ValueError(f"refusing to map {bad[0]!r} in /etc/hosts: not a DNS name")
    return names


def _black_hole_chain(name: str, port: int) -> dict:
    """Istio's guard against a loop: a connection to the capture port itself goes nowhere."""
    return {"name": f"{name}-blackhole", "filter_chain_match": {"destination_port": port},
            "filters": [tcp_proxy(BLACKHOLE, [(BLACKHOLE, 100)])]}


def _not_bound(out: dict) -> dict:
    """A listener that only takes connections handed over by virtualOutbound."""
    out["bind_to_port"] = False
    return out


def _catch_all_route(mesh: Mesh, proxy: Proxy) -> dict:
    """Istio's last virtual host: unknown Host names pass through (or go to the Sidecar's
    egressProxy), or get 502 (REGISTRY_ONLY)."""
    if outbound_traffic_policy(mesh, proxy) == REGISTRY_ONLY:
        return {"name": "block_all", "domains": ["*"], "routes": [{"name": "block_all", "match": {"prefix": "/"}, "direct_response": {"status": 502}}]}
    return egress_proxy_virtual_host(unknown_destination_cluster(mesh, proxy))


def unknown_destination_cluster(mesh: Mesh, proxy: Proxy) -> str:
    """Where captured connections to destinations the mesh does not know go: BlackHoleCluster
    under REGISTRY_ONLY; else the Sidecar's egressProxy, or the original destination."""
    if outbound_traffic_policy(mesh, proxy) == REGISTRY_ONLY:
        return BLACKHOLE
    return egress_proxy_cluster(mesh, proxy) or PASSTHROUGH


def outbound(mesh: Mesh, proxy: Proxy) -> tuple[list, list, list]:
    """(listeners, route configs, clusters) for captured outbound traffic."""
    services = services_in_scope(mesh, proxy)
    addresses = service_addresses(mesh)
    fallback = unknown_destination_cluster(mesh, proxy)
    listeners = [{
        "name": VIRTUAL_OUTBOUND,
        "address": socket_address("0.0.0.0", proxy.port(OUTBOUND_PORT)),
        "use_original_dst": True,
        "traffic_direction": "OUTBOUND",
        "filter_chains": [_black_hole_chain(VIRTUAL_OUTBOUND, proxy.port(OUTBOUND_PORT)),
                          {"name": f"{VIRTUAL_OUTBOUND}-catchall-tcp", "filters": [tcp_proxy(fallback, [(fallback, 100)])]}],
    }]
    routes = []
    # TLS ports of services without a VIP (resolution NONE, wildcard hosts): told apart by SNI
    # on the port's 0.0.0.0 listener, as Istio does; other connections there pass through.
    sni_chains = _sni_chains_without_vip(mesh, proxy, services, addresses)
    http_ports = sorted({p.number for s in services for p in s.ports if p.is_http})
    for number in http_ports:
        on_port = [s for s in services if (s.port(number) and s.port(number).is_http)]
        name = str(number)
        routes.append(route_configuration(name, outbound_virtual_hosts(mesh, proxy, on_port, number) + [_catch_all_route(mesh, proxy)], mesh))
        chains = _with_fallback(sni_chains.pop(number, []), fallback, {"transport_protocol": "tls"})
        chains.append({"filters": [http_connection_manager(f"outbound_0.0.0.0_{number}", name)]})
        listeners.append(_not_bound(listener("0.0.0.0", number, chains, "OUTBOUND")))
    for number, chains in sorted(sni_chains.items()):
        listeners.append(_not_bound(listener("0.0.0.0", number, _with_fallback(chains, fallback, {}), "OUTBOUND")))
    ranged: dict[int, list[dict]] = {}
    for service in services:
        ranges = [{"address_prefix": str(n.network_address), "prefix_len": n.prefixlen} for n in address_ranges(given_addresses(mesh, service))]
        for port in service.ports:
            if port.is_http or not (ranges or service.hostname in addresses):
                continue
            if port.is_tls:
                chains = service_tls_chains(mesh, proxy, service, port, set(), by_name=False)
            else:
                destinations = tcp_destinations(mesh, proxy, service.hostname, port.number)
                chains = [{"filters": [outbound_tcp_proxy(mesh, proxy, f"outbound|{port.number}||{service.hostname}", destinations)]}]
            if ranges:
                ranged.setdefault(port.number, []).extend(
                    {**copy.deepcopy(chain), "filter_chain_match": {**chain.get("filter_chain_match", {}), "prefix_ranges": ranges}} for chain in chains
                )
            if service.hostname in addresses:
                listeners.append(_not_bound(listener(addresses[service.hostname], port.number, chains, "OUTBOUND")))
    listeners += _range_listeners(listeners, ranged, fallback)
    clusters = [_original_dst_cluster(PASSTHROUGH), {"name": BLACKHOLE, "type": "STATIC", "connect_timeout": DEFAULT_CONNECT_TIMEOUT}]
    return listeners, routes, clusters


def _sni_chains_without_vip(mesh: Mesh, proxy: Proxy, services: list[Service], addresses: dict[str, str]) -> dict[int, list[dict]]:
    """port -> SNI chains of the TLS ports of services that have no VIP."""
    chains: dict[int, list[dict]] = {}
    taken: dict[int, set[str]] = {}
    for service in services:
        if service.hostname in addresses:
            continue
        for port in service.ports:
            if port.is_tls:
                chains.setdefault(port.number, []).extend(service_tls_chains(mesh, proxy, service, port, taken.setdefault(port.number, set())))
    return chains


def _with_fallback(chains: list[dict], fallback: str, match: dict) -> list[dict]:
    """SNI chains, then one for connections no name of theirs matches (none without chains)."""
    if not chains:
        return chains
    last = {"name": f"{VIRTUAL_OUTBOUND}-unmatched-tls" if match else f"{VIRTUAL_OUTBOUND}-unmatched", "filters": [tcp_proxy(fallback, [(fallback, 100)])]}
    if match:
        last["filter_chain_match"] = match
    return chains + [last]


def _range_listeners(listeners: list[dict], ranged: dict[int, list[dict]], fallback: str) -> list[dict]:
    """The chains of services picked by destination range go into the port's `0.0.0.0_<port>`
    listener (Envoy prefers the longest matching prefix; the HTTP chain there, without one,
    takes the rest); a port with no such listener gets one whose other connections go where
    virtualOutbound sends the unknown. Returns the listeners made."""
    made = []
    by_name = {item["name"]: item for item in listeners}
    for number, chains in sorted(ranged.items()):
        existing = by_name.get(listener_name("0.0.0.0", number))
        if existing:
            existing["filter_chains"] += chains
        else:
            rest = {"filters": [tcp_proxy(fallback, [(fallback, 100)])]}
            made.append(_not_bound(listener("0.0.0.0", number, chains + [rest], "OUTBOUND")))
    return made


def _original_dst_cluster(name: str, source: str | None = None) -> dict:
    cluster = {"name": name, "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED", "connect_timeout": DEFAULT_CONNECT_TIMEOUT}
    if source:
        cluster["upstream_bind_config"] = {"source_address": {"address": source, "port_value": 0}}
    return cluster


def _passthrough_chains(mode: str, chain: dict) -> list[dict]:
    """As inbound_filter_chains, but under PERMISSIVE only mesh clients (Istio's ALPN) are
    taken as mTLS: other TLS, such as HTTPS to an app's own port, passes through untouched.
    That TLS needs a chain of its own: Envoy narrows the chains to those of the connection's
    transport protocol before it looks at ALPN, and never goes back to a chain without one."""
    if mode != PERMISSIVE:
        return inbound_filter_chains(mode, chain)
    mtls = inbound_filter_chains(STRICT, copy.deepcopy(chain))[0]
    mtls["filter_chain_match"] = {"transport_protocol": "tls", "application_protocols": MESH_ALPN}
    other_tls = {"filter_chain_match": {"transport_protocol": "tls"}, **copy.deepcopy(chain)}
    return [mtls, other_tls, chain]


def inbound(mesh: Mesh, proxy: Proxy) -> tuple[list, list, list]:
    """(listeners, route configs, clusters) for captured inbound traffic (BlackHoleCluster,
    which its black hole chain names, comes with the outbound clusters)."""
    chains = [_black_hole_chain(VIRTUAL_INBOUND, proxy.port(INBOUND_CAPTURE_PORT))]
    routes, clusters = [], [_original_dst_cluster(INBOUND_PASSTHROUGH, INBOUND_PASSTHROUGH_SOURCE)]
    sidecar = sidecar_for(mesh, proxy)
    if sidecar and sidecar.spec.get("ingress"):
        ports = [(entry["port"]["number"], *rest) for entry, *rest in inbound_entries(mesh, proxy)]
    else:
        ports = [(number, *inbound_port(mesh, proxy, number, protocol, "127.0.0.1", number)) for number, protocol in workload_service_ports(mesh, proxy.id)]
    for number, port_chains, port_routes, port_clusters in ports:
        for chain in port_chains:
            chain["filter_chain_match"] = {"destination_port": number, **chain.get("filter_chain_match", {})}
            chains.append(chain)
        routes.extend(port_routes)
        clusters.extend(port_clusters)
    # Ports the workload does not serve in the mesh: to the original destination, under its
    # mTLS mode and authorization like any other inbound traffic.
    passthrough = authorize_chain(mesh, proxy.namespace, proxy.labels, {"filters": [tcp_proxy(INBOUND_PASSTHROUGH, [(INBOUND_PASSTHROUGH, 100)])]})
    chains.extend(_passthrough_chains(mtls_mode(mesh, proxy.namespace, proxy.labels, 0), passthrough))
    virtual_inbound = listener("0.0.0.0", proxy.port(INBOUND_CAPTURE_PORT), chains, "INBOUND")
    virtual_inbound["name"] = VIRTUAL_INBOUND
    virtual_inbound["listener_filters"] = [{"name": "envoy.filters.listener.original_dst", "typed_config": typed(ORIGINAL_DST)},
                                           *virtual_inbound.get("listener_filters", [])]
    return [virtual_inbound], routes, clusters
