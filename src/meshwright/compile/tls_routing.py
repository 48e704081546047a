"""TLS to services that the sidecar passes through (ServiceEntry ports of protocol HTTPS or
TLS), chosen by the SNI of the client's ClientHello, as Istio's sidecars do.

An outbound TLS listener has one filter chain per name: the sniHosts of the VirtualService's
`tls` routes for the service (in order, the first route to name a host wins), then the
service's own hostname to its cluster (or to its `tcp` routes). The TLS inspector reads the
ClientHello first (compile/listeners.listener adds it for chains matched by server_names).
"""

from __future__ import annotations

from meshwright.compile.clusters import outbound_cluster_name, tcp_connection_limits
from meshwright.compile.listeners import tcp_proxy
from meshwright.compile.proxy import Proxy
from meshwright.compile.routes import destination_cluster, l4_match_applies, sidecar_context, tcp_route_applies
from meshwright.mesh import Mesh, host_matches, resolve_host
from meshwright.registry.model import Service, ServicePort


def tls_port_for_listener(service: Service, listener_port: int) -> ServicePort | None:
    """The service port a TLS listener serves: same number if the service has it, else its
    first TLS port (explicit listeners of captureMode NONE sit on local port numbers)."""
    exact = service.port(listener_port)
    if exact is not None:
        return exact if exact.is_tls else None
    return next((p for p in service.ports if p.is_tls), None)


def route_destinations(mesh: Mesh, route: dict, namespace: str) -> list[tuple[str, int]]:
    """(cluster, weight) of a tls or tcp route; a destination of weight 0 gets nothing (Istio)."""
    destinations = route["route"]
    if len(destinations) == 1:
        return [(destination_cluster(mesh, destinations[0]["destination"], namespace), 100)]
    return [(destination_cluster(mesh, d["destination"], namespace), d["weight"]) for d in destinations if d.get("weight")]


def tcp_destinations(mesh: Mesh, proxy: Proxy, hostname: str, port: int) -> list[tuple[str, int]]:
    """(cluster, weight) for a sidecar's connection to a service port: the first of the
    service's VirtualService's tcp routes that applies there (tcp_route_applies), else the
    service's own cluster."""
    virtual_service = mesh.sidecar_virtual_service_for(hostname, proxy.namespace)
    for route in (virtual_service.spec.get("tcp") or []) if virtual_service else []:
        if tcp_route_applies(route, proxy, sidecar_context(port), virtual_service.namespace):
            return route_destinations(mesh, route, virtual_service.namespace)
    return [(outbound_cluster_name(port, "", hostname), 100)]


def _names_for_service(sni_hosts: list[str], namespace: str, service: Service) -> list[str]:
    """The sniHosts of a match that name this service (its hostname, or under its wildcard)."""
    resolved = [resolve_host(name, namespace) for name in sni_hosts]
    return [name for name in resolved if host_matches(service.hostname, name) or host_matches(name, service.hostname)]


def tls_routes(mesh: Mesh, proxy: Proxy, service: Service, port: int) -> list[tuple[list[str], list[tuple[str, int]]]]:
    """(SNI names, weighted clusters) of the VirtualService's tls routes for a service port,
    in order: each match that applies to the port and to this proxy (l4_match_applies)."""
    virtual_service = mesh.sidecar_virtual_service_for(service.hostname, proxy.namespace)
    out = []
    for route in (virtual_service.spec.get("tls") or []) if virtual_service else []:
        for match in route["match"]:
            if not l4_match_applies(match, proxy, sidecar_context(port), virtual_service.namespace):
                continue
            names = _names_for_service(match["sniHosts"], virtual_service.namespace, service)
            if names:
                out.append((names, route_destinations(mesh, route, virtual_service.namespace)))
    return out


def outbound_tcp_proxy(mesh: Mesh, proxy: Proxy, stat_prefix: str, clusters: list[tuple[str, int]]) -> dict:
    """A tcp_proxy to clusters with the connection limits the proxy's DestinationRules give."""
    return tcp_proxy(stat_prefix, clusters, tcp_connection_limits(mesh, proxy, [name for name, dummy in clusters]))


def sni_chain(mesh: Mesh, proxy: Proxy, server_names: list[str] | None, clusters: list[tuple[str, int]]) -> dict:
    """A chain passing the TLS connection, untouched, to clusters; server_names None: any name."""
    chain: dict = {"filters": [outbound_tcp_proxy(mesh, proxy, clusters[0][0], clusters)]}
    if server_names is not None:
        chain["filter_chain_match"] = {"server_names": server_names}
    return chain


def service_tls_chains(mesh: Mesh, proxy: Proxy, service: Service, port: ServicePort, taken: set[str], by_name: bool = True) -> list[dict]:
    """The chains of one service port on a TLS listener (taken: names earlier chains match).
    by_name False: the last chain takes any name (a listener of the service's own VIP)."""
    chains = []
    for names, clusters in tls_routes(mesh, proxy, service, port.number):
        fresh = [name for name in dict.fromkeys(names) if name not in taken]
        taken.update(fresh)
        if fresh and clusters:
            chains.append(sni_chain(mesh, proxy, fresh, clusters))
    if not by_name or service.hostname not in taken:
        taken.add(service.hostname)
        chains.append(sni_chain(mesh, proxy, [service.hostname] if by_name else None, tcp_destinations(mesh, proxy, service.hostname, port.number)))
    return chains


def tls_listener_chains(mesh: Mesh, proxy: Proxy, services: list[Service], listener_port: int) -> list[dict]:
    """The chains of a TLS listener on listener_port for services (those with a TLS port)."""
    chains: list[dict] = []
    taken: set[str] = set()
    for service in services:
        port = tls_port_for_listener(service, listener_port)
        if port is not None:
            chains.extend(service_tls_chains(mesh, proxy, service, port, taken))
    return chains
