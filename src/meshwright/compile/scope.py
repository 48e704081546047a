"""What a proxy sees: its Sidecar resource and the services its egress hosts import."""

from __future__ import annotations

from meshwright.compile.proxy import INTERCEPTION_ANNOTATION, REDIRECT, Proxy
from meshwright.mesh import Mesh, host_matches, is_wildcard_host
from meshwright.model.resource import Resource
from meshwright.registry.model import Service


def sidecar_for(mesh: Mesh, proxy: Proxy) -> Resource | None:
    """The Sidecar of a proxy's workload."""
    return sidecar_for_workload(mesh, proxy.namespace, proxy.label_map)


def sidecar_for_workload(mesh: Mesh, namespace: str, labels: dict) -> Resource | None:
    """The Sidecar of a workload: one selecting it in its namespace, else the namespace's default."""
    candidates = mesh.selecting("Sidecar", namespace, labels) + mesh.without_selector("Sidecar", namespace)
    return candidates[0] if candidates else None


def workload_service_ports(mesh: Mesh, workload: str) -> list[tuple[int, str]]:
    """(port, protocol) a WorkloadEntry's app serves for the services that select it
    (workload: its name.namespace): each service port through the entry's named port or the
    targetPort, as Istio maps them. Where services share a port, the first by hostname names it."""

    return sorted(_service_ports_by_workload(mesh).get(workload, {}).items())


def _service_ports_by_workload(mesh: Mesh) -> dict[str, dict[int, str]]:
    """Workload (name.namespace) -> {port its app serves: protocol}, from one pass over the
    services in hostname order (the first service to claim a port names its protocol)."""

    def compute():
        index: dict[str, dict[int, str]] = {}
        for service in mesh.registry.sorted():
            for endpoint in service.endpoints:
                ports = index.setdefault(endpoint.workload, {})
                for port in service.ports:
                    ports.setdefault(endpoint.port_for(port), port.protocol)
        return index

    return mesh.memo(("service-ports-by-workload",), compute)


def inbound_ports(mesh: Mesh, namespace: str, labels: dict, workload: str) -> frozenset[int]:
    """Ports on which a workload's sidecar has an inbound listener: its Sidecar's ingress
    ports; with iptables capture and no Sidecar ingress, those of the services selecting it
    (compile/capture.py). workload: the WorkloadEntry's name.namespace ("" for none)."""

    def compute():
        sidecar = sidecar_for_workload(mesh, namespace, labels)
        ingress = frozenset(entry["port"]["number"] for entry in (sidecar.spec.get("ingress") or [])) if sidecar else frozenset()
        if ingress or not workload:
            return ingress
        name = workload.rsplit(".", 1)[0]
        entry = mesh.find("WorkloadEntry", namespace, name)
        if entry is None or entry.annotations.get(INTERCEPTION_ANNOTATION) != REDIRECT:
            return ingress
        return frozenset(port for port, dummy in workload_service_ports(mesh, workload))

    return mesh.memo(("inbound-ports", namespace, tuple(sorted(labels.items())), workload), compute)


def egress_host_matches(pattern: str, service: Service, proxy_namespace: str) -> bool:
    """Sidecar egress host "namespace/host": namespace "." (own), "*" (any) or a name."""
    namespace, host = pattern.split("/", 1)
    if namespace == ".":
        namespace = proxy_namespace
    if namespace not in ("*", service.namespace):
        return False
    return host_matches(host, service.hostname)


def services_for_hosts(mesh: Mesh, proxy: Proxy, hosts: list[str]) -> list[Service]:
    """The services egress hosts name, by hostname. A host without wildcard can only be the
    service of that name, so only wildcard hosts look through the whole registry."""
    chosen: set[str] = set()
    for pattern in hosts:
        host = pattern.split("/", 1)[1]
        if is_wildcard_host(host):
            candidates = list(mesh.registry.services.values())
        else:
            service = mesh.registry.get(host)
            candidates = [service] if service is not None else []
        chosen.update(s.hostname for s in candidates if egress_host_matches(pattern, s, proxy.namespace))
    return [mesh.registry.services[hostname] for hostname in sorted(chosen)]


def services_in_scope(mesh: Mesh, proxy: Proxy) -> list[Service]:
    """Every service when no Sidecar scopes the proxy; otherwise those of its egress hosts."""
    sidecar = sidecar_for(mesh, proxy)
    if sidecar is None or not sidecar.spec.get("egress"):
        return mesh.registry.sorted()
    hosts = [h for egress in sidecar.spec["egress"] for h in egress["hosts"]]
    return services_for_hosts(mesh, proxy, hosts)
