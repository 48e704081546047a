"""Virtual hosts: which VirtualService routes a host, and the domains a host answers to."""

from __future__ import annotations

from meshwright.compile.proxy import Proxy
from meshwright.compile.routes import default_route, virtual_service_routes
from meshwright.mesh import CLUSTER_DOMAIN, Mesh
from meshwright.registry.model import Service, ServicePort


def service_names(service: Service, client_namespace: str) -> list[str]:
    """Names a client in client_namespace may call this service by, as Kubernetes DNS search
    paths give them: the FQDN; for <name>.<namespace>.svc.cluster.local hosts also
    <name>.<namespace>.svc and <name>.<namespace>, and <name> alone in the same namespace."""
    names = [service.hostname]
    suffix = f".{service.namespace}.{CLUSTER_DOMAIN}"
    if service.hostname.endswith(suffix):
        short = service.hostname[: -len(suffix)]
        names += [f"{short}.{service.namespace}.svc", f"{short}.{service.namespace}"]
        if service.namespace == client_namespace:
            names.append(short)
    return names


def service_domains(service: Service, port: ServicePort, proxy: Proxy, listener_port: int) -> list[str]:
    """Names a client may put in Host for this service: its names (service_names), each also
    with the port."""
    domains = []
    for name in service_names(service, proxy.namespace):
        domains.append(name)
        domains.append(f"{name}:{port.number}")
        if listener_port != port.number:
            domains.append(f"{name}:{listener_port}")
    return domains


def http_port_for_listener(service: Service, listener_port: int) -> ServicePort | None:
    """The service port an HTTP listener serves: same number if the service has it, else its
    first HTTP port (explicit listeners of captureMode NONE sit on local port numbers)."""
    exact = service.port(listener_port)
    if exact is not None:
        return exact if exact.is_http else None
    return next((p for p in service.ports if p.is_http), None)


def outbound_virtual_hosts(mesh: Mesh, proxy: Proxy, services: list[Service], listener_port: int) -> list[dict]:
    hosts, taken = [], set()
    for service in services:
        port = http_port_for_listener(service, listener_port)
        if port is None:
            continue
        domains = [d for d in service_domains(service, port, proxy, listener_port) if d not in taken]
        taken.update(domains)
        virtual_service = mesh.sidecar_virtual_service_for(service.hostname)
        # A VirtualService with only tcp or tls routes leaves the service's HTTP ports to
        # their default route, as in Istio.
        if virtual_service and virtual_service.spec.get("http"):
            routes = virtual_service_routes(mesh, proxy, virtual_service)
        else:
            routes = [default_route(mesh, proxy, service, port)]
        hosts.append({"name": f"{service.hostname}:{port.number}", "domains": domains, "routes": routes})
    return hosts


def route_configuration(name: str, virtual_hosts: list[dict]) -> dict:
    return {"name": name, "virtual_hosts": virtual_hosts, "validate_clusters": False}
