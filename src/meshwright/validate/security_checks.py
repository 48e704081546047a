"""Checks of the security API against the mesh: what needs workload identity has it, which
policy governs a workload is never ambiguous, port-level settings name ports that exist."""

from __future__ import annotations

from meshwright.compile.peer_authentication import selector_of
from meshwright.compile.scope import inbound_ports
from meshwright.model.mesh import ROOT_NAMESPACE, Mesh, labels_match
from meshwright.model.resource import Resource
from meshwright.validate.problems import Problems

IDENTITY_HINT = (
    "turn on workload identity with `certificates: {}` in the MeshConfig, and give every proxy "
    "its certificate from the mesh CA (docs/security.md)"
)
ISTIO_MUTUAL_FILES = ("clientCertificate", "privateKey", "caCertificates")
SOURCE_IDENTITY_FIELDS = ("principals", "notPrincipals", "namespaces", "notNamespaces")


def check_istio_mutual(mesh: Mesh, resource: Resource, path: tuple, tls: dict, problems: Problems) -> None:
    """A DestinationRule tls with mode ISTIO_MUTUAL (path: the tls mapping)."""
    if not mesh.settings.identity_enabled:
        problems.add(resource, path + ("mode",), f"ISTIO_MUTUAL needs workload certificates: {IDENTITY_HINT}")
    for field in ISTIO_MUTUAL_FILES:
        if field in tls:
            problems.add(resource, path + (field,), f"ISTIO_MUTUAL uses the proxy's certificate from the mesh CA: remove {field} (or use mode MUTUAL with your own files)")


def check_mesh_config_security(mesh: Mesh, resource: Resource, problems: Problems) -> None:
    if resource.spec.get("defaultMtlsMode") == "STRICT" and not mesh.settings.identity_enabled:
        problems.add(resource, ("spec", "defaultMtlsMode"), f"STRICT needs workload certificates: {IDENTITY_HINT}")


def selected_workloads(mesh: Mesh, policy: Resource) -> list[Resource]:
    """The WorkloadEntries a PeerAuthentication's selector picks in its namespace."""
    selector = selector_of(policy)
    return [w for w in mesh.of_kind("WorkloadEntry") if w.namespace == policy.namespace and selector is not None and labels_match(selector, w.spec.get("labels") or {})]


def _inbound_ports(mesh: Mesh, workload: Resource) -> frozenset[int]:
    return inbound_ports(mesh, workload.namespace, workload.spec.get("labels") or {}, f"{workload.name}.{workload.namespace}")


def check_peer_authentication(mesh: Mesh, resource: Resource, problems: Problems) -> None:
    spec = resource.spec
    modes = [(("spec", "mtls", "mode"), (spec.get("mtls") or {}).get("mode"))]
    modes += [(("spec", "portLevelMtls", port, "mode"), (settings or {}).get("mode")) for port, settings in (spec.get("portLevelMtls") or {}).items()]
    if not mesh.settings.identity_enabled:
        for path, mode in modes:
            if mode == "STRICT":
                problems.add(resource, path, f"STRICT needs workload certificates: {IDENTITY_HINT}")
    selector = selector_of(resource)
    if spec.get("portLevelMtls") and selector is None:
        problems.add(resource, ("spec", "portLevelMtls"), "portLevelMtls needs a selector: Istio applies port-level modes only to the workloads a policy selects")
    others = [p for p in mesh.of_kind("PeerAuthentication") if p.namespace == resource.namespace and p.name < resource.name]
    if selector is None:
        earlier = [p for p in others if selector_of(p) is None]
        if earlier:
            scope = "the mesh-wide" if resource.namespace == ROOT_NAMESPACE else f"namespace {resource.namespace}'s"
            problems.add(resource, ("metadata", "name"), f"{earlier[0].ref} is already {scope} PeerAuthentication (Istio applies only the oldest): merge them into one")
        return
    workloads = selected_workloads(mesh, resource)
    for workload in workloads:
        earlier = [p for p in others if selector_of(p) is not None and workload in selected_workloads(mesh, p)]
        if earlier:
            problems.add(resource, ("spec", "selector"), f"WorkloadEntry {workload.namespace}/{workload.name} is already selected by {earlier[0].ref} (Istio applies only the oldest): give each workload one PeerAuthentication")
    if workloads:
        ports = set().union(*(_inbound_ports(mesh, w) for w in workloads))
        for port in spec.get("portLevelMtls") or {}:
            if port not in ports:
                listed = ", ".join(str(p) for p in sorted(ports)) or "none"
                problems.add(resource, ("spec", "portLevelMtls", port), f"no workload this policy selects has an inbound port {port} (their inbound ports: {listed})")


def check_authorization_policy(mesh: Mesh, resource: Resource, problems: Problems) -> None:
    for index, rule in enumerate(resource.spec.get("rules") or []):
        path = ("spec", "rules", index)
        for from_index, entry in enumerate(rule.get("from") or []):
            source = entry["source"]
            for field in SOURCE_IDENTITY_FIELDS:
                if field in source and not mesh.settings.identity_enabled:
                    problems.add(resource, path + ("from", from_index, "source", field), f"{field} match the mTLS identity of the caller, which needs workload certificates: {IDENTITY_HINT}")
            for field in ("principals", "notPrincipals"):
                for value_index, value in enumerate(source.get(field) or []):
                    if value.startswith("spiffe://"):
                        problems.add(resource, path + ("from", from_index, "source", field, value_index), f"write principals without spiffe:// ({value[len('spiffe://'):]}), as Istio does")
        for to_index, entry in enumerate(rule.get("to") or []):
            for field in ("ports", "notPorts"):
                for value_index, value in enumerate(entry["operation"].get(field) or []):
                    if not 1 <= int(value) <= 65535:
                        problems.add(resource, path + ("to", to_index, "operation", field, value_index), f"{value} is not a port number (1 to 65535)")
        for when_index, condition in enumerate(rule.get("when") or []):
            key = condition["key"]
            if key.startswith("source.") and not mesh.settings.identity_enabled:
                problems.add(resource, path + ("when", when_index, "key"), f"{key} is the mTLS identity of the caller, which needs workload certificates: {IDENTITY_HINT}")
            if key == "destination.port":
                for field in ("values", "notValues"):
                    for value_index, value in enumerate(condition.get(field) or []):
                        if not value.isdigit() or not 1 <= int(value) <= 65535:
                            problems.add(resource, path + ("when", when_index, field, value_index), f"{value!r} is not a port number (1 to 65535)")


def check_security(mesh: Mesh, resource: Resource, problems: Problems) -> None:
    checks = {
        "MeshConfig": check_mesh_config_security,
        "PeerAuthentication": check_peer_authentication,
        "AuthorizationPolicy": check_authorization_policy,
    }
    if resource.kind in checks:
        checks[resource.kind](mesh, resource, problems)
