"""Checks of telemetry config: the MeshConfig's providers and Telemetry resources (whether
each compiled proxy can reach its trace collector is check/collectors.py).

Providers that a Telemetry or defaultProviders names must exist and serve that signal; a
Telemetry entry uses what meshwright compiles (entries of one signal for different modes,
one tracing provider, metrics overrides that map onto Envoy's cluster stats and their stat
names); at most one Telemetry applies per level of Istio's precedence (compile/telemetry.py).
"""

from __future__ import annotations

from meshwright.compile.proxy import list_proxies
import re

from meshwright.compile.telemetry import CLIENT, MESH_LABELS, METRIC_STATS, MODES, applies_to, cel_string_literal, selector_of
from meshwright.mesh import Mesh
from meshwright.model.providers import ACCESS_LOGGING, METRICS, OPENTELEMETRY, SIGNAL_TYPES, TRACING
from meshwright.model.resource import Resource
from meshwright.problems import Problems
from meshwright.validate.istio_api import TAG_VALUE_HELP

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
    namespace, dummy, host = collector["service"].rpartition("/")
    service = mesh.registry.get(host)
    if service is None:
        if namespace:
            problems.add(resource, path + ("service",), f"{host!r} is not a service of the mesh, so it has no namespace: write the host (or IP) alone, "
                                                        "reached directly")
        return
    if namespace and namespace != service.namespace:
        problems.add(resource, path + ("service",), f"{host} is a service of namespace {service.namespace}, not {namespace}")
    port = service.port(collector["port"])
    if port is None:
        ports = ", ".join(str(p.number) for p in service.ports)
        problems.add(resource, path + ("port",), f"{host} has no port {collector['port']} (its ports: {ports})")
    elif kind == OPENTELEMETRY and port.protocol not in ("GRPC", "HTTP2"):
        problems.add(resource, path + ("port",), f"spans go to OpenTelemetry over gRPC, but port {port.number} of {host} is {port.protocol}: declare "
                                                 "it protocol GRPC in its ServiceEntry")


# A Prometheus label name (a stat tag's name).
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def check_telemetry(mesh: Mesh, resource: Resource, problems: Problems) -> None:
    """Providers exist and serve their signal; entries of one signal for different modes;
    one tracing provider; metrics overrides that meshwright can carry out."""
    for signal in SIGNALS:
        entries = resource.spec.get(signal) or []
        _check_overlapping_entries(resource, signal, entries, problems)
        for index, entry in enumerate(entries):
            for provider_index, provider in enumerate(entry.get("providers") or []):
                _check_provider_name(mesh, resource, ("spec", signal, index, "providers", provider_index, "name"), signal, provider["name"], problems)
            if signal == TRACING and entry.get("enableIstioTags") is True:
                problems.add(resource, ("spec", signal, index, "enableIstioTags"), "enableIstioTags is not supported by meshwright yet (spans carry "
                             "Envoy's standard tags and the customTags you list, no istio.* tags: give those as customTags, or set it to false)")
            if signal == TRACING and len(entry.get("providers") or []) > 1:
                problems.add(resource, ("spec", signal, index, "providers"), "name one tracing provider: a proxy reports its spans to one collector "
                                                                             "(Istio's rule too)")
            if "reportingInterval" in entry:
                problems.warn(resource, ("spec", signal, index, "reportingInterval"), "reportingInterval changes nothing here: Istio reports "
                              "long connections' TCP metrics at that interval, while meshwright's are Envoy counters, current as bytes "
                              "flow, which Prometheus reads at each scrape")
            for override_index, override in enumerate(entry.get("overrides") or []):
                _check_override(resource, ("spec", signal, index, "overrides", override_index), override, problems)


def _check_overlapping_entries(resource: Resource, signal: str, entries: list[dict], problems: Problems) -> None:
    """Two entries of a signal that apply to the same direction would depend on their order."""
    for mode in MODES:
        applying = [index for index, entry in enumerate(entries) if applies_to(entry.get("match"), mode)]
        if len(applying) > 1:
            what = "match.mode CLIENT and SERVER" if signal != METRICS else "overrides, each with its match.mode"
            problems.add(resource, ("spec", signal, applying[1]), (
                f"entries {applying[0]} and {applying[1]} both apply to {'outbound (CLIENT)' if mode == CLIENT else 'inbound (SERVER)'} traffic: "
                f"write one {signal} entry per direction ({what}) and list several providers in one entry"
            ))
            return


def _check_override(resource: Resource, path: tuple, override: dict, problems: Problems) -> None:
    """A metrics override: a metric that is an Envoy cluster stat; tags for all metrics, with
    values fixed per cluster (the labels of a cluster's stat name, compile/telemetry.py)."""
    metric = (override.get("match") or {}).get("metric", "ALL_METRICS")
    if metric != "ALL_METRICS" and metric not in METRIC_STATS and override.get("disabled") is True and not override.get("tagOverrides"):
        return  # turning off a metric meshwright never records: what Istio's override asks for, already so
    if metric != "ALL_METRICS" and metric not in METRIC_STATS:
        problems.add(resource, path + ("match", "metric"), (
            f"{metric} is not supported by meshwright yet (metrics are Envoy's cluster stats, which have no "
            f"{metric.lower().replace('_', ' ')}: select one of {', '.join(METRIC_STATS)} or ALL_METRICS)"
        ))
        return
    if "disabled" not in override and "tagOverrides" not in override:
        problems.add(resource, path, "an override needs disabled (true: off, false: on) or tagOverrides")
    tags = override.get("tagOverrides") or {}
    if metric != "ALL_METRICS":
        carried = _labels_carried(resource)
        for label, tag in tags.items():
            if tag.get("operation", "UPSERT") == "UPSERT" or label in carried:
                problems.add(resource, path + ("tagOverrides", label), (
                    f"tagOverrides is not supported by meshwright yet for one metric ({metric}) (the labels are those of "
                    "a cluster's stat name, shared by all its metrics: override them with match.metric ALL_METRICS or without match.metric)"
                ))
        return
    for label, tag in tags.items():
        tag_path = path + ("tagOverrides", label)
        if not LABEL_NAME.fullmatch(label):
            problems.add(resource, tag_path, f"{label!r} is not a label name (letters, digits and '_', not starting with a digit)")
        elif tag.get("operation", "UPSERT") == "UPSERT":
            _check_tag_value(resource, tag_path, tag, problems)


def _labels_carried(resource: Resource) -> set[str]:
    """The labels of meshwright's cluster stats: Istio's that it puts in stat names, Envoy's
    response code and cluster name, and those this Telemetry adds."""
    added = {
        label
        for entry in resource.spec.get(METRICS) or []
        for override in entry.get("overrides") or []
        for label, tag in (override.get("tagOverrides") or {}).items()
        if tag.get("operation", "UPSERT") == "UPSERT"
    }
    return {*MESH_LABELS, "cluster_name", "response_code", "response_code_class", *added}


def _check_tag_value(resource: Resource, path: tuple, tag: dict, problems: Problems) -> None:
    if "value" not in tag:
        problems.add(resource, path, "UPSERT needs a value (a CEL expression)")
        return
    literal = cel_string_literal(tag["value"])
    if literal is None:
        problems.add(resource, path + ("value",), f"value {tag['value']!r} is not supported by meshwright yet ({TAG_VALUE_HELP})")
    elif ";" in literal:
        problems.add(resource, path + ("value",), f"a label value must not contain ';' (it ends a label in the stat name): {literal!r}")


def check_telemetry_conflicts(mesh: Mesh, problems: Problems, proxies: list | None = None) -> None:
    """Istio applies one Telemetry per level: one without selector per namespace, and one with
    a selector per workload. proxies: those to check, else all."""
    namespace_wide: dict[str, Resource] = {}
    for telemetry in mesh.of_kind("Telemetry"):
        if selector_of(telemetry) is None:
            first = namespace_wide.setdefault(telemetry.namespace, telemetry)
            if first is not telemetry:
                problems.add(telemetry, ("spec",), f"namespace {telemetry.namespace} already has a Telemetry without selector ({first.ref}): merge them")
    if all(selector_of(t) is None for t in mesh.of_kind("Telemetry")):
        return
    for proxy in list_proxies(mesh) if proxies is None else proxies:
        matched = mesh.selecting("Telemetry", proxy.namespace, proxy.label_map)
        for telemetry in matched[1:]:
            problems.add(telemetry, ("spec", "selector"), f"{matched[0].ref} also selects proxy {proxy.id}: one Telemetry may select a workload; merge them")
