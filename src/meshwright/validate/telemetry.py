"""Checks of telemetry config: the MeshConfig's providers and Telemetry resources (whether
each compiled proxy can reach its trace collector is check/collectors.py).

Providers that a Telemetry or defaultProviders names must exist and serve that signal; a
Telemetry entry uses what meshwright compiles (one entry per signal, one tracing provider,
metrics overrides that turn all metrics off or on); at most one Telemetry applies per level
of Istio's precedence (compile/telemetry.py).
"""

from __future__ import annotations

from meshwright.compile.proxy import list_proxies
from meshwright.compile.telemetry import selector_of
from meshwright.mesh import Mesh
from meshwright.model.providers import ACCESS_LOGGING, METRICS, OPENTELEMETRY, SIGNAL_TYPES, TRACING
from meshwright.model.resource import Resource
from meshwright.problems import Problems

SIGNALS = (ACCESS_LOGGING, TRACING, METRICS)
PROVIDER_EXAMPLES = {
    ACCESS_LOGGING: "{name: file-log, envoyFileAccessLog: {path: /dev/stdout}}",
    TRACING: "{name: zipkin, zipkin: {service: HOST, port: 9411}}",
    METRICS: "{name: prometheus, prometheus: {}}",
}
TYPE_NAMES = {ACCESS_LOGGING: "an envoyFileAccessLog provider", TRACING: "a zipkin or opentelemetry provider", METRICS: "a prometheus provider"}


def _check_provider_name(mesh: Mesh, resource: Resource, path: tuple, signal: str, name: str, problems: Problems) -> None:
    providers = mesh.settings.telemetry
    provider = providers.get(name)
    if provider is None:
        known = ", ".join(sorted(p.name for p in providers.providers))
        problems.add(resource, path, (
            f"provider {name!r} is not defined: define it in the MeshConfig's extensionProviders "
            f"({PROVIDER_EXAMPLES[signal]}) (defined: {known})"
        ))
    elif provider.type not in SIGNAL_TYPES[signal]:
        problems.add(resource, path, f"provider {name!r} is a {provider.type} provider: {signal} needs {TYPE_NAMES[signal]}")


def check_mesh_config(mesh: Mesh, resource: Resource, problems: Problems) -> None:
    """Provider names are unique; collectors that are mesh services have the port named;
    default providers exist and serve their signal."""
    seen: set[str] = set()
    for index, spec in enumerate(resource.spec.get("extensionProviders") or []):
        if spec["name"] in seen:
            problems.add(resource, ("spec", "extensionProviders", index, "name"), f"provider {spec['name']!r} is defined twice")
        seen.add(spec["name"])
        for kind in ("zipkin", "opentelemetry"):
            if kind in spec:
                _check_collector(mesh, resource, ("spec", "extensionProviders", index, kind), kind, spec[kind], problems)
    defaults = resource.spec.get("defaultProviders") or {}
    for signal in SIGNALS:
        for index, name in enumerate(defaults.get(signal) or []):
            _check_provider_name(mesh, resource, ("spec", "defaultProviders", signal, index), signal, name, problems)
    if len(defaults.get(TRACING) or []) > 1:
        problems.add(resource, ("spec", "defaultProviders", TRACING), "name one tracing provider: a proxy reports its spans to one collector")


def _check_collector(mesh: Mesh, resource: Resource, path: tuple, kind: str, collector: dict, problems: Problems) -> None:
    namespace, _, host = collector["service"].rpartition("/")
    service = mesh.registry.get(host)
    if service is None:
        if namespace:
            problems.add(resource, path + ("service",), f"{host!r} is not a service of the mesh, so it has no namespace: write the host (or IP) alone, reached directly")
        return
    if namespace and namespace != service.namespace:
        problems.add(resource, path + ("service",), f"{host} is a service of namespace {service.namespace}, not {namespace}")
    port = service.port(collector["port"])
    if port is None:
        ports = ", ".join(str(p.number) for p in service.ports)
        problems.add(resource, path + ("port",), f"{host} has no port {collector['port']} (its ports: {ports})")
    elif kind == OPENTELEMETRY and port.protocol not in ("GRPC", "HTTP2"):
        problems.add(resource, path + ("port",), f"spans go to OpenTelemetry over gRPC, but port {port.number} of {host} is {port.protocol}: declare it protocol GRPC in its ServiceEntry")


def check_telemetry(mesh: Mesh, resource: Resource, problems: Problems) -> None:
    """Providers exist and serve their signal; one entry per signal, one tracing provider;
    metrics overrides turn all metrics off or on."""
    for signal in SIGNALS:
        entries = resource.spec.get(signal) or []
        if len(entries) > 1:
            problems.add(resource, ("spec", signal, 1), (
                f"write one {signal} entry: without match (CLIENT or SERVER mode), entries would apply "
                "to the same traffic; list several providers in one entry"
            ))
        for index, entry in enumerate(entries):
            for provider_index, provider in enumerate(entry.get("providers") or []):
                _check_provider_name(mesh, resource, ("spec", signal, index, "providers", provider_index, "name"), signal, provider["name"], problems)
            if signal == TRACING and len(entry.get("providers") or []) > 1:
                problems.add(resource, ("spec", signal, index, "providers"), "name one tracing provider: a proxy reports its spans to one collector")
            for override_index, override in enumerate(entry.get("overrides") or []):
                match = override.get("match") or {}
                path = ("spec", signal, index, "overrides", override_index)
                if match.get("metric", "ALL_METRICS") != "ALL_METRICS" or match.get("mode", "CLIENT_AND_SERVER") != "CLIENT_AND_SERVER":
                    problems.add(resource, path + ("match",), (
                        "metrics here are Envoy's stats with Istio's labels: an override can turn them all off "
                        "or on for the selected workloads (overrides: [{disabled: true}]), not one metric or one mode"
                    ))
                elif "disabled" not in override:
                    problems.add(resource, path, "an override needs disabled: true (metrics off) or false (on)")


def check_telemetry_conflicts(mesh: Mesh, problems: Problems) -> None:
    """Istio applies one Telemetry per level: one without selector per namespace, and one with
    a selector per workload."""
    namespace_wide: dict[str, Resource] = {}
    for telemetry in mesh.of_kind("Telemetry"):
        if selector_of(telemetry) is None:
            first = namespace_wide.setdefault(telemetry.namespace, telemetry)
            if first is not telemetry:
                problems.add(telemetry, ("spec",), f"namespace {telemetry.namespace} already has a Telemetry without selector ({first.ref}): merge them")
    if all(selector_of(t) is None for t in mesh.of_kind("Telemetry")):
        return
    for proxy in list_proxies(mesh):
        matched = mesh.selecting("Telemetry", proxy.namespace, proxy.label_map)
        for telemetry in matched[1:]:
            problems.add(telemetry, ("spec", "selector"), f"{matched[0].ref} also selects proxy {proxy.id}: one Telemetry may select a workload; merge them")
