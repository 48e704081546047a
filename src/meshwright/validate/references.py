"""Reference checks: hosts, subsets, ports and gateways that resources name must exist."""

from __future__ import annotations

from meshwright import names
from meshwright.compile.envoy_values import SERVER_CIPHER_SUITES, is_cipher_suite
from meshwright.compile.envoyfilter import proxy_version_matches
from meshwright.compile.proxy import NODE_METADATA_STRINGS
from meshwright.compile.scope import egress_host_matches
from meshwright.mesh import Mesh, host_matches, resolve_host
from meshwright.model.delegation import delegate_key, is_delegate
from meshwright.model.resource import Resource, exported_to
from meshwright.model.workload_group import GROUP_ANNOTATION, group_of
from meshwright.problems import Problems
from meshwright.registry.model import TLS_PROTOCOLS
from meshwright.validate.security_checks import IDENTITY_HINT, check_istio_mutual, check_security
from meshwright.validate.telemetry import check_mesh_config, check_telemetry

SERVICE_HINT = "declare it with a ServiceEntry (hosts, ports, and endpoints or a workloadSelector)"


def _check_destination(mesh: Mesh, resource: Resource, path: tuple, destination: dict, problems: Problems) -> None:
    host = resolve_host(destination["host"], resource.namespace)
    service = mesh.registry.get(host)
    if service is None:
        problems.add(resource, path + ("host",), f"{host!r} is not a service of the mesh: {SERVICE_HINT}")
        return
    if "port" in destination:
        number = destination["port"]["number"]
        if service.port(number) is None:
            ports = ", ".join(str(p.number) for p in service.ports)
            problems.add(resource, path + ("port", "number"), f"{host} has no port {number} (its ports: {ports})")
    elif len(service.ports) > 1:
        ports = ", ".join(str(p.number) for p in service.ports)
        problems.add(resource, path, f"{host} has several ports ({ports}): name one with port.number")
    subset = destination.get("subset")
    if subset:
        # The rule of clients no workloadSelector picks: every client routed here needs the subset.
        rule = mesh.destination_rule_for(host, resource.namespace)
        defined = [s["name"] for s in (rule.spec.get("subsets") or [])] if rule else []
        if subset not in defined:
            if rule is None:
                where = f"no DestinationRule exists for {host}: add one with subsets: [{{name: {subset}, labels: {{version: {subset}}}}}]"
            else:
                where = f"{rule.ref} defines {', '.join(defined) or 'no subsets'}; add {{name: {subset}, labels: {{...}}}} to its subsets"
            problems.add(resource, path + ("subset",), f"subset {subset!r} of {host} is not defined: {where}")


def _check_gateway_names(mesh: Mesh, resource: Resource, path: tuple, gateways: list[str], problems: Problems) -> None:
    for index, name in enumerate(gateways):
        if name == "mesh":
            continue
        namespace, gateway_name = name.split("/", 1) if "/" in name else (resource.namespace, name)
        if mesh.find("Gateway", namespace, gateway_name) is None:
            problems.add(resource, path + (index,), f"gateway {namespace}/{gateway_name} does not exist (define a Gateway, or use 'mesh' for sidecars)")


def _check_tls_match_gateways(mesh: Mesh, resource: Resource, path: tuple, names: list[str], problems: Problems) -> None:
    """A tls or tcp match's gateways narrow where it applies: each must be one the VirtualService is
    bound to (meshwright does not widen a VirtualService's reach from inside a match)."""
    bound = resource.spec.get("gateways") or ["mesh"]
    qualified = {_qualified_gateway(g, resource.namespace) for g in bound}
    for index, name in enumerate(names):
        if _qualified_gateway(name, resource.namespace) not in qualified:
            problems.add(resource, path + (index,), f"{name!r} is not among the gateways this VirtualService is bound to ({', '.join(bound)}): "
                         "add it to spec.gateways, or leave it out of the match")


def _qualified_gateway(name: str, namespace: str) -> str:
    return name if name == "mesh" or "/" in name else f"{namespace}/{name}"


def check_virtual_service(mesh: Mesh, resource: Resource, problems: Problems) -> None:
    spec = resource.spec
    gateways = spec.get("gateways") or []
    _check_gateway_names(mesh, resource, ("spec", "gateways"), gateways, problems)
    if not gateways or "mesh" in gateways:
        for index, host in enumerate(spec.get("hosts") or []):
            resolved = resolve_host(host, resource.namespace)
            if "*" not in resolved and mesh.registry.get(resolved) is None:
                problems.add(resource, ("spec", "hosts", index), f"{resolved!r} is not a service of the mesh: {SERVICE_HINT}")
    for index, http in enumerate(spec.get("http") or []):
        for route_index, entry in enumerate(http.get("route") or []):
            _check_destination(mesh, resource, ("spec", "http", index, "route", route_index, "destination"), entry["destination"], problems)
        if "mirror" in http:
            _check_destination(mesh, resource, ("spec", "http", index, "mirror"), http["mirror"], problems)
        for mirror_index, mirror in enumerate(http.get("mirrors") or []):
            _check_destination(mesh, resource, ("spec", "http", index, "mirrors", mirror_index, "destination"), mirror["destination"], problems)
        _check_http_match_gateways(mesh, resource, index, problems)
        if "delegate" in http:
            _check_delegate(mesh, resource, index, problems)
    for index, tcp in enumerate(spec.get("tcp") or []):
        for route_index, entry in enumerate(tcp["route"]):
            _check_destination(mesh, resource, ("spec", "tcp", index, "route", route_index, "destination"), entry["destination"], problems)
    _check_tls_routes(mesh, resource, problems)
    if is_delegate(resource):
        _check_delegate_used(mesh, resource, problems)


def _check_delegate_used(mesh: Mesh, resource: Resource, problems: Problems) -> None:
    """A delegate no VirtualService delegates to routes nothing: said, not failed."""
    roots = mesh.memo(("delegates-named",), lambda: {
        delegate_key(http, vs.namespace) for vs in mesh.resources if vs.kind == "VirtualService" for http in vs.spec.get("http") or [] if "delegate" in http
    })
    if (resource.namespace, resource.name) not in roots:
        problems.warn(resource, ("metadata", "name"), "no VirtualService delegates to this one (it has no hosts): it routes nothing")


def _check_delegate(mesh: Mesh, resource: Resource, index: int, problems: Problems) -> None:
    """The delegate an http route names exists, is a delegate (no hosts) and is exported to
    the root's namespace (Istio ignores the route otherwise; meshwright ignores nothing)."""
    namespace, name = delegate_key(resource.spec["http"][index], resource.namespace)
    delegate = mesh.find("VirtualService", namespace, name)
    path = ("spec", "http", index, "delegate")
    if delegate is None:
        problems.add(resource, path, f"VirtualService {namespace}/{name} does not exist (define it, without hosts, with the http routes to delegate to)")
    elif not is_delegate(delegate):
        problems.add(resource, path, f"VirtualService {namespace}/{name} has hosts: a delegate has none (it routes only what its roots hand it)")
    elif not exported_to(delegate, resource.namespace):
        problems.add(resource, path, f"VirtualService {namespace}/{name} is not exported to namespace {resource.namespace} (add it to the delegate's exportTo)")


def _check_http_match_gateways(mesh: Mesh, resource: Resource, index: int, problems: Problems) -> None:
    """A match's gateways exist; one the VirtualService is not bound to (its gateways, by
    default mesh) is allowed, as in Istio, with a warning: the match never applies there."""
    bound = {_qualified_gateway(name, resource.namespace) for name in resource.spec.get("gateways") or ["mesh"]}
    for match_index, match in enumerate(resource.spec["http"][index].get("match") or []):
        for gateway_index, name in enumerate(match.get("gateways") or []):
            path = ("spec", "http", index, "match", match_index, "gateways", gateway_index)
            qualified = _qualified_gateway(name, resource.namespace)
            if qualified != "mesh" and mesh.find("Gateway", *qualified.split("/", 1)) is None:
                problems.add(resource, path, f"gateway {qualified} does not exist (define a Gateway, or use 'mesh' for sidecars)")
            elif qualified not in bound:
                problems.warn(resource, path, f"{qualified} is not one of this VirtualService's gateways ({', '.join(sorted(bound))}): the match never "
                                              "applies there")


def _check_tls_routes(mesh: Mesh, resource: Resource, problems: Problems) -> None:
    """Each sniHost is one of the VirtualService's hosts (or under one of its wildcards), as
    Istio requires; the gateways a match names exist; destinations exist."""
    spec = resource.spec
    hosts = [resolve_host(h, resource.namespace) for h in spec.get("hosts") or []]
    for index, tcp in enumerate(spec.get("tcp") or []):
        for match_index, match in enumerate(tcp.get("match") or []):
            _check_tls_match_gateways(mesh, resource, ("spec", "tcp", index, "match", match_index, "gateways"), match.get("gateways") or [], problems)
    for index, tls in enumerate(spec.get("tls") or []):
        path = ("spec", "tls", index)
        for match_index, match in enumerate(tls["match"]):
            _check_tls_match_gateways(mesh, resource, path + ("match", match_index, "gateways"), match.get("gateways") or [], problems)
            for name_index, name in enumerate(match["sniHosts"]):
                if not any(host_matches(host, resolve_host(name, resource.namespace)) for host in hosts):
                    problems.add(resource, path + ("match", match_index, "sniHosts", name_index),
                                 f"{name!r} is not one of the VirtualService's hosts ({', '.join(spec.get('hosts') or [])}): sniHosts must be among them")
        for route_index, entry in enumerate(tls["route"]):
            _check_destination(mesh, resource, path + ("route", route_index, "destination"), entry["destination"], problems)


def _check_egress_proxy(mesh: Mesh, resource: Resource, problems: Problems) -> None:
    """outboundTrafficPolicy.egressProxy as Istio takes it: with mode ALLOW_ANY only, a port
    always, a service of the mesh (port, subset) that the Sidecar's egress hosts import (its
    cluster must be on the proxy)."""
    policy = resource.spec.get("outboundTrafficPolicy") or {}
    egress_proxy = policy.get("egressProxy")
    if egress_proxy is None:
        return
    path = ("spec", "outboundTrafficPolicy", "egressProxy")
    if policy.get("mode") != "ALLOW_ANY":
        problems.add(resource, path, "egressProxy takes the traffic ALLOW_ANY lets out (Istio's rule): with mode REGISTRY_ONLY "
                     "nothing unknown leaves; set mode: ALLOW_ANY, or remove egressProxy")
    _check_destination(mesh, resource, path, egress_proxy, problems)
    service = mesh.registry.get(resolve_host(egress_proxy["host"], resource.namespace))
    if "port" not in egress_proxy and service is not None and len(service.ports) == 1:  # several: _check_destination says so
        problems.add(resource, path, f"egressProxy needs port.number (Istio's rule: {service.ports[0].number}, say)")
    hosts = [h for entry in resource.spec.get("egress") or [] for h in entry["hosts"]]
    if service is not None and hosts and not any(egress_host_matches(h, service, resource.namespace) for h in hosts):
        problems.add(resource, path + ("host",), f"{service.hostname} is not among the Sidecar's egress hosts, so its proxies have no "
                     f"cluster for it: add {service.namespace}/{service.hostname} to an egress entry's hosts")


def check_sidecar(mesh: Mesh, resource: Resource, problems: Problems) -> None:
    """A TLS egress listener routes by SNI to services with a TLS port: its hosts need one."""
    _check_egress_proxy(mesh, resource, problems)
    for index, entry in enumerate(resource.spec.get("egress") or []):
        protocol = (entry.get("port") or {}).get("protocol")
        if protocol not in TLS_PROTOCOLS:
            continue
        services = [s for s in mesh.registry.sorted() if any(egress_host_matches(h, s, resource.namespace) for h in entry["hosts"])]
        tls_services = [s for s in services if any(port.is_tls for port in s.ports)]
        if not tls_services:
            problems.add(resource, ("spec", "egress", index, "hosts"), (
                f"a {protocol} egress listener passes TLS through to services chosen by SNI, but these hosts name no service "
                "with a port of protocol HTTPS or TLS: declare one with a ServiceEntry, or use protocol HTTP or TCP"
            ))
        for service in tls_services:
            if service.resolution == "NONE" and not service.endpoints:
                # Its cluster sends to the original destination, which here is the listener itself.
                problems.add(resource, ("spec", "egress", index, "hosts"), (
                    f"{service.hostname} has resolution NONE, whose destination is the address the app connected to: through this "
                    f"listener, the listener itself. Give {service.source} endpoints or resolution DNS, or capture the app's traffic "
                    "with iptables (sidecar.istio.io/interceptionMode: REDIRECT)"
                ))


def check_destination_rule(mesh: Mesh, resource: Resource, problems: Problems) -> None:
    host = resolve_host(resource.spec["host"], resource.namespace)
    service = mesh.registry.get(host)
    if "*" not in host and service is None:
        problems.add(resource, ("spec", "host"), f"{host!r} is not a service of the mesh: {SERVICE_HINT}")
    policies = [(("spec", "trafficPolicy"), resource.spec.get("trafficPolicy") or {})]
    for index, subset in enumerate(resource.spec.get("subsets") or []):
        policies.append((("spec", "subsets", index, "trafficPolicy"), subset.get("trafficPolicy") or {}))
    for path, policy in policies:
        layers = [(path, policy)]
        for index, settings in enumerate(policy.get("portLevelSettings") or []):
            number = settings["port"]["number"]
            if service is not None and service.port(number) is None:
                problems.add(resource, path + ("portLevelSettings", index, "port", "number"), f"{host} has no port {number}")
            layers.append((path + ("portLevelSettings", index), settings))
        for layer_path, layer in layers:
            tls = layer.get("tls") or {}
            if tls.get("mode") == "MUTUAL":
                for field in ("clientCertificate", "privateKey"):
                    if field not in tls:
                        problems.add(resource, layer_path + ("tls",), f"tls.mode MUTUAL needs {field} (a file path on the proxy's host)")
            if tls.get("mode") == "ISTIO_MUTUAL":
                check_istio_mutual(mesh, resource, layer_path + ("tls",), tls, problems)


MUTUAL_MODES = ("MUTUAL", "OPTIONAL_MUTUAL", "ISTIO_MUTUAL")
TERMINATING_MODES = ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL", "ISTIO_MUTUAL")
# Fields that check the client's certificate: meaningful only when the gateway asks for one.
CLIENT_CHECK_FIELDS = ("subjectAltNames", "verifyCertificateSpki", "verifyCertificateHash", "caCrl")
# Everything that configures a TLS handshake the gateway makes itself (not with PASSTHROUGH).
HANDSHAKE_FIELDS = ("credentialName", "credentialNames", "tlsCertificates", "serverCertificate", "privateKey", "caCertificates", "minProtocolVersion",
                    "maxProtocolVersion", "cipherSuites") + CLIENT_CHECK_FIELDS
# The ways to give the server's certificates (one of them, as Istio requires).
CERTIFICATE_SOURCES = ("credentialName", "credentialNames", "tlsCertificates")
# Envoy presents one certificate per key type: Istio's lists are an RSA and an ECDSA one.
MAX_SERVER_CERTIFICATES = 2
# The files a credential stands for (compile/gateway_tls.py server_certificates).
CREDENTIAL_FILE_FIELDS = ("serverCertificate", "privateKey", "caCertificates")
CREDENTIALS_DIR_HINT = (
    "add `credentials: {dir: /etc/meshwright/credentials}` (an absolute path on the gateways' hosts) to the MeshConfig: "
    "credentialName NAME then means the files DIR/NAME/tls.crt, DIR/NAME/tls.key and, for MUTUAL and OPTIONAL_MUTUAL, "
    "DIR/NAME/ca.crt (docs/traffic.md#gateway)"
)
ARTICLE = {"HTTP": "an", "HTTPS": "an", "HTTP2": "an", "GRPC": "a", "TCP": "a", "TLS": "a"}


def _mode_fits_protocol(resource: Resource, path: tuple, protocol: str, mode: str | None, problems: Problems) -> bool:
    """HTTPS and TLS servers need a mode; plain ones may not have one."""
    if protocol in TLS_PROTOCOLS and mode is None:
        problems.add(resource, path, f"{ARTICLE[protocol]} {protocol} server needs tls.mode: SIMPLE, MUTUAL, OPTIONAL_MUTUAL or ISTIO_MUTUAL "
                     "(the gateway terminates TLS), PASSTHROUGH (VirtualService tls routes pick the backend by SNI) or AUTO_PASSTHROUGH "
                     "(the mesh's SNI, outbound_.PORT_.SUBSET_.HOST, picks the service)")
        return False
    if protocol not in TLS_PROTOCOLS and mode is not None:
        problems.add(resource, path + ("mode",), f"{ARTICLE[protocol]} {protocol} server is plain text: tls.mode needs protocol HTTPS or TLS "
                     "(httpsRedirect alone is what an HTTP server may have)")
        return False
    return True


def _check_server_tls(mesh: Mesh, resource: Resource, index: int, server: dict, problems: Problems) -> None:
    """A server's tls against its protocol and mode (Istio's rules, plus: no field is ignored)."""
    tls = server.get("tls") or {}
    mode, path = tls.get("mode"), ("spec", "servers", index, "tls")
    if not _mode_fits_protocol(resource, path, server["port"]["protocol"], mode, problems):
        return
    if mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH"):
        _refuse_fields(resource, path, tls, HANDSHAKE_FIELDS, "{field} has no use with mode " + mode + " (the backend makes the TLS handshake): remove "
                                                                                                       "it", problems)
    elif mode == "ISTIO_MUTUAL":
        if not mesh.settings.identity_enabled:
            problems.add(resource, path + ("mode",), f"ISTIO_MUTUAL needs workload certificates: {IDENTITY_HINT}")
        _refuse_fields(resource, path, tls, ("credentialName", "credentialNames", "tlsCertificates", "serverCertificate", "privateKey", "caCertificates"),
                       "ISTIO_MUTUAL uses the gateway's certificate from the mesh CA: remove {field} (or use mode MUTUAL with your own files)", problems)
    elif mode in TERMINATING_MODES:
        _check_certificate_files(mesh, resource, path, tls, problems)
    _check_protocol_versions(resource, path, tls, problems)
    _check_cipher_suites(resource, path, tls, problems)


def _refuse_fields(resource: Resource, path: tuple, tls: dict, fields: tuple, message: str, problems: Problems) -> None:
    for field in fields:
        if field in tls:
            problems.add(resource, path + (field,), message.format(field=field))


def _check_credential_names(mesh: Mesh, resource: Resource, path: tuple, tls: dict, field: str, problems: Problems) -> None:
    """credentialName or credentialNames: each names a folder (so a Kubernetes secret name: no
    '/', no '..'), they need the MeshConfig's credentials folder, and stand for the file fields."""
    given = tls[field] if field == "credentialNames" else [tls[field]]
    for index, name in enumerate(given):
        where = path + ((field, index) if field == "credentialNames" else (field,))
        if not names.is_subdomain(name):
            problems.add(resource, where, f"{name!r} is not a Kubernetes secret name: {names.SUBDOMAIN_HELP}")
        elif not mesh.settings.credentials_dir:
            problems.add(resource, where, f"{field} {name!r} needs a folder of credentials: {CREDENTIALS_DIR_HINT}")
    _refuse_fields(resource, path, tls, CREDENTIAL_FILE_FIELDS, "{field} and " + field + " both give the gateway's certificate: "
                   "keep one (a credential's folder holds tls.crt, tls.key and ca.crt)", problems)


def _check_tls_certificates(resource: Resource, path: tuple, tls: dict, problems: Problems) -> None:
    """tlsCertificates: file pairs instead of serverCertificate and privateKey; the clients'
    CA (MUTUAL, OPTIONAL_MUTUAL) is one file, given once or the same in every entry."""
    _refuse_fields(resource, path, tls, ("serverCertificate", "privateKey"), "{field} and tlsCertificates both give the gateway's "
                   "certificate: keep one", problems)
    authorities = {entry["caCertificates"] for entry in tls["tlsCertificates"] if "caCertificates" in entry} | (
        {tls["caCertificates"]} if "caCertificates" in tls else set())
    if len(authorities) > 1:
        problems.add(resource, path + ("tlsCertificates",), f"the entries name different caCertificates ({', '.join(sorted(authorities))}): "
                     "Envoy checks clients against one CA file: give it once, in tls.caCertificates")
    elif tls["mode"] in MUTUAL_MODES and not authorities:
        problems.add(resource, path, f"tls.mode {tls['mode']} needs caCertificates (a file path on the gateway's host)")


def _check_certificate_files(mesh: Mesh, resource: Resource, path: tuple, tls: dict, problems: Problems) -> None:
    """SIMPLE, MUTUAL, OPTIONAL_MUTUAL: the gateway's certificates (one way of giving them), the
    clients' CA when it asks for their certificates, and no client checks when it does not."""
    mode = tls["mode"]
    sources = [field for field in CERTIFICATE_SOURCES if field in tls]
    for field in sources[1:]:
        problems.add(resource, path + (field,), f"{field} and {sources[0]} both give the gateway's certificate: keep one")
    for field in ("credentialNames", "tlsCertificates"):
        if len(tls.get(field) or []) > MAX_SERVER_CERTIFICATES:
            problems.add(resource, path + (field,), f"{field} gives {len(tls[field])} certificates: Envoy presents one per key type, "
                         "so at most 2 (an RSA and an ECDSA one, as Istio)")
    if sources and sources[0] in ("credentialName", "credentialNames"):
        _check_credential_names(mesh, resource, path, tls, sources[0], problems)
    elif sources:
        _check_tls_certificates(resource, path, tls, problems)
    else:
        needed = ["serverCertificate", "privateKey"] + (["caCertificates"] if mode in MUTUAL_MODES else [])
        for field in needed:
            if field not in tls:
                problems.add(resource, path, f"tls.mode {mode} needs {field} (a file path on the gateway's host)")
    if mode == "SIMPLE":
        _refuse_fields(resource, path, tls, ("caCertificates",) + CLIENT_CHECK_FIELDS, "{field} checks clients' certificates, which mode SIMPLE "
                       "does not ask for: use mode MUTUAL (or OPTIONAL_MUTUAL), or remove it", problems)
        for index, entry in enumerate(tls.get("tlsCertificates") or []):
            if "caCertificates" in entry:
                problems.add(resource, path + ("tlsCertificates", index, "caCertificates"), "caCertificates checks clients' certificates, "
                             "which mode SIMPLE does not ask for: use mode MUTUAL (or OPTIONAL_MUTUAL), or remove it")


def _check_protocol_versions(resource: Resource, path: tuple, tls: dict, problems: Problems) -> None:
    low, high = tls.get("minProtocolVersion", "TLS_AUTO"), tls.get("maxProtocolVersion", "TLS_AUTO")
    if "TLS_AUTO" not in (low, high) and low > high:
        problems.add(resource, path + ("minProtocolVersion",), f"minProtocolVersion {low} is above maxProtocolVersion {high}")


def _check_cipher_suites(resource: Resource, path: tuple, tls: dict, problems: Problems) -> None:
    """Names Envoy does not know are dropped, with a warning, as Istio does."""
    for cipher_index, name in enumerate(tls.get("cipherSuites") or []):
        if not is_cipher_suite(name):
            problems.warn(resource, path + ("cipherSuites", cipher_index), f"{name!r} is not a cipher suite Envoy knows: it is left out, as Istio does "
                          f"(known: {', '.join(SERVER_CIPHER_SUITES)})")


def _check_shared_names(resource: Resource, problems: Problems) -> None:
    """TLS servers of one port are told apart by SNI: a host two of them name goes to the
    first (as Istio does); said, as a warning, at the later one."""
    first: dict[tuple, int] = {}
    for index, server in enumerate(resource.spec["servers"]):
        if "mode" not in (server.get("tls") or {}):
            continue
        address = (server.get("bind", "0.0.0.0"), server["port"]["number"])
        for host_index, host in enumerate(server["hosts"]):
            name = host.split("/")[-1]
            earlier = first.setdefault(address + (name,), index)
            if earlier != index:
                problems.warn(resource, ("spec", "servers", index, "hosts", host_index), (
                    f"servers[{earlier}] also takes {name!r} on port {address[1]}: connections for it go to that server "
                    "(the first), none to this one"
                ))


def check_gateway(mesh: Mesh, resource: Resource, problems: Problems) -> None:
    for index, server in enumerate(resource.spec["servers"]):
        _check_server_tls(mesh, resource, index, server, problems)
    _check_shared_names(resource, problems)


def check_envoy_filter(mesh: Mesh, resource: Resource, problems: Problems) -> None:
    """A proxyVersion no proxy of the mesh has: the patch would do nothing, silently."""
    version = mesh.settings.envoy_version
    for index, patch in enumerate(resource.spec["configPatches"]):
        match = patch.get("match") or {}
        if not proxy_version_matches(match, version):
            problems.warn(resource, ("spec", "configPatches", index, "match", "proxy", "proxyVersion"),
                          f"'{match['proxy']['proxyVersion']}' does not match {version}, the Envoy version of this mesh's proxies "
                          "(MeshConfig envoyVersion), so the patch applies to none: meshwright matches proxyVersion against the "
                          "Envoy version, as its proxies have no Istio version")
        for key in ((match.get("proxy") or {}).get("metadata") or {}):
            if key not in NODE_METADATA_STRINGS:
                problems.warn(resource, ("spec", "configPatches", index, "match", "proxy", "metadata", key),
                              f"meshwright's proxies send no node metadata {key} (their string keys: {', '.join(NODE_METADATA_STRINGS)}), "
                              "so the patch applies to none: select workloads with the EnvoyFilter's workloadSelector")


def check_workload_group_member(mesh: Mesh, resource: Resource, problems: Problems) -> None:
    """A WorkloadEntry's group (annotation istio.io/autoRegistrationGroup) is a WorkloadGroup of its namespace."""
    group = group_of(resource)
    if group is not None and mesh.find("WorkloadGroup", resource.namespace, group) is None:
        problems.add(resource, ("metadata", "annotations", GROUP_ANNOTATION),
                     f"WorkloadGroup {resource.namespace}/{group} does not exist (a WorkloadEntry's group is in its own namespace)")


def check_workload_group(mesh: Mesh, resource: Resource, problems: Problems) -> None:
    """A group no WorkloadEntry names changes nothing: meshwright does not auto-register VMs."""
    if not any(group_of(entry) == resource.name for entry in mesh.of_kind("WorkloadEntry") if entry.namespace == resource.namespace):
        problems.warn(resource, ("spec", "template"), "no WorkloadEntry names this group, so its template makes nothing: meshwright does not "
                      f"auto-register VMs; write each VM's WorkloadEntry (its address) with the annotation {GROUP_ANNOTATION}: {resource.name}")


def check_references(mesh: Mesh, resource: Resource, problems: Problems) -> None:
    checks = {
        "EnvoyFilter": check_envoy_filter,
        "VirtualService": check_virtual_service, "DestinationRule": check_destination_rule, "Gateway": check_gateway,
        "Telemetry": check_telemetry, "MeshConfig": check_mesh_config, "Sidecar": check_sidecar,
        "WorkloadEntry": check_workload_group_member, "WorkloadGroup": check_workload_group,
    }
    if resource.kind in checks:
        checks[resource.kind](mesh, resource, problems)
    check_security(mesh, resource, problems)
