"""Virtual hosts: which VirtualService routes a host, and the domains a host answers to."""

from __future__ import annotations

from meshwright.compile.proxy import Proxy
from meshwright.compile.envoy_values import DIRECT_RESPONSE_MAX_BYTES, ENVOY_DIRECT_RESPONSE_BODY_BYTES
from meshwright.compile.routes import default_route, sidecar_context, virtual_service_routes
from meshwright.mesh import CLUSTER_DOMAIN, Mesh, rule_selector
from meshwright.model.resource import Resource
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
    """The virtual hosts of an outbound HTTP listener, one per service it serves; a domain an
    earlier service took is left out of a later one's."""
    hosts, taken = [], set()
    for service in services:
        port = http_port_for_listener(service, listener_port)
        if port is None:
            continue
        host = outbound_virtual_host(mesh, proxy, service, port, listener_port)
        if not taken.isdisjoint(host["domains"]):
            host = {**host, "domains": [d for d in host["domains"] if d not in taken]}
        taken.update(host["domains"])
        hosts.append(host)
    return hosts


def outbound_virtual_host(mesh: Mesh, proxy: Proxy, service: Service, port: ServicePort, listener_port: int) -> dict:
    """A service's virtual host, built once per mesh for what it reads of the proxy: whether
    the proxy shares the service's namespace (the short name), the labels its VirtualService's
    sourceLabels name and the labels DestinationRules' workloadSelectors name, and the proxy's
    namespace where DestinationRules (in several namespaces, exported to some, or selecting
    clients) make the rule (its consistent hash) depend on it or the VirtualService matches on
    sourceNamespace. Shared: never changed."""
    virtual_service = mesh.sidecar_virtual_service_for(service.hostname, proxy.namespace)
    label_keys = _source_label_keys(virtual_service) if virtual_service else frozenset()
    rule_label_keys = _rule_selector_keys(mesh)
    reads_namespace = _rules_depend_on_namespace(mesh) or (virtual_service is not None and _matches_source_namespace(virtual_service))
    key = (
        # Which VirtualService (exportTo may show proxies of different namespaces different ones).
        "outbound-virtual-host", service.hostname, virtual_service.key if virtual_service else None,
        port.number, listener_port, service.namespace == proxy.namespace,
        proxy.namespace if reads_namespace else None,
        tuple((k, v) for k, v in proxy.labels if k in label_keys or k in rule_label_keys),
    )

    def build() -> dict:
        # A VirtualService with only tcp or tls routes, or none that apply to this proxy on
        # this port, leaves the service's port to its default route, as in Istio.
        routes = virtual_service_routes(mesh, proxy, virtual_service, sidecar_context(port.number)) if virtual_service else []
        if not routes:
            routes = [default_route(mesh, proxy, service, port)]
        return {"name": f"{service.hostname}:{port.number}", "domains": service_domains(service, port, proxy, listener_port), "routes": routes}

    return mesh.memo(key, build)


def _source_label_keys(virtual_service: Resource) -> frozenset[str]:
    return frozenset(key for http in virtual_service.spec.get("http") or [] for match in http.get("match") or [] for key in match.get("sourceLabels") or {})


def _matches_source_namespace(virtual_service: Resource) -> bool:
    return any("sourceNamespace" in match for http in virtual_service.spec.get("http") or [] for match in http.get("match") or [])


def _rules_depend_on_namespace(mesh: Mesh) -> bool:
    """Whether the DestinationRule a client gets may depend on its namespace: some host has
    rules in several namespaces, or a rule is exported to some namespaces only, or selects
    clients (Mesh.destination_rule_for)."""
    return mesh.memo(("rules-depend-on-namespace",), lambda: any(
        len({rule.namespace for rule in rules}) > 1 for rules in mesh.destination_rules_by_host.values()
    ) or any("exportTo" in rule.spec or "workloadSelector" in rule.spec for rule in mesh.of_kind("DestinationRule")))


def _rule_selector_keys(mesh: Mesh) -> frozenset[str]:
    """The label keys DestinationRules' workloadSelectors name."""
    return mesh.memo(("rule-selector-keys",), lambda: frozenset(
        key for rule in mesh.of_kind("DestinationRule") for key in (rule_selector(rule) or {})
    ))


def route_configuration(name: str, virtual_hosts: list[dict], mesh: Mesh | None = None) -> dict:
    """mesh: the mesh whose VirtualServices the virtual hosts route (None: routes of none);
    where one of them answers with a body larger than Envoy's default limit, the limit is
    Istio's (1 MB)."""
    out = {"name": name, "virtual_hosts": virtual_hosts, "validate_clusters": False}
    if mesh is not None and _large_direct_response(mesh):
        out["max_direct_response_body_size_bytes"] = DIRECT_RESPONSE_MAX_BYTES
    return out


def _large_direct_response(mesh: Mesh) -> bool:
    """Whether a VirtualService of the mesh answers with a body larger than Envoy's default limit."""

    def body_bytes(body: dict) -> int:
        return len(body["string"].encode()) if "string" in body else len(body.get("bytes", "")) * 3 // 4

    return mesh.memo(("large-direct-response",), lambda: any(
        body_bytes((http.get("directResponse") or {}).get("body") or {}) > ENVOY_DIRECT_RESPONSE_BODY_BYTES
        for virtual_service in mesh.of_kind("VirtualService") for http in virtual_service.spec.get("http") or []
    ))
