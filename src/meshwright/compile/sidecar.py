"""A sidecar's listeners and route configurations (captureMode NONE: explicit listeners).

Inbound: one listener per Sidecar ingress entry, forwarding to the local app (its
defaultEndpoint). Outbound: one listener per Sidecar egress entry with a port; without such
an entry, an HTTP listener on 127.0.0.1:15001 that routes every service in scope by Host.
"""

from __future__ import annotations

from meshwright.compile.authorization import authorize_chain
from meshwright.compile.clusters import inbound_cluster_name, static_cluster
from meshwright.compile.listeners import http_connection_manager, listener, tcp_proxy
from meshwright.compile.mtls import inbound_filter_chains
from meshwright.compile.peer_authentication import mtls_mode
from meshwright.compile.proxy import OUTBOUND_PORT, Proxy
from meshwright.compile.routes import destination_cluster
from meshwright.compile.scope import services_for_hosts, services_in_scope, sidecar_for
from meshwright.compile.tls_routing import outbound_tcp_proxy, tcp_destinations, tls_listener_chains
from meshwright.compile.virtual_hosts import outbound_virtual_hosts, route_configuration
from meshwright.mesh import Mesh
from meshwright.registry.model import TLS_PROTOCOLS

INBOUND, OUTBOUND = "SIDECAR_INBOUND", "SIDECAR_OUTBOUND"


def inbound_entries(mesh: Mesh, proxy: Proxy) -> list[tuple[dict, list, list, list]]:
    """Per Sidecar ingress entry: (entry, filter chains, route configs, clusters)."""
    out = []
    sidecar = sidecar_for(mesh, proxy)
    for entry in (sidecar.spec.get("ingress") or []) if sidecar else []:
        port = entry["port"]
        app_address, app_port = entry["defaultEndpoint"].rsplit(":", 1)
        out.append((entry, *inbound_port(mesh, proxy, port["number"], port["protocol"], app_address.strip("[]"), int(app_port))))
    return out


def inbound_port(mesh: Mesh, proxy: Proxy, number: int, protocol: str, app_address: str, app_port: int) -> tuple[list, list, list]:
    """(filter chains, route configs, clusters) for traffic to port `number` of the workload,
    handed to its app at app_address:app_port under the workload's mTLS and authorization."""
    cluster = inbound_cluster_name(number)
    clusters = [static_cluster(cluster, app_address, app_port, http2=protocol in ("HTTP2", "GRPC"))]
    routes = []
    if protocol in ("HTTP", "HTTP2", "GRPC"):
        route_name = f"inbound|{number}||"
        routes.append(route_configuration(route_name, [{
            "name": f"inbound|http|{number}",
            "domains": ["*"],
            "routes": [{"name": "default", "match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "0s"}}],
        }]))
        chain = {"filters": [http_connection_manager(f"inbound_{number}", route_name)]}
    else:
        chain = {"filters": [tcp_proxy(f"inbound_{number}", [(cluster, 100)])]}
    chain = authorize_chain(mesh, proxy.namespace, proxy.labels, chain)
    mode = mtls_mode(mesh, proxy.namespace, proxy.labels, number)
    return inbound_filter_chains(mode, chain), routes, clusters


def inbound(mesh: Mesh, proxy: Proxy) -> tuple[list, list, list]:
    """(listeners, route configs, clusters) for the Sidecar's ingress entries."""
    listeners, routes, clusters = [], [], []
    for entry, chains, entry_routes, entry_clusters in inbound_entries(mesh, proxy):
        routes.extend(entry_routes)
        clusters.extend(entry_clusters)
        listeners.append(listener(entry.get("bind", "0.0.0.0"), entry["port"]["number"], chains, "INBOUND"))
    return listeners, routes, clusters


def egress_proxy_cluster(mesh: Mesh, proxy: Proxy) -> str | None:
    """The cluster of the proxy's Sidecar's outboundTrafficPolicy.egressProxy: where its
    traffic to destinations the mesh does not know goes (validation allows it with ALLOW_ANY
    only, as Istio); None without one."""
    sidecar = sidecar_for(mesh, proxy)
    egress_proxy = (sidecar.spec.get("outboundTrafficPolicy") or {}).get("egressProxy") if sidecar else None
    return destination_cluster(mesh, egress_proxy, sidecar.namespace) if egress_proxy else None


def egress_proxy_virtual_host(cluster: str) -> dict:
    """Istio's last virtual host under ALLOW_ANY, sending unknown Host names to a cluster."""
    return {"name": "allow_any", "domains": ["*"], "routes": [{"name": "allow_any", "match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "0s"}}]}


def _with_egress_proxy(virtual_hosts: list[dict], cluster: str | None) -> list[dict]:
    """Explicit HTTP listeners answer an unknown Host with 404, but with an egressProxy: it
    gets the request."""
    return virtual_hosts + [egress_proxy_virtual_host(cluster)] if cluster else virtual_hosts


def outbound(mesh: Mesh, proxy: Proxy) -> tuple[list, list]:
    """(listeners, route configs) for outbound traffic."""
    sidecar = sidecar_for(mesh, proxy)
    explicit = [e for e in (sidecar.spec.get("egress") or []) if "port" in e] if sidecar else []
    egress_proxy = egress_proxy_cluster(mesh, proxy)
    listeners, routes = [], []
    if not explicit:
        port = proxy.port(OUTBOUND_PORT)
        name = str(port)
        routes.append(route_configuration(name, _with_egress_proxy(outbound_virtual_hosts(mesh, proxy, services_in_scope(mesh, proxy), port), egress_proxy),
                                          mesh))
        chain = {"filters": [http_connection_manager(f"outbound_{port}", name)]}
        listeners.append(listener("127.0.0.1", port, [chain], "OUTBOUND"))
    for entry in explicit:
        number = entry["port"]["number"]
        bind = entry.get("bind", "127.0.0.1")
        services = services_for_hosts(mesh, proxy, entry["hosts"])
        if entry["port"]["protocol"] in ("HTTP", "HTTP2", "GRPC"):
            name = str(number)
            routes.append(route_configuration(name, _with_egress_proxy(outbound_virtual_hosts(mesh, proxy, services, number), egress_proxy), mesh))
            chains = [{"filters": [http_connection_manager(f"outbound_{number}", name)]}]
        elif entry["port"]["protocol"] in TLS_PROTOCOLS:
            chains = tls_listener_chains(mesh, proxy, services, number)
            if egress_proxy:
                # A name no chain takes goes to the egress proxy instead of being closed.
                chains.append({"filters": [outbound_tcp_proxy(mesh, proxy, egress_proxy, [(egress_proxy, 100)])]})
        else:
            # A TCP listener has no Host header: it carries the one service its hosts name.
            service = services[0]
            port = service.port(number) or service.ports[0]
            chains = [{"filters": [outbound_tcp_proxy(mesh, proxy, f"outbound_{number}", tcp_destinations(mesh, proxy, service.hostname, port.number))]}]
        listeners.append(listener(bind, number, chains, "OUTBOUND"))
    return listeners, routes
