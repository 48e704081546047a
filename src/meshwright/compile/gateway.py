"""A gateway's listeners and route configurations, from its Gateways' servers and the
VirtualServices bound to them."""

from __future__ import annotations

from meshwright.compile.authorization import authorize_chain
from meshwright.compile.listeners import downstream_tls, http_connection_manager, listener, tcp_proxy
from meshwright.compile.proxy import Proxy
from meshwright.compile.routes import MESH_GATEWAY, RouteContext, destination_cluster, qualified_gateway, virtual_service_routes
from meshwright.compile.virtual_hosts import route_configuration
from meshwright.mesh import Mesh, exported_to, host_matches
from meshwright.model.resource import Resource

GATEWAY = "GATEWAY"


def _gateway_virtual_services(mesh: Mesh, proxy: Proxy, gateway_id: str) -> list[Resource]:
    """The VirtualServices bound to a Gateway that are exported to the gateway proxy's namespace."""
    return [vs for vs in mesh.of_kind("VirtualService") if gateway_id in _bound_gateways(vs) and exported_to(vs, proxy.namespace)]


def _bound_gateways(virtual_service: Resource) -> list[str]:
    """"namespace/name" of every Gateway a VirtualService names (short names: its namespace)."""
    return [qualified_gateway(g, virtual_service.namespace) for g in virtual_service.spec.get("gateways") or [] if g != MESH_GATEWAY]


def _served_hosts(server_hosts: list[str], gateway_namespace: str, virtual_service: Resource) -> list[str]:
    """The hosts a server serves for a VirtualService (Istio's server hosts "namespace/host":
    the namespace of the VirtualServices it accepts, "*" any, "." the Gateway's own). A VS host
    the server's pattern covers is served as is; a VS wildcard that covers a server host is
    narrowed to that host (a server never answers for more than its hosts)."""
    served = []
    for host in virtual_service.spec["hosts"]:
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
    context = RouteContext(frozenset({gateway_id}), port, tls=(server.get("tls") or {}).get("mode") in ("SIMPLE", "MUTUAL"))
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
        host: dict = {"name": f"{hostname}:{port}", "domains": ["*"] if hostname == "*" else [hostname, f"{hostname}:{port}"], "routes": routes_by_host[hostname]}
        if (server.get("tls") or {}).get("httpsRedirect"):
            host["require_tls"] = "ALL"
        hosts.append(host)
    return hosts


def _tcp_clusters(mesh: Mesh, proxy: Proxy, gateway_id: str, port: int) -> list[tuple[str, int]]:
    for virtual_service in _gateway_virtual_services(mesh, proxy, gateway_id):
        for route in virtual_service.spec.get("tcp") or []:
            ports = [m["port"] for m in route.get("match") or [] if "port" in m]
            if not ports or port in ports:
                return [(destination_cluster(mesh, d["destination"], virtual_service.namespace), d.get("weight", 100)) for d in route["route"]]
    return []


def gateway_listeners(mesh: Mesh, proxy: Proxy) -> tuple[list, list]:
    """(listeners, route configs): one listener per bind address and port, a filter chain per
    TLS server (selected by SNI) or one plain chain."""
    chains_by_address: dict[tuple[str, int], list] = {}
    routes = []
    for gateway_id in proxy.gateways:
        namespace, name = gateway_id.split("/")
        gateway = mesh.find("Gateway", namespace, name)
        for index, server in enumerate(gateway.spec["servers"]):
            port = server["port"]
            number = port["number"]
            bind = server.get("bind", "0.0.0.0")
            tls = server.get("tls") or {}
            terminates_tls = tls.get("mode") in ("SIMPLE", "MUTUAL")
            if port["protocol"] == "TCP":
                clusters = _tcp_clusters(mesh, proxy, gateway_id, number)
                if not clusters:
                    continue
                chain = {"filters": [tcp_proxy(f"gateway_{number}", clusters)]}
            else:
                route_name = f"https.{number}.{server.get('name') or port['name']}.{name}.{namespace}" if terminates_tls else f"http.{number}"
                existing = next((r for r in routes if r["name"] == route_name), None)
                if existing is None:
                    routes.append(route_configuration(route_name, _virtual_hosts(mesh, proxy, gateway_id, server), mesh))
                else:
                    existing["virtual_hosts"] += _virtual_hosts(mesh, proxy, gateway_id, server)
                    continue
                chain = {"filters": [http_connection_manager(f"gateway_{number}", route_name, gateway=True)]}
            if terminates_tls:
                chain["transport_socket"] = downstream_tls(tls)
                sni = sorted(h.split("/")[-1] for h in server["hosts"] if h.split("/")[-1] != "*")
                if sni:
                    chain["filter_chain_match"] = {"server_names": sni}
            chains_by_address.setdefault((bind, number), []).append(authorize_chain(mesh, proxy.namespace, proxy.labels, chain))
    listeners = [listener(bind, number, chains, "OUTBOUND") for (bind, number), chains in sorted(chains_by_address.items())]
    return listeners, routes
