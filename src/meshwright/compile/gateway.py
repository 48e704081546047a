"""A gateway's listeners and route configurations, from its Gateways' servers and the
VirtualServices bound to them."""

from __future__ import annotations

from meshwright.compile.authorization import authorize_chain
from meshwright.compile.clusters import parse_outbound_cluster_name, service_clusters, tcp_connection_limits
from meshwright.compile.gateway_tls import server_tls_socket
from meshwright.compile.listeners import http_connection_manager, listener, tcp_proxy
from meshwright.compile.mtls import mesh_sni
from meshwright.compile.proxy import Proxy
from meshwright.compile.routes import (
    MESH_GATEWAY, RouteContext, destination_cluster, l4_match_applies, qualified_gateway, tcp_route_applies, virtual_service_routes, weighted_destinations,
)
from meshwright.compile.tls_routing import outbound_tcp_proxy, route_destinations, sni_chain
from meshwright.compile.virtual_hosts import route_configuration
from meshwright.mesh import Mesh, exported_to, host_matches
from meshwright.model.resource import Resource
from meshwright.registry.model import Service

GATEWAY = "GATEWAY"
AUTO_PASSTHROUGH = "AUTO_PASSTHROUGH"


def _gateway_virtual_services(mesh: Mesh, proxy: Proxy, gateway_id: str) -> list[Resource]:
    """The VirtualServices bound to a Gateway that are exported to the gateway proxy's namespace."""
    return [vs for vs in mesh.of_kind("VirtualService") if gateway_id in _bound_gateways(vs) and exported_to(vs, proxy.namespace)]


def _gateway_ids(names: list[str], namespace: str) -> list[str]:
    """"namespace/name" of every Gateway named (short names: in namespace); "mesh" left out."""
    return [qualified_gateway(g, namespace) for g in names if g != MESH_GATEWAY]


def _bound_gateways(virtual_service: Resource) -> list[str]:
    """The Gateways a VirtualService is bound to."""
    return _gateway_ids(virtual_service.spec.get("gateways") or [], virtual_service.namespace)


def _served_hosts(server_hosts: list[str], gateway_namespace: str, virtual_service: Resource, hosts: list[str] | None = None) -> list[str]:
    """The hosts a server serves for a VirtualService (Istio's server hosts "namespace/host":
    the namespace of the VirtualServices it accepts, "*" any, "." the Gateway's own). A VS host
    the server's pattern covers is served as is; a VS wildcard that covers a server host is
    narrowed to that host (a server never answers for more than its hosts). hosts: the names
    to serve (default: the VirtualService's hosts; a tls route's sniHosts)."""
    served = []
    for host in virtual_service.spec["hosts"] if hosts is None else hosts:
        for entry in server_hosts:
            namespace, pattern = entry.split("/", 1) if "/" in entry else ("*", entry)
            if namespace == ".":
                namespace = gateway_namespace
            if namespace not in ("*", virtual_service.namespace):
                continue
            if host_matches(pattern, host):
                served.append(host)
            elif host_matches(host, pattern):
                served.append(pattern)
    return list(dict.fromkeys(served))


def _virtual_hosts(mesh: Mesh, proxy: Proxy, gateway_id: str, server: dict) -> list[dict]:
    """One virtual host per served hostname, named "host:port" as Istio names them (what
    EnvoyFilter vhost matches use); the routes of every VirtualService serving a host, in
    mesh order."""
    port = server["port"]["number"]
    context = RouteContext(frozenset({gateway_id}), port, tls="mode" in (server.get("tls") or {}))
    routes_by_host: dict[str, list] = {}
    for virtual_service in _gateway_virtual_services(mesh, proxy, gateway_id):
        if not virtual_service.spec.get("http"):
            continue
        routes = virtual_service_routes(mesh, proxy, virtual_service, context)
        if not routes:
            continue  # no match applies here (port, gateways, source): Istio leaves the VirtualService out
        for index, hostname in enumerate(_served_hosts(server["hosts"], gateway_id.split("/")[0], virtual_service)):
            # Each host owns its routes: EnvoyFilter patches change one, not its siblings.
            routes_by_host.setdefault(hostname, []).extend(routes if index == 0 else virtual_service_routes(mesh, proxy, virtual_service, context))
    hosts = []
    for hostname in sorted(routes_by_host):
        host: dict = {"name": f"{hostname}:{port}", "domains": ["*"] if hostname == "*" else [hostname, f"{hostname}:{port}"],
                      "routes": routes_by_host[hostname]}
        if (server.get("tls") or {}).get("httpsRedirect"):
            host["require_tls"] = "ALL"
        hosts.append(host)
    return hosts


def _tcp_clusters(mesh: Mesh, proxy: Proxy, gateway_id: str, port: int) -> list[tuple[str, int]]:
    """The first tcp route of the VirtualServices bound to the gateway that applies on the
    server's port (its matches' port, gateways, sourceLabels and sourceNamespace)."""
    context = RouteContext(frozenset({gateway_id}), port)
    for virtual_service in _gateway_virtual_services(mesh, proxy, gateway_id):
        for route in virtual_service.spec.get("tcp") or []:
            if tcp_route_applies(route, proxy, context, virtual_service.namespace):
                return [(destination_cluster(mesh, entry["destination"], virtual_service.namespace), weight) for entry,
                        weight in weighted_destinations(route["route"])]
    return []


def _passthrough_chains(mesh: Mesh, proxy: Proxy, gateway_id: str, server: dict) -> list[dict]:
    """One chain per tls route match of the VirtualServices bound to the gateway (and exported
    to its proxy's namespace), for the sniHosts the server serves, passing the connection
    untouched to the route's backends."""
    number = server["port"]["number"]
    chains = []
    for virtual_service in _gateway_virtual_services(mesh, proxy, gateway_id):
        for route in virtual_service.spec.get("tls") or []:
            for match in route["match"]:
                if not l4_match_applies(match, proxy, RouteContext(frozenset({gateway_id}), number), virtual_service.namespace):
                    continue
                names = _served_hosts(server["hosts"], gateway_id.split("/")[0], virtual_service, match["sniHosts"])
                clusters = route_destinations(mesh, route, virtual_service.namespace)
                if names and clusters:
                    chains.append(sni_chain(mesh, proxy, names, clusters))
    return chains


def _covers_service(server: dict, gateway_namespace: str, service: Service) -> bool:
    """Whether a server's hosts ("namespace/host"; "." the Gateway's namespace, "*" any) take
    a service: its hostname under one of the host patterns, in that namespace."""
    for entry in server["hosts"]:
        namespace, pattern = entry.split("/", 1) if "/" in entry else ("*", entry)
        if namespace == ".":
            namespace = gateway_namespace
        if namespace in ("*", service.namespace) and host_matches(pattern, service.hostname):
            return True
    return False


def _auto_passthrough_servers(mesh: Mesh, proxy: Proxy) -> list[tuple[str, dict]]:
    """(gateway namespace, server) of every AUTO_PASSTHROUGH server the proxy serves."""
    servers = []
    for gateway_id in proxy.gateways:
        gateway = mesh.find("Gateway", *gateway_id.split("/"))
        servers += [(gateway.namespace, server) for server in gateway.spec["servers"] if (server.get("tls") or {}).get("mode") == AUTO_PASSTHROUGH]
    return servers


def _sni_clusters(mesh: Mesh, proxy: Proxy, service: Service) -> list[tuple[str, str]]:
    """(SNI, outbound cluster) for every port and subset of a service: the name Istio's
    clients send for mesh mTLS to that cluster (outbound_.PORT_.SUBSET_.HOST)."""
    clusters, dummy = service_clusters(mesh, proxy, service)
    return [(mesh_sni(*parse_outbound_cluster_name(c["name"])), c["name"]) for c in clusters]


def _auto_passthrough_chains(mesh: Mesh, proxy: Proxy, gateway_id: str, server: dict) -> list[dict]:
    """Istio's AUTO_PASSTHROUGH: no VirtualService; a connection whose SNI is the mesh's name
    of a service cluster (outbound_.PORT_.SUBSET_.HOST, what a client sidecar sends with
    mesh mTLS) goes, untouched, to that cluster's endpoints: the client completes mTLS with
    the backend's sidecar. One chain per name of the services the server's hosts cover (Istio
    sets the cluster from the SNI with the sni_cluster filter; exact names here leave every
    other name, and every other cluster of the gateway, unreachable)."""
    namespace = gateway_id.split("/")[0]
    chains = []
    for service in mesh.registry.sorted():
        if not _covers_service(server, namespace, service):
            continue
        for sni, outbound in _sni_clusters(mesh, proxy, service):
            chains.append({"filter_chain_match": {"server_names": [sni]},
                           "filters": [tcp_proxy(sni, [(sni, 100)], tcp_connection_limits(mesh, proxy, [outbound]))]})
    return chains


def sni_dnat_clusters(mesh: Mesh, proxy: Proxy, service: Service, clusters: list[dict], assignments: list[dict]) -> tuple[list[dict], list[dict]]:
    """The clusters AUTO_PASSTHROUGH chains send to (Istio's SNI-DNAT clusters), for a
    service some AUTO_PASSTHROUGH server of the gateway covers: each of its clusters renamed
    outbound_.PORT_.SUBSET_.HOST, with the same endpoints and policy but no TLS of its own
    (the client's TLS passes through to the backend)."""
    if not any(_covers_service(server, namespace, service) for namespace, server in _auto_passthrough_servers(mesh, proxy)):
        return [], []
    names = dict((outbound, sni) for sni, outbound in _sni_clusters(mesh, proxy, service))
    renamed = []
    for cluster in clusters:
        copy = {key: value for key, value in cluster.items() if key not in ("transport_socket", "transport_socket_matches")}
        copy["name"] = names[cluster["name"]]
        if "eds_cluster_config" in copy:
            copy["eds_cluster_config"] = {**copy["eds_cluster_config"], "service_name": copy["name"]}
        if "load_assignment" in copy:
            copy["load_assignment"] = {**copy["load_assignment"], "cluster_name": copy["name"]}
        renamed.append(copy)
    return renamed, [{**a, "cluster_name": names[a["cluster_name"]]} for a in assignments]


def _server_names(server: dict) -> list[str]:
    """The SNI names that pick a TLS-terminating server: its hosts ("*": any)."""
    return sorted(h.split("/")[-1] for h in server["hosts"] if h.split("/")[-1] != "*")


def _terminating_chain(mesh: Mesh, proxy: Proxy, gateway_id: str, server: dict, routes: list) -> dict | None:
    """The chain of a server that is plain or terminates TLS: HTTP routes or TCP routes
    (protocol TCP, or TLS terminated), None when it has nothing to serve or when it shares
    the route configuration of an earlier server (its virtual hosts join that one's)."""
    namespace, name = gateway_id.split("/")
    port, tls = server["port"], server.get("tls") or {}
    number = port["number"]
    if port["protocol"] in ("TCP", "TLS"):
        clusters = _tcp_clusters(mesh, proxy, gateway_id, number)
        if not clusters:
            return None
        chain: dict = {"filters": [outbound_tcp_proxy(mesh, proxy, f"gateway_{number}", clusters)]}
    else:
        route_name = f"https.{number}.{server.get('name') or port['name']}.{name}.{namespace}" if "mode" in tls else f"http.{number}"
        existing = next((r for r in routes if r["name"] == route_name), None)
        if existing is not None:
            existing["virtual_hosts"] += _virtual_hosts(mesh, proxy, gateway_id, server)
            return None
        routes.append(route_configuration(route_name, _virtual_hosts(mesh, proxy, gateway_id, server), mesh))
        chain = {"filters": [http_connection_manager(f"gateway_{number}", route_name, gateway=True)]}
    if "mode" in tls:
        chain["transport_socket"] = server_tls_socket(tls, http=port["protocol"] != "TLS", credentials_dir=mesh.settings.credentials_dir)
        if _server_names(server):
            chain["filter_chain_match"] = {"server_names": _server_names(server)}
    return chain


def _without_taken_names(chains: list[dict], taken: set) -> list[dict]:
    """chains less the SNI names earlier chains of the listener match (the first server or
    route to name a host wins; Envoy refuses two chains with the same match); a chain left
    with no name goes, and only the first chain without names stays."""
    kept = []
    for chain in chains:
        names = (chain.get("filter_chain_match") or {}).get("server_names")
        if names is None:
            if None not in taken:
                taken.add(None)
                kept.append(chain)
            continue
        fresh = [n for n in names if n not in taken]
        if fresh:
            taken.update(fresh)
            kept.append({**chain, "filter_chain_match": {**chain["filter_chain_match"], "server_names": fresh}})
    return kept


def gateway_listeners(mesh: Mesh, proxy: Proxy) -> tuple[list, list]:
    """(listeners, route configs): one listener per bind address and port, a filter chain per
    TLS server (selected by SNI) or per passthrough route, or one plain chain."""
    chains_by_address: dict[tuple[str, int], list] = {}
    taken_by_address: dict[tuple[str, int], set] = {}
    routes: list = []
    for gateway_id in proxy.gateways:
        gateway = mesh.find("Gateway", *gateway_id.split("/"))
        for server in gateway.spec["servers"]:
            address = (server.get("bind", "0.0.0.0"), server["port"]["number"])
            mode = (server.get("tls") or {}).get("mode")
            if mode == "PASSTHROUGH":
                chains = _passthrough_chains(mesh, proxy, gateway_id, server)
            elif mode == AUTO_PASSTHROUGH:
                chains = _auto_passthrough_chains(mesh, proxy, gateway_id, server)
            else:
                chain = _terminating_chain(mesh, proxy, gateway_id, server, routes)
                chains = [chain] if chain is not None else []
            for chain in _without_taken_names(chains, taken_by_address.setdefault(address, set())):
                chains_by_address.setdefault(address, []).append(authorize_chain(mesh, proxy.namespace, proxy.labels, chain))
    listeners = [listener(bind, number, chains, "OUTBOUND") for (bind, number), chains in sorted(chains_by_address.items())]
    return listeners, routes
