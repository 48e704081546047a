"""The whole mesh as the compiler sees it: resources by kind, the registry, mesh settings.

A layer of its own above model and registry: it joins the resources with the services the
registry makes of them."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field

from meshwright.model.duration import parse_duration
from meshwright.model.providers import TelemetryProviders, providers_from_spec
from meshwright.model.delegation import merged_virtual_services
from meshwright.model.resource import Resource, exported_to  # noqa: F401  modules import exported_to from here
from meshwright.model.workload_group import with_workload_groups
from meshwright.model.selection import LabelIndex, SelectorIndex, labels_match, namespace_of, workload_labels  # noqa: F401  modules import labels_match from here
from meshwright.registry.inventory import services_from_entries
from meshwright.registry.model import Registry

CLUSTER_DOMAIN = "svc.cluster.local"
DEFAULT_CERTIFICATES_DIR = "../certs"
# The system's trust store (Debian's bundle): what TLS origination trusts when a
# DestinationRule names no caCertificates, as Istio's proxies do.
DEFAULT_SYSTEM_CA_CERTIFICATES = "/etc/ssl/certs/ca-certificates.crt"
# Istio's root namespace: Telemetry and EnvoyFilter resources here without a selector apply
# to every proxy of the mesh.
ROOT_NAMESPACE = "istio-system"


@dataclass(frozen=True)
class MeshSettings:
    """MeshConfig with defaults applied."""

    trust_domain: str = "cluster.local"
    # Istio's trustDomainAliases: former trust domains whose principals mean the mesh's own.
    trust_domain_aliases: tuple[str, ...] = ()
    envoy_version: str = "1.40.0"
    default_mtls_mode: str = "PERMISSIVE"
    access_log_file: str = ""
    access_log_encoding: str = "JSON"
    # Workload identity and mutual TLS (docs/security.md): on when the MeshConfig has
    # `certificates`. Where each proxy's certificates are, relative to its config directory.
    certificates_dir: str = ""
    workload_cert_lifetime: datetime.timedelta = datetime.timedelta(days=30)
    telemetry: TelemetryProviders = field(default_factory=lambda: providers_from_spec({}))
    system_ca_certificates: str = DEFAULT_SYSTEM_CA_CERTIFICATES
    # Gateway servers' credentialName NAME: the folder NAME here on the gateway's host ("": none).
    credentials_dir: str = ""

    @property
    def identity_enabled(self) -> bool:
        """Whether proxies have workload certificates (and so mTLS and principals exist)."""
        return bool(self.certificates_dir)

    @property
    def trust_domains(self) -> tuple[str, ...]:
        """The mesh's trust domain, then its aliases (Istio's trust domain bundle)."""
        return tuple(dict.fromkeys((self.trust_domain, *self.trust_domain_aliases)))

    @classmethod
    def from_spec(cls, spec: dict) -> "MeshSettings":
        return cls(
            trust_domain=spec.get("trustDomain", cls.trust_domain),
            trust_domain_aliases=tuple(spec.get("trustDomainAliases") or ()),
            envoy_version=spec.get("envoyVersion", cls.envoy_version),
            default_mtls_mode=spec.get("defaultMtlsMode", cls.default_mtls_mode),
            access_log_file=spec.get("accessLogFile", cls.access_log_file),
            access_log_encoding=spec.get("accessLogEncoding", cls.access_log_encoding),
            **_certificate_settings(spec.get("certificates")),
            telemetry=providers_from_spec(spec),
            system_ca_certificates=spec.get("systemCaCertificates", cls.system_ca_certificates),
            credentials_dir=(spec.get("credentials") or {}).get("dir", cls.credentials_dir),
        )


def _certificate_settings(certificates: dict | None) -> dict:
    if certificates is None:
        return {}
    settings = {"certificates_dir": certificates.get("dir", DEFAULT_CERTIFICATES_DIR)}
    if "workloadCertTtl" in certificates:
        settings["workload_cert_lifetime"] = datetime.timedelta(seconds=parse_duration(certificates["workloadCertTtl"]))
    return settings


def config_dir_problem(config_dir: str) -> str | None:
    """Why a proxy's config directory (a path on its host) is not acceptable, or None."""
    if not os.path.isabs(config_dir) or os.path.normpath(config_dir) != config_dir:
        return f"the config directory {config_dir!r} must be an absolute path without '.' or '..' parts"
    return None


def certificates_dir_problem(config_dir: str, certificates_dir: str) -> str | None:
    """Why certificates.dir, resolved against a proxy's config directory, is not acceptable:
    it must name a folder inside the config directory's parent (the meshwright root, such as
    /etc/meshwright for /etc/meshwright/proxy), and that root must not be /."""
    root = os.path.dirname(config_dir)
    if root == "/":
        return (f"the config directory {config_dir} is directly under /: with certificates.dir its parent is the root "
                "that holds the certificates, so use a folder such as /etc/meshwright/proxy")
    resolved = os.path.normpath(os.path.join(config_dir, certificates_dir))
    if not resolved.startswith(root + "/"):
        return (f"certificates.dir {certificates_dir!r} is {resolved}, outside {root} (the parent of the config directory "
                f"{config_dir}): name a folder inside it, such as {DEFAULT_CERTIFICATES_DIR}")
    return None


def resolve_host(host: str, namespace: str) -> str:
    """A short name ("payment-service") means the service of that name in the namespace."""
    if "." in host or "*" in host:
        return host
    return f"{host}.{namespace}.{CLUSTER_DOMAIN}"


def host_matches(pattern: str, hostname: str) -> bool:
    """Istio host matching: exact, "*" for all, or "*.suffix"."""
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return hostname.endswith(pattern[1:])
    return pattern == hostname


def is_wildcard_host(host: str) -> bool:
    """Whether host_matches treats host as a pattern; any other host matches only itself."""
    return host == "*" or host.startswith("*.")


def host_patterns(hostname: str) -> tuple[str, ...]:
    """Every host pattern that matches hostname (host_matches turned around), most specific
    first: the hostname, then "*.suffix" for each shorter suffix, then "*"."""
    patterns = [hostname]
    dot = hostname.find(".")
    while dot != -1:
        patterns.append("*" + hostname[dot:])
        dot = hostname.find(".", dot + 1)
    patterns.append("*")
    return tuple(dict.fromkeys(patterns))  # a wildcard hostname is also its own first pattern


def exports_overlap(first: Resource, second: Resource) -> bool:
    """Whether some namespace sees both resources (exported_to)."""
    def namespaces(resource):
        export = resource.spec.get("exportTo")
        return None if not export or "*" in export else {resource.namespace if name == "." else name for name in export}

    a, b = namespaces(first), namespaces(second)
    return a is None or b is None or not a.isdisjoint(b)


def applies_to_sidecars(virtual_service: Resource) -> bool:
    """A VirtualService routes for sidecars when it names no gateway, or the reserved "mesh"."""
    gateways = virtual_service.spec.get("gateways")
    return not gateways or "mesh" in gateways


def index_by_host(resources: list[Resource], hosts_of) -> dict[str, list[Resource]]:
    """Resolved host (or host pattern) -> the resources naming it, in mesh order."""
    index: dict[str, list[Resource]] = {}
    for resource in resources:
        for host in dict.fromkeys(resolve_host(h, resource.namespace) for h in hosts_of(resource)):
            index.setdefault(host, []).append(resource)
    return index


def workload_selector(resource: Resource) -> dict | None:
    """The labels a Sidecar or EnvoyFilter (workloadSelector.labels) or a PeerAuthentication,
    AuthorizationPolicy, RequestAuthentication or Telemetry (selector.matchLabels) selects
    workloads by; None when it applies to its whole namespace."""
    if resource.kind in ("Sidecar", "EnvoyFilter"):
        return (resource.spec.get("workloadSelector") or {}).get("labels")
    return (resource.spec.get("selector") or {}).get("matchLabels")


def rule_selector(rule: Resource) -> dict | None:
    """The labels a DestinationRule's workloadSelector.matchLabels picks clients by, or None."""
    return (rule.spec.get("workloadSelector") or {}).get("matchLabels")


def destination_rule_applies(rule: Resource, namespace: str, labels: dict) -> bool:
    """Whether a DestinationRule applies to a client in namespace with labels: exported to
    the namespace, and, with a workloadSelector, only to the client workloads it picks in its
    own namespace (Istio does not export such rules)."""
    if not exported_to(rule, namespace):
        return False
    selector = rule_selector(rule)
    return selector is None or (rule.namespace == namespace and labels_match(selector, labels))


@dataclass
class Mesh:
    resources: list[Resource]
    settings: MeshSettings
    registry: Registry
    by_kind: dict[str, list[Resource]] = field(default_factory=dict)
    # Lookups by hostname try the few patterns that can match it (host_patterns) in these
    # indexes, built once here, instead of scanning every resource on every lookup.
    destination_rules_by_host: dict[str, list[Resource]] = field(default_factory=dict)
    sidecar_virtual_services_by_host: dict[str, list[Resource]] = field(default_factory=dict)
    # Selectors read the WorkloadEntries that carry their labels (selected_workloads).
    workloads_by_label: LabelIndex[Resource] = field(default_factory=lambda: LabelIndex([], namespace_of, workload_labels))
    # Answers that compile modules derive from the mesh and reuse for every proxy (see memo),
    # in one table per kind (a key's first item), so that a mesh made from this one by a
    # small change (compile/incremental.py) can take over whole tables its change leaves valid.
    derived: dict[str, dict] = field(default_factory=dict, compare=False, repr=False)
    # Validation warnings (problems that do not stop it), for the caller to print.
    warnings: list = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def build(cls, resources: list[Resource]) -> "Mesh":
        # WorkloadEntries of a WorkloadGroup take what they leave out from its template.
        ordered = sorted(with_workload_groups(resources), key=lambda r: (r.kind, r.namespace, r.name))
        by_kind: dict[str, list[Resource]] = {}
        for resource in ordered:
            by_kind.setdefault(resource.kind, []).append(resource)
        if "VirtualService" in by_kind:
            # Proxies see roots with their delegates' routes merged in (validation reads
            # each VirtualService as written, in resources).
            by_kind["VirtualService"] = merged_virtual_services(by_kind["VirtualService"])
        mesh_configs = by_kind.get("MeshConfig", [])
        settings = MeshSettings.from_spec(mesh_configs[0].spec) if mesh_configs else MeshSettings()
        workloads = LabelIndex(by_kind.get("WorkloadEntry", []), namespace_of, workload_labels)
        registry = services_from_entries(by_kind.get("ServiceEntry", []), workloads)
        destination_rules = index_by_host(by_kind.get("DestinationRule", []), lambda rule: [rule.spec["host"]])
        sidecar_virtual_services = index_by_host(
            [vs for vs in by_kind.get("VirtualService", []) if applies_to_sidecars(vs)], lambda vs: vs.spec["hosts"]
        )
        return cls(ordered, settings, registry, by_kind, destination_rules, sidecar_virtual_services, workloads)

    def memo(self, key: tuple, compute):
        """compute() once per mesh for key (a mesh does not change once built); key[0]
        names the kind of answer."""
        table = self.derived.get(key[0])
        if table is None:
            table = self.derived[key[0]] = {}
        rest = key[1:]
        if rest not in table:
            table[rest] = compute()
        return table[rest]

    def host_patterns(self, hostname: str) -> tuple[str, ...]:
        """host_patterns(hostname), once per mesh and hostname: every proxy's lookups ask for the same hostnames."""
        table = self.derived.setdefault("host-patterns", {})
        found = table.get(hostname)
        if found is None:
            found = table[hostname] = host_patterns(hostname)
        return found

    def of_kind(self, kind: str) -> list[Resource]:
        return self.by_kind.get(kind, [])

    def find(self, kind: str, namespace: str, name: str) -> Resource | None:
        # Indexed kind by kind: a mesh made by an incremental change indexes only the kinds it is asked for.
        return self.memo(("by-key", kind), lambda: self._index_by_key(kind)).get((namespace, name))

    def _index_by_key(self, kind: str) -> dict[tuple[str, str], Resource]:
        """(namespace, name) -> the first resource of the kind of that name, in mesh order."""
        index: dict[tuple[str, str], Resource] = {}
        # of_kind holds merged VirtualServices (delegation): those as written are found here.
        for resource in self.resources if kind == "VirtualService" else self.of_kind(kind):
            if resource.kind == kind:
                index.setdefault((resource.namespace, resource.name), resource)
        return index

    def selecting(self, kind: str, namespace: str, labels: dict) -> list[Resource]:
        """The resources of a kind in namespace whose workload selector matches labels, in mesh order."""
        return self._selectors(kind).selecting(namespace, labels)

    def without_selector(self, kind: str, namespace: str) -> list[Resource]:
        """The resources of a kind in namespace that have no workload selector, in mesh order."""
        return self._selectors(kind).without_selector(namespace)

    def _selectors(self, kind: str) -> SelectorIndex[Resource]:
        return self.memo(("selectors", kind), lambda: SelectorIndex(self.of_kind(kind), namespace_of, workload_selector))

    def selected_workloads(self, namespace: str, selector: dict) -> list[Resource]:
        """The WorkloadEntries of namespace whose labels selector matches, in mesh order."""
        return self.workloads_by_label.select(namespace, selector)

    def selected_workloads_in_every_namespace(self, selector: dict) -> list[Resource]:
        """The WorkloadEntries of every namespace whose labels selector matches."""
        return self.workloads_by_label.select_in_every_namespace(selector)

    def destination_rule_for(self, hostname: str, namespace: str, labels: dict | None = None) -> Resource | None:
        """The DestinationRule for a host that a client in namespace with labels gets: exact
        host first, then the most specific wildcard; among the rules visible to the client
        (destination_rule_applies), one in its own namespace wins over one elsewhere, and
        there one whose workloadSelector picks the client over one without (Istio's order).
        labels None: the rule a client no selector picks gets (validation's view)."""
        for pattern in self.host_patterns(hostname):
            rules = [rule for rule in self.destination_rules_by_host.get(pattern, ()) if destination_rule_applies(rule, namespace, labels or {})]
            if rules:
                return min(rules, key=lambda rule: (rule.namespace != namespace, rule_selector(rule) is None, rule.namespace, rule.name))
        return None

    def sidecar_virtual_service_for(self, hostname: str, namespace: str) -> Resource | None:
        """The VirtualService that routes a host for sidecars in namespace: the first, in
        (namespace, name) order, exported to that namespace with a host that matches it
        (validation allows one per host and namespace that sees it)."""
        candidates = [vs for pattern in self.host_patterns(hostname)
                      for vs in self.sidecar_virtual_services_by_host.get(pattern, []) if exported_to(vs, namespace)]
        return min(candidates, key=lambda vs: (vs.namespace, vs.name)) if candidates else None
