"""Checks of the security API against the mesh: what needs workload identity has it, which
policy governs a workload is never ambiguous, port-level settings name ports that exist."""

from __future__ import annotations

import json
import re

from meshwright import names
from meshwright.compile.authorization import is_mesh_trust_domain, principal_trust_domain
from meshwright.compile.ext_authz import is_grpc_provider, provider_service, provider_spec
from meshwright.model.providers import EXT_AUTHZ_GRPC
from meshwright.registry.model import HTTP_PROTOCOLS
from meshwright.compile.request_authentication import FILE_SCHEME, policies_of_kind
from meshwright.compile.peer_authentication import STRICT, mtls_mode, selector_of
from meshwright.compile.proxy import INTERCEPTION_ANNOTATION, REDIRECT, list_proxies
from meshwright.compile.scope import inbound_ports, sidecar_for_workload, workload_service_ports
from meshwright.mesh import ROOT_NAMESPACE, Mesh, labels_match
from meshwright.model.resource import Resource
from meshwright.problems import Problems
from meshwright.validate.security_api import (IP_BLOCK_HELP, IP_CONDITION_KEYS, NAMESPACE_VALUE_HELP, SERVICE_ACCOUNT_HELP, is_ip_block,
                                              is_namespace_value, is_service_account_value)

IDENTITY_HINT = (
    "turn on workload identity with `certificates: {}` in the MeshConfig, and give every proxy "
    "its certificate from the mesh CA (docs/security.md)"
)
ISTIO_MUTUAL_FILES = ("clientCertificate", "privateKey", "caCertificates")
SOURCE_IDENTITY_FIELDS = ("principals", "notPrincipals", "namespaces", "notNamespaces", "serviceAccounts", "notServiceAccounts")
IDENTITY_CONDITION_KEYS = ("source.principal", "source.namespace", "source.serviceAccount")
# Kinds whose selector in the root namespace picks workloads of every namespace (Istio's).
MESH_WIDE_SELECTOR_KINDS = ("AuthorizationPolicy", "RequestAuthentication")
REQUEST_PRINCIPAL_HELP = "a request principal: ISSUER/SUBJECT (the token's iss and sub claims), '*', or one with a leading or trailing '*'"


def check_istio_mutual(mesh: Mesh, resource: Resource, path: tuple, tls: dict, problems: Problems) -> None:
    """A DestinationRule tls with mode ISTIO_MUTUAL (path: the tls mapping)."""
    if not mesh.settings.identity_enabled:
        problems.add(resource, path + ("mode",), f"ISTIO_MUTUAL needs workload certificates: {IDENTITY_HINT}")
    for field in ISTIO_MUTUAL_FILES:
        if field in tls:
            problems.add(resource, path + (field,), f"ISTIO_MUTUAL uses the proxy's certificate from the mesh CA: remove {field} (or use mode MUTUAL "
                                                    "with your own files)")


def check_mesh_config_security(mesh: Mesh, resource: Resource, problems: Problems) -> None:
    if resource.spec.get("defaultMtlsMode") == "STRICT" and not mesh.settings.identity_enabled:
        problems.add(resource, ("spec", "defaultMtlsMode"), f"STRICT needs workload certificates: {IDENTITY_HINT}")


def selected_workloads(mesh: Mesh, policy: Resource) -> list[Resource]:
    """The WorkloadEntries a PeerAuthentication's selector picks in its namespace."""
    selector = selector_of(policy)
    return mesh.selected_workloads(policy.namespace, selector) if selector is not None else []


def first_selecting_policy(mesh: Mesh, workload: Resource) -> Resource | None:
    """The first PeerAuthentication by name whose selector picks a workload (Istio applies it)."""

    def compute():
        first: dict[int, Resource] = {}
        for policy in mesh.of_kind("PeerAuthentication"):
            for selected in selected_workloads(mesh, policy):
                first.setdefault(id(selected), policy)
        return first

    return mesh.memo(("first-selecting-peer-authentication",), compute).get(id(workload))


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
        problems.add(resource, ("spec", "portLevelMtls"), "portLevelMtls needs a selector: Istio applies port-level modes only to the workloads a "
                                                          "policy selects")
    if selector is None:
        earlier = [p for p in mesh.without_selector("PeerAuthentication", resource.namespace) if p.name < resource.name]
        if earlier:
            scope = "the mesh-wide" if resource.namespace == ROOT_NAMESPACE else f"namespace {resource.namespace}'s"
            problems.add(resource, ("metadata", "name"), f"{earlier[0].ref} is already {scope} PeerAuthentication (Istio applies only the oldest): "
                                                         "merge them into one")
        return
    workloads = selected_workloads(mesh, resource)
    for workload in workloads:
        first = first_selecting_policy(mesh, workload)
        if first is not resource:
            problems.add(resource, ("spec", "selector"), f"WorkloadEntry {workload.namespace}/{workload.name} is already selected by {first.ref} "
                                                         "(Istio applies only the oldest): give each workload one PeerAuthentication")
    if workloads:
        ports = set().union(*(_inbound_ports(mesh, w) for w in workloads))
        for port in spec.get("portLevelMtls") or {}:
            if port not in ports:
                listed = ", ".join(str(p) for p in sorted(ports)) or "none"
                problems.add(resource, ("spec", "portLevelMtls", port), f"no workload this policy selects has an inbound port {port} (their inbound "
                                                                        f"ports: {listed})")


def check_principal_trust_domain(mesh: Mesh, resource: Resource, path: tuple, principal: str, problems: Problems) -> None:
    """A principal in a trust domain that is not the mesh's (nor cluster.local, nor an alias)
    matches only callers with certificates from another mesh: legal, but likely a mistake."""
    trust_domain = principal_trust_domain(principal)
    if trust_domain is not None and not is_mesh_trust_domain(trust_domain, mesh.settings.trust_domains):
        known = ", ".join(dict.fromkeys(("cluster.local",) + mesh.settings.trust_domains))
        problems.warn(resource, path, (
            f"principal {principal} is in trust domain {trust_domain}, which is not this mesh's ({known}): "
            "it matches only callers from that trust domain; if it is a former name of this mesh, add it to the MeshConfig's trustDomainAliases"
        ))


def check_host_ports(resource: Resource, path: tuple, operation: dict, problems: Problems) -> None:
    """Istio matches hosts exactly as written, port included: a host that a DENY policy lists
    (or an ALLOW policy excludes) without a port lets "host:port" through. Legal; warned."""
    field = "hosts" if resource.spec.get("action", "ALLOW") == "DENY" else "notHosts"
    for value_index, value in enumerate(operation.get(field) or []):
        if ":" not in value and not value.endswith("*"):
            # A leading "*" is a suffix match: "*.example.org:*" would be a literal suffix.
            fix = f"add '{value}:PORT' for each port clients use" if value.startswith("*") else f"add '{value}:*' to match it on every port"
            problems.warn(resource, path + (field, value_index), (
                f"{value} matches only a Host header without a port (Istio compares hosts as written): "
                f"a request for {value}:PORT is not matched; {fix}"
            ))


def check_values(resource: Resource, path: tuple, values: list, valid, help_text: str, problems: Problems) -> None:
    for value_index, value in enumerate(values or []):
        if not valid(value):
            problems.add(resource, path + (value_index,), f"{value!r} is not {help_text}")


def jwt_field_path(rule: dict) -> tuple | None:
    """The path (in the rule) of its first field that reads the request's JWT, or None."""
    for from_index, entry in enumerate(rule.get("from") or []):
        for field in ("requestPrincipals", "notRequestPrincipals"):
            if field in entry["source"]:
                return ("from", from_index, "source", field)
    for when_index, condition in enumerate(rule.get("when") or []):
        if condition["key"].startswith("request.auth."):
            return ("when", when_index, "key")
    return None


def check_jwt_fields_have_a_token(mesh: Mesh, resource: Resource, problems: Problems) -> None:
    """Request principals and request.auth.* read the JWT a RequestAuthentication validates:
    on a workload that none applies to, no request has one (legal, as in Istio; warned)."""
    paths = [(index, jwt_field_path(rule)) for index, rule in enumerate(resource.spec.get("rules") or [])]
    paths = [(index, path) for index, path in paths if path is not None]
    if not paths:
        return
    for workload in _candidate_workloads(mesh, resource):
        labels = _workload_labels(workload)
        # (a pure client, without inbound listener, is reached by no request)
        if _applies_to(mesh, resource, workload) and bypassed_ports(mesh, workload)[0] and not policies_of_kind(mesh, "RequestAuthentication",
                                                                                                                workload.namespace, labels):
            index, path = paths[0]
            problems.warn(resource, ("spec", "rules", index) + path, (
                f"no RequestAuthentication applies to WorkloadEntry {workload.namespace}/{workload.name}, so its requests carry no "
                "validated JWT and match no request principal or request.auth condition: add a RequestAuthentication that selects it"
            ))
            return


EXT_AUTHZ_HINT = ("define one in the MeshConfig's extensionProviders, as Istio's External Authorization task does: "
                  "{name: NAME, envoyExtAuthzHttp: {service: HOST, port: PORT}} (or envoyExtAuthzGrpc)")


def check_custom_action(mesh: Mesh, resource: Resource, problems: Problems) -> None:
    """CUSTOM needs provider.name, an ext-authz provider of the MeshConfig whose service is a
    mesh service with that port (gRPC: a GRPC or HTTP2 port); provider goes with CUSTOM only."""
    spec = resource.spec
    custom = spec.get("action") == "CUSTOM"
    if not custom:
        if "provider" in spec:
            problems.add(resource, ("spec", "provider"), "provider names the external authorizer of action CUSTOM: set action: CUSTOM, or remove it")
        return
    if "provider" not in spec:
        problems.add(resource, ("spec", "action"), f"action CUSTOM needs provider.name, an external authorizer: {EXT_AUTHZ_HINT}")
        return
    path = ("spec", "provider", "name")
    provider = provider_spec(mesh, spec["provider"]["name"])
    if provider is None:
        problems.add(resource, path, f"{spec['provider']['name']!r} is no envoyExtAuthzHttp or envoyExtAuthzGrpc provider of the MeshConfig: {EXT_AUTHZ_HINT}")
        return
    kind, settings = provider
    service = provider_service(mesh, settings)
    port = str(settings["port"])
    if service is None:
        problems.add(resource, path, f"provider {spec['provider']['name']!r}: {settings['service']} is not a service of the mesh: declare it with a "
                                     "ServiceEntry")
    elif not port.isdigit() or service.port(int(port)) is None:
        problems.add(resource, path, f"provider {spec['provider']['name']!r}: {service.hostname} has no port {port} "
                     f"(its ports: {', '.join(str(p.number) for p in service.ports)})")
    elif kind == EXT_AUTHZ_GRPC and service.port(int(port)).protocol not in ("GRPC", "HTTP2"):
        problems.add(resource, path, f"provider {spec['provider']['name']!r} speaks gRPC, but port {port} of {service.hostname} is "
                     f"{service.port(int(port)).protocol}: declare it protocol GRPC in its ServiceEntry")


def _tcp_inbound_ports(mesh: Mesh, proxy) -> list[int]:
    """The inbound ports of a workload that are not HTTP: its Sidecar's ingress entries, or
    under capture without them its services' ports."""
    sidecar = sidecar_for_workload(mesh, proxy.namespace, proxy.label_map)
    entries = (sidecar.spec.get("ingress") or []) if sidecar else []
    if entries:
        return sorted(e["port"]["number"] for e in entries if e["port"]["protocol"] not in HTTP_PROTOCOLS)
    if not proxy.captures:
        return []
    return sorted(port for port, protocol in workload_service_ports(mesh, proxy.id) if protocol not in HTTP_PROTOCOLS)


def check_custom_on_tcp(mesh: Mesh, resource: Resource, problems: Problems) -> None:
    """An HTTP authorizer is asked from HTTP listeners only: a warning for each workload the
    policy applies to that has TCP inbound ports, which it leaves unchecked."""
    for proxy in list_proxies(mesh):
        if proxy.kind != "sidecar" or resource not in policies_of_kind(mesh, "AuthorizationPolicy", proxy.namespace, proxy.labels):
            continue
        ports = _tcp_inbound_ports(mesh, proxy)
        if ports:
            problems.warn(resource, ("spec", "provider", "name"), f"action CUSTOM is not enforced on the TCP port(s) {', '.join(map(str, ports))} of "
                          f"{proxy.id}: an HTTP authorizer cannot be asked about TCP connections (Istio skips them too): use an "
                          "envoyExtAuthzGrpc provider, or guard them with ALLOW or DENY rules")


def check_one_authorizer_per_workload(mesh: Mesh, problems: Problems, proxies: list | None = None) -> None:
    """Istio's rule: the CUSTOM policies that apply to a workload name one provider. proxies:
    those to check, else all."""
    if not any(p.spec.get("action") == "CUSTOM" for p in mesh.of_kind("AuthorizationPolicy")):
        return
    for proxy in list_proxies(mesh) if proxies is None else proxies:
        custom = [p for p in policies_of_kind(mesh, "AuthorizationPolicy", proxy.namespace,
                                              proxy.labels) if p.spec.get("action") == "CUSTOM" and "provider" in p.spec]
        names = sorted({p.spec["provider"]["name"] for p in custom})
        if len(names) > 1:
            later = next(p for p in custom if p.spec["provider"]["name"] == names[1])
            problems.add(later, ("spec", "provider", "name"), f"workload {proxy.id} gets CUSTOM policies of two providers ({', '.join(names)}): "
                         "Istio allows one external authorizer per workload")


def check_authorization_policy(mesh: Mesh, resource: Resource, problems: Problems) -> None:
    check_jwt_fields_have_a_token(mesh, resource, problems)
    before = len(problems.items)
    check_custom_action(mesh, resource, problems)
    # A gRPC authorizer is asked on TCP ports too; an HTTP one cannot be.
    if resource.spec.get("action") == "CUSTOM" and len(problems.items) == before and not is_grpc_provider(mesh, [resource]):
        check_custom_on_tcp(mesh, resource, problems)
    for index, rule in enumerate(resource.spec.get("rules") or []):
        path = ("spec", "rules", index)
        for from_index, entry in enumerate(rule.get("from") or []):
            source = entry["source"]
            accounts = [f for f in ("serviceAccounts", "notServiceAccounts") if f in source]
            others = [f for f in ("principals", "notPrincipals", "namespaces", "notNamespaces") if f in source]
            if accounts and others:
                problems.add(resource, path + ("from", from_index, "source", accounts[0]), (
                    f"{accounts[0]} cannot be set with {others[0]} in one source (Istio refuses it): "
                    "write the service account as a principal instead (cluster.local/ns/NAMESPACE/sa/NAME)"
                ))
            for field in SOURCE_IDENTITY_FIELDS:
                if field in source and not mesh.settings.identity_enabled:
                    problems.add(resource, path + ("from", from_index, "source", field), f"{field} match the mTLS identity of the caller, which needs "
                                                                                         f"workload certificates: {IDENTITY_HINT}")
            for field in ("principals", "notPrincipals"):
                for value_index, value in enumerate(source.get(field) or []):
                    value_path = path + ("from", from_index, "source", field, value_index)
                    if value.startswith("spiffe://"):
                        problems.add(resource, value_path, f"write principals without spiffe:// ({value[len('spiffe://'):]}), as Istio does")
                    else:
                        check_principal_trust_domain(mesh, resource, value_path, value, problems)
        for to_index, entry in enumerate(rule.get("to") or []):
            check_host_ports(resource, path + ("to", to_index, "operation"), entry["operation"], problems)
            for field in ("ports", "notPorts"):
                for value_index, value in enumerate(entry["operation"].get(field) or []):
                    if not 1 <= int(value) <= 65535:
                        problems.add(resource, path + ("to", to_index, "operation", field, value_index), f"{value} is not a port number (1 to 65535)")
        for from_index, entry in enumerate(rule.get("from") or []):
            for field in ("requestPrincipals", "notRequestPrincipals"):
                check_values(resource, path + ("from", from_index, "source", field), entry["source"].get(field), is_request_principal, REQUEST_PRINCIPAL_HELP,
                             problems)
        for when_index, condition in enumerate(rule.get("when") or []):
            key = condition["key"]
            if key == "request.auth.principal":
                for field in ("values", "notValues"):
                    check_values(resource, path + ("when", when_index, field), condition.get(field), is_request_principal, REQUEST_PRINCIPAL_HELP, problems)
            if key in IDENTITY_CONDITION_KEYS and not mesh.settings.identity_enabled:
                problems.add(resource, path + ("when", when_index, "key"), f"{key} is the mTLS identity of the caller, which needs workload "
                                                                           f"certificates: {IDENTITY_HINT}")
            if key == "source.principal":
                for field in ("values", "notValues"):
                    for value_index, value in enumerate(condition.get(field) or []):
                        check_principal_trust_domain(mesh, resource, path + ("when", when_index, field, value_index), value, problems)
            if key == "source.namespace":
                for field in ("values", "notValues"):
                    for value_index, value in enumerate(condition.get(field) or []):
                        if not is_namespace_value(value):
                            problems.add(resource, path + ("when", when_index, field, value_index), f"{value!r} is not {NAMESPACE_VALUE_HELP}")
            for field in ("values", "notValues"):
                field_path = path + ("when", when_index, field)
                if key in IP_CONDITION_KEYS:
                    check_values(resource, field_path, condition.get(field), is_ip_block, IP_BLOCK_HELP, problems)
                if key == "source.serviceAccount":
                    check_values(resource, field_path, condition.get(field), is_service_account_value, SERVICE_ACCOUNT_HELP, problems)
            if key == "destination.port":
                for field in ("values", "notValues"):
                    for value_index, value in enumerate(condition.get(field) or []):
                        if not value.isdigit() or not 1 <= int(value) <= 65535:
                            problems.add(resource, path + ("when", when_index, field, value_index), f"{value!r} is not a port number (1 to 65535)")


def is_request_principal(value: str) -> bool:
    """Istio splits a request principal at its last "/" into issuer and subject; without a
    "/" (and without a wildcard) the subject would be empty and match no token."""
    return "/" in value or "*" in value


# --- RequestAuthentication ------------------------------------------------------------------

# An http(s) jwksUri: a DNS name or IPv4 address, an optional port, a path (no user info,
# query or fragment: they would not survive the cluster the keys are fetched through).
_HTTP_JWKS_URI = re.compile(r"https?://(?P<host>[A-Za-z0-9.-]+)(:(?P<port>[0-9]{1,5}))?(/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?")


def is_jwks(text: str) -> bool:
    """A JSON Web Key Set: {"keys": [{"kty": ..., ...}, ...]} with at least one key."""
    try:
        document = json.loads(text)
    except ValueError:
        return False
    keys = document.get("keys") if isinstance(document, dict) else None
    return isinstance(keys, list) and bool(keys) and all(isinstance(key, dict) and isinstance(key.get("kty"), str) for key in keys)


def check_jwks_uri(resource: Resource, path: tuple, uri: str, problems: Problems) -> None:
    """file:///ABSOLUTE/PATH (read by Envoy on the proxy's host) or http(s)://HOST[:PORT]/PATH
    (fetched by Envoy); anything else is an error."""
    if uri.startswith(("http://", "https://")):
        match = _HTTP_JWKS_URI.fullmatch(uri)
        if not match or not names.is_host(match["host"]) or "*" in match["host"] or not 0 < int(match["port"] or 80) < 65536:
            problems.add(resource, path, f"{uri!r} is not an http(s) URI Envoy can fetch: http(s)://HOST[:PORT]/PATH, HOST a DNS name or an "
                         "IPv4 address (no user, query or fragment)")
        return
    file_path = uri[len(FILE_SCHEME):] if uri.startswith(FILE_SCHEME) else ""
    if not file_path.startswith("/") or not re.fullmatch(r"(/[A-Za-z0-9._-]+)+", file_path) or "/../" in file_path + "/" or "/./" in file_path + "/":
        problems.add(resource, path, f"{uri!r} is not a file:///ABSOLUTE/PATH (segments of letters, digits, '.', '_', '-'; no '.' or '..' segments)")


def check_request_authentication(mesh: Mesh, resource: Resource, problems: Problems) -> None:
    issuers: dict[str, int] = {}
    for index, rule in enumerate(resource.spec.get("jwtRules") or []):
        path = ("spec", "jwtRules", index)
        if "jwksUri" in rule:
            check_jwks_uri(resource, path + ("jwksUri",), rule["jwksUri"], problems)
        if "timeout" in rule and not rule.get("jwksUri", "").startswith(("http://", "https://")):
            problems.add(resource, path + ("timeout",), "timeout bounds fetching an http(s) jwksUri: this rule fetches none, remove it")
        if "jwks" in rule and not is_jwks(rule["jwks"]):
            problems.add(resource, path + ("jwks",), 'jwks is not a JSON Web Key Set ({"keys": [{"kty": ...}, ...]} with at least one key)')
        if rule["issuer"] in issuers:
            problems.add(resource, path + ("issuer",), f"issuer {rule['issuer']} has a rule already (jwtRules[{issuers[rule['issuer']]}]): give each "
                                                       "issuer one rule")
        issuers.setdefault(rule["issuer"], index)


# --- policies must be enforced somewhere ------------------------------------------------------

ENFORCE_HINT = (
    "add a Sidecar ingress listener for it (ingress: [{port: {number, protocol}, defaultEndpoint: 127.0.0.1:APP_PORT}]) "
    f"and have clients use that port, or capture the workload's traffic with the WorkloadEntry annotation {INTERCEPTION_ANNOTATION}: {REDIRECT}"
)


def sidecar_workloads(mesh: Mesh, namespace: str) -> list[Resource]:
    """The WorkloadEntries whose proxy is a sidecar (a gateway's listeners are its servers)
    that a policy in namespace can apply to: those of the namespace, all for the root one."""

    def compute():
        sidecars = {(p.namespace, p.name) for p in list_proxies(mesh) if p.kind == "sidecar"}
        by_namespace: dict[str, list[Resource]] = {ROOT_NAMESPACE: []}
        for workload in mesh.of_kind("WorkloadEntry"):
            if (workload.namespace, workload.name) in sidecars:
                by_namespace.setdefault(workload.namespace, []).append(workload)
                if workload.namespace != ROOT_NAMESPACE:
                    by_namespace[ROOT_NAMESPACE].append(workload)
        return by_namespace

    return mesh.memo(("sidecar-workloads",), compute).get(namespace, [])


def bypassed_ports(mesh: Mesh, workload: Resource) -> tuple[bool, list[int]]:
    """(whether the workload's proxy has any inbound listener, the ports its services send
    to its app that no inbound listener takes: clients reach the app there directly). Under
    capture every inbound connection goes through the proxy."""
    if workload.annotations.get(INTERCEPTION_ANNOTATION) == REDIRECT:
        return True, []
    inbound = _inbound_ports(mesh, workload)
    served = [port for port, dummy in workload_service_ports(mesh, f"{workload.name}.{workload.namespace}")]
    return bool(inbound), [port for port in served if port not in inbound]


def _workload_labels(workload: Resource) -> tuple:
    return tuple(sorted((workload.spec.get("labels") or {}).items()))


def _report_unenforced(resource: Resource, workload: Resource, selected: bool, has_inbound: bool, ports: list[int], what: str, problems: Problems) -> None:
    """what: the policy's effect, for the message ("STRICT mTLS", "this authorization policy")."""
    path = ("spec", "selector") if selected else ("metadata", "name")
    name = f"WorkloadEntry {workload.namespace}/{workload.name}"
    if selected and not has_inbound:
        problems.add(resource, path, f"{what} is enforced nowhere on {name}: its proxy has no inbound listener, so clients reach its app directly: "
                                     f"{ENFORCE_HINT}")
    elif ports:
        listed = ", ".join(str(p) for p in ports)
        problems.add(resource, path, f"{what} is not enforced on port {listed} of {name}: its services send traffic there, where its proxy has no "
                                     f"inbound listener, so clients reach its app directly: {ENFORCE_HINT}")


def _applies_to(mesh: Mesh, policy: Resource, workload: Resource) -> bool:
    if policy.kind in MESH_WIDE_SELECTOR_KINDS:
        return policy in policies_of_kind(mesh, policy.kind, workload.namespace, _workload_labels(workload))
    selector = selector_of(policy)
    if selector is not None:
        return workload.namespace == policy.namespace and labels_match(selector, workload.spec.get("labels") or {})
    return policy.namespace in (ROOT_NAMESPACE, workload.namespace)


def _candidate_workloads(mesh: Mesh, policy: Resource) -> list[Resource]:
    """The sidecar workloads a policy may apply to, in mesh order: those its selector picks in
    its namespace (an AuthorizationPolicy's in the root namespace picks in every one), else all
    of its namespace's (every one's for the root namespace)."""
    selector = (policy.spec.get("selector") or {}).get("matchLabels")
    if selector is None or (policy.kind in MESH_WIDE_SELECTOR_KINDS and policy.namespace == ROOT_NAMESPACE):
        return sidecar_workloads(mesh, policy.namespace)
    # The root namespace's list holds every sidecar workload.
    sidecars = mesh.memo(("sidecar-workload-ids",), lambda: {id(w) for w in sidecar_workloads(mesh, ROOT_NAMESPACE)})
    return [workload for workload in mesh.selected_workloads(policy.namespace, selector) if id(workload) in sidecars]


def check_enforced(mesh: Mesh, policy: Resource, problems: Problems, candidates: list[Resource] | None = None) -> None:
    """A STRICT PeerAuthentication or an AuthorizationPolicy must apply where traffic passes
    the proxy: a workload it selects needs an inbound listener, and every port its services
    send to must have one (else clients reach the app straight, in plaintext, unchecked).
    candidates: the sidecar workloads to look at (one that just came), else all it may apply to."""
    if policy.kind == "PeerAuthentication" and not mesh.settings.identity_enabled:
        return  # STRICT is refused without certificates already
    selected = (policy.spec.get("selector") or None) is not None
    for workload in _candidate_workloads(mesh, policy) if candidates is None else candidates:
        if not _applies_to(mesh, policy, workload):
            continue
        has_inbound, ports = bypassed_ports(mesh, workload)
        what = "this request authentication" if policy.kind == "RequestAuthentication" else "this authorization policy"
        if policy.kind == "PeerAuthentication":
            if not _sets_strict(policy):
                return
            # Only where STRICT is the mode in effect (a more specific policy may lift it).
            labels = _workload_labels(workload)
            ports = [port for port in ports if mtls_mode(mesh, workload.namespace, labels, port) == STRICT]
            if not ports and mtls_mode(mesh, workload.namespace, labels, 0) != STRICT:
                continue
            what = "STRICT mTLS"
        _report_unenforced(policy, workload, selected, has_inbound, ports, what, problems)


def _sets_strict(policy: Resource) -> bool:
    modes = [(policy.spec.get("mtls") or {}).get("mode")] + [(s or {}).get("mode") for s in (policy.spec.get("portLevelMtls") or {}).values()]
    return STRICT in modes


def check_security(mesh: Mesh, resource: Resource, problems: Problems, candidates: list[Resource] | None = None) -> None:
    """candidates: see check_enforced."""
    checks = {
        "MeshConfig": check_mesh_config_security,
        "PeerAuthentication": check_peer_authentication,
        "AuthorizationPolicy": check_authorization_policy,
        "RequestAuthentication": check_request_authentication,
    }
    if resource.kind in checks:
        checks[resource.kind](mesh, resource, problems)
    if resource.kind in ("PeerAuthentication",) + MESH_WIDE_SELECTOR_KINDS:
        check_enforced(mesh, resource, problems, candidates)
