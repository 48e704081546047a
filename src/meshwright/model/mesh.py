"""The whole mesh as the compiler sees it: resources by kind, the registry, mesh settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from meshwright.model.resource import Resource
from meshwright.registry.inventory import services_from_entries
from meshwright.registry.model import Registry

CLUSTER_DOMAIN = "svc.cluster.local"


@dataclass(frozen=True)
class MeshSettings:
    """MeshConfig with defaults applied."""

    trust_domain: str = "cluster.local"
    envoy_version: str = "1.40.0"
    default_mtls_mode: str = "PERMISSIVE"
    access_log_file: str = ""
    access_log_encoding: str = "JSON"
    enable_metrics: bool = True
    enable_tracing: bool = False
    tracing_sampling: float = 1.0
    zipkin_address: str = ""

    @classmethod
    def from_spec(cls, spec: dict) -> "MeshSettings":
        tracing = spec.get("tracing", {})
        return cls(
            trust_domain=spec.get("trustDomain", cls.trust_domain),
            envoy_version=spec.get("envoyVersion", cls.envoy_version),
            default_mtls_mode=spec.get("defaultMtlsMode", cls.default_mtls_mode),
            access_log_file=spec.get("accessLogFile", cls.access_log_file),
            access_log_encoding=spec.get("accessLogEncoding", cls.access_log_encoding),
            enable_metrics=spec.get("enableMetrics", cls.enable_metrics),
            enable_tracing=spec.get("enableTracing", cls.enable_tracing),
            tracing_sampling=float(tracing.get("sampling", cls.tracing_sampling)),
            zipkin_address=tracing.get("zipkin", {}).get("address", ""),
        )


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


def labels_match(selector: dict, labels: dict) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


@dataclass
class Mesh:
    resources: list[Resource]
    settings: MeshSettings
    registry: Registry
    by_kind: dict[str, list[Resource]] = field(default_factory=dict)

    @classmethod
    def build(cls, resources: list[Resource]) -> "Mesh":
        ordered = sorted(resources, key=lambda r: (r.kind, r.namespace, r.name))
        by_kind: dict[str, list[Resource]] = {}
        for resource in ordered:
            by_kind.setdefault(resource.kind, []).append(resource)
        mesh_configs = by_kind.get("MeshConfig", [])
        settings = MeshSettings.from_spec(mesh_configs[0].spec) if mesh_configs else MeshSettings()
        registry = services_from_entries(by_kind.get("ServiceEntry", []), by_kind.get("WorkloadEntry", []))
        return cls(ordered, settings, registry, by_kind)

    def of_kind(self, kind: str) -> list[Resource]:
        return self.by_kind.get(kind, [])

    def find(self, kind: str, namespace: str, name: str) -> Resource | None:
        return next((r for r in self.of_kind(kind) if r.namespace == namespace and r.name == name), None)

    def destination_rule_for(self, hostname: str, namespace: str) -> Resource | None:
        """The DestinationRule for a host: exact host first, then the most specific wildcard;
        a rule in the client's namespace wins over one elsewhere (Istio's lookup order)."""
        candidates = []
        for rule in self.of_kind("DestinationRule"):
            host = resolve_host(rule.spec["host"], rule.namespace)
            if host_matches(host, hostname):
                exact = host == hostname
                candidates.append((not exact, -len(host), rule.namespace != namespace, rule.namespace, rule.name, rule))
        return min(candidates, key=lambda c: c[:5])[5] if candidates else None
