"""Telemetry of a proxy: access logs, tracing and metrics, as Istio's Telemetry API decides.

`effective_telemetry` is the one place that decides what a proxy reports and to which
provider. It starts from the MeshConfig's defaultProviders, then applies the Telemetry
resources that select the proxy from the least to the most specific (Istio's precedence):
one in the root namespace (istio-system) without a selector (mesh-wide), one in the proxy's
namespace without a selector, one in the proxy's namespace whose selector matches its
labels. A field that a more specific resource sets replaces the same field of a less
specific one (providers, disabled, randomSamplingPercentage, disableSpanReporting); a field
it does not set is inherited.

Each signal is decided twice, once per direction (Istio's workload mode): CLIENT for the
outbound listeners of a sidecar and every listener of a gateway, SERVER for a sidecar's
inbound listeners. An entry with `match.mode` applies to its direction only.

`apply_telemetry` writes the result into the proxy's resources: access logs on every HTTP
connection manager and TCP proxy, tracing on every HTTP connection manager. Metrics: the
labels of a cluster go into its stat name (`alt_stat_name`, `with_class_stat_names`), the same
for every proxy of a class; the proxy's own labels (its workload's, the services it serves)
are the bootstrap's fixed tags (`own_stat_tags`), and the bootstrap's `stats_config` turns both
into Prometheus labels on /stats/prometheus. The scrape names the fixed tags as Istio does,
by reporter (compile/prometheus.py).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from meshwright.compile.clusters import outbound_cluster_name, static_cluster
from meshwright.compile.envoy_values import (
    CEL_ACCESS_LOG_FILTER, FILE_ACCESS_LOG, HCM_FILTER, OPENTELEMETRY_CONFIG, TCP_PROXY_FILTER, UUID_REQUEST_ID, ZIPKIN_CONFIG, typed,
)
from meshwright.compile.gateway import GATEWAY
from meshwright.compile.proxy import Proxy
from meshwright.compile.sidecar import INBOUND, OUTBOUND
from meshwright.mesh import ROOT_NAMESPACE, Mesh, labels_match
from meshwright.model.providers import (
    ACCESS_LOG_PATH_HELP, ACCESS_LOGGING, METRICS, OPENTELEMETRY, PROMETHEUS, SIGNAL_TYPES, TRACING, ZIPKIN, Provider, is_access_log_path,
)
from meshwright.model.resource import Resource

# Istio's default sampling when no Telemetry sets randomSamplingPercentage (percent).
DEFAULT_SAMPLING = 1.0

# Istio's access log fields, as JSON lines (envoyFileAccessLog with `labels: {}`, and the
# built-in `envoy` provider with accessLogEncoding JSON).
ACCESS_LOG_JSON = {
    "start_time": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "duration": "%DURATION%",
    "upstream_host": "%UPSTREAM_HOST%",
    # RAW: the cluster's name, not its stat name (which carries the metric labels).
    "upstream_cluster": "%UPSTREAM_CLUSTER_RAW%",
    "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "authority": "%REQ(:AUTHORITY)%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "user_agent": "%REQ(USER-AGENT)%",
    "route_name": "%ROUTE_NAME%",
}
ACCESS_LOG_TEXT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% '
    '%RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% '
    '"%REQ(:AUTHORITY)%" "%REQ(X-REQUEST-ID)%"\n'
)

# Metric labels: a mesh cluster's stat name is its name followed by ";label=value" for each
# of these it has, and a final ";" (outbound|9080|v1|reviews.default.svc.cluster.local;
# reporter=source;source_workload=client;...;). The ";" ends the name where the FQDN's dots
# would not: Envoy's default tag cuts a cluster name at its first dot.
MESH_LABELS = (
    "reporter",
    "source_workload", "source_workload_namespace", "source_app", "source_version",
    "destination_service", "destination_port", "destination_subset",
    "destination_workload", "destination_workload_namespace", "destination_app", "destination_version",
)
# A proxy's own labels on the stats of its clusters, by direction: its workload's and, on an
# inbound cluster, the service it serves there. Every cluster of the proxy would carry them, so
# they are not in the stat names (proxies of a class then have byte-identical clusters) but
# tags with a fixed value on all of the proxy's stats, under neutral names: the scrape turns
# them into source_* (reporter="source") or destination_* (reporter="destination").
OWN_LABELS = {
    "outbound": ("source_workload", "source_workload_namespace", "source_app", "source_version"),
    "inbound": ("destination_workload", "destination_workload_namespace", "destination_app", "destination_version", "destination_service"),
}
# The workload's fixed tags, in the order of OWN_LABELS' workload labels.
WORKLOAD_TAGS = ("mesh_workload", "mesh_workload_namespace", "mesh_app", "mesh_version")
# The service the workload serves on its inbound ports, when it is one ("reviews.default.svc.
# cluster.local"); else the services by port ("9080=reviews.default.svc.cluster.local,...").
SERVICE_TAG, SERVICES_TAG = "mesh_service", "mesh_services"
OWN_TAGS = (*WORKLOAD_TAGS, SERVICE_TAG, SERVICES_TAG)
# Envoy's default tags that are kept (use_all_default_tags is off, as in Istio, so that
# cluster_name and response_code are ours); their regexes are Envoy's.
ENVOY_DEFAULT_TAGS = (
    "envoy.http_conn_manager_prefix", "envoy.listener_address", "envoy.tcp_prefix", "envoy.virtual_host",
    "envoy.virtual_cluster", "envoy.rds_route_config", "envoy.http_user_agent", "envoy.fault_downstream_cluster",
    "envoy.ssl_cipher",
)


# Istio's workload modes: the direction of a listener (CLIENT: the proxy calls out; SERVER:
# it is called). A gateway's listeners are CLIENT, as in Istio.
CLIENT, SERVER, CLIENT_AND_SERVER = "CLIENT", "SERVER", "CLIENT_AND_SERVER"
MODES = (CLIENT, SERVER)
MODE_OF_CONTEXT = {OUTBOUND: CLIENT, GATEWAY: CLIENT, INBOUND: SERVER}
# Cluster directions (the first field of a mesh cluster's name) and the mode that reports them.
MODE_OF_CLUSTER = {"outbound": CLIENT, "inbound": SERVER}

# Istio's standard metrics that have an Envoy cluster stat of the same meaning, and the stat
# names (after "cluster.<name>.") that carry them: a metric turned off is not recorded.
METRIC_STATS = {
    "REQUEST_COUNT": r"(?:external_|internal_)?upstream_rq(?:_total|_completed|_\d{3}|_\dxx)",
    "REQUEST_DURATION": r"(?:external_|internal_)?upstream_rq_time",
    "TCP_OPENED_CONNECTIONS": r"upstream_cx_total",
    "TCP_CLOSED_CONNECTIONS": r"upstream_cx_destroy",
    "TCP_SENT_BYTES": r"upstream_cx_tx_bytes_total",
    "TCP_RECEIVED_BYTES": r"upstream_cx_rx_bytes_total",
    # Body sizes: histograms a cluster records with track_cluster_stats.request_response_sizes.
    "REQUEST_SIZE": r"upstream_rq_body_size",
    "RESPONSE_SIZE": r"upstream_rs_body_size",
}
SIZE_METRICS = ("REQUEST_SIZE", "RESPONSE_SIZE")
# What request_response_sizes also records and no Istio metric is made of: never recorded.
HEADER_SIZES = r"^cluster\.(?:inbound|outbound)\|.*\.upstream_r[qs]_headers_size$"
# Buckets of the size histograms (bytes): powers of ten up to 1 GB, as Istio's byte histograms
# (Envoy's default buckets are for milliseconds and end at 3.6 MB).
SIZE_BUCKETS = tuple(float(10 ** power) for power in range(10))


@dataclass(frozen=True)
class Tracing:
    provider: Provider
    sampling: float  # percent of requests without a sampling decision that are traced
    cluster: str  # where spans go: a mesh service's outbound cluster, or a dedicated one
    dedicated: bool  # True: the bootstrap defines the cluster (collector_clusters)
    custom_tags: tuple[tuple[str, str, str, str], ...] = ()  # (tag, literal/environment/header, value or name, default), by tag
    # Istio's useRequestIdForTraceSampling (default true, Envoy's default too): whether the
    # sampling decision follows the x-request-id (stable per request id) or is random.
    request_id_sampling: bool = True


@dataclass(frozen=True)
class AccessLog:
    provider: Provider
    filter: str = ""  # a CEL expression: only the requests (connections) for which it is true are logged


@dataclass(frozen=True)
class Metrics:
    """One direction's metrics: label overrides on its clusters' stat names (label, value;
    None removes it) and the metrics turned off."""
    tags: tuple[tuple[str, str | None], ...] = ()
    disabled: tuple[str, ...] = ()


@dataclass(frozen=True)
class Direction:
    access_logs: tuple[AccessLog, ...] = ()
    tracing: Tracing | None = None
    metrics: Metrics | None = None  # None: no metrics (plain stat names)


@dataclass(frozen=True)
class ProxyTelemetry:
    client: Direction = Direction()
    server: Direction = Direction()

    def of(self, mode: str) -> Direction:
        return self.client if mode == CLIENT else self.server

    @property
    def metrics(self) -> bool:
        """The proxy serves metrics (its stats listener) when either direction has them."""
        return self.client.metrics is not None or self.server.metrics is not None

    @property
    def tracings(self) -> tuple[Tracing, ...]:
        """The distinct tracing settings of the two directions (one when they agree)."""
        return tuple(dict.fromkeys(t for t in (self.client.tracing, self.server.tracing) if t is not None))

    @property
    def extra_labels(self) -> tuple[str, ...]:
        """Labels that tagOverrides add to stat names, beyond Istio's (stats_config tags them)."""
        added = (label for d in (self.client, self.server) if d.metrics for label, value in d.metrics.tags if value is not None)
        return tuple(sorted({label for label in added if label not in MESH_LABELS}))


def selector_of(telemetry: Resource) -> dict | None:
    selector = telemetry.spec.get("selector")
    return None if selector is None else selector["matchLabels"]


def telemetry_layers(mesh: Mesh, proxy: Proxy) -> list[Resource]:
    """The Telemetry resources that apply to a proxy, least specific first: root namespace,
    the proxy's namespace, a selector that matches it. Of several at one level the first by
    name counts (validation reports the others)."""
    root, namespace, workload = [], [], []
    for telemetry in mesh.of_kind("Telemetry"):
        selector = selector_of(telemetry)
        if selector is None and telemetry.namespace == ROOT_NAMESPACE:
            root.append(telemetry)
        elif selector is None and telemetry.namespace == proxy.namespace:
            namespace.append(telemetry)
        elif selector is not None and telemetry.namespace == proxy.namespace and labels_match(selector, proxy.label_map):
            workload.append(telemetry)
    return [level[0] for level in (root, namespace, workload) if level]


def applies_to(match: dict | None, mode: str) -> bool:
    """Whether an entry (or metrics override) with this match applies to a direction."""
    return (match or {}).get("mode", CLIENT_AND_SERVER) in (CLIENT_AND_SERVER, mode)


def _merged(layers: list[Resource], signal: str, mode: str) -> dict:
    """One signal's settings for one direction after the layers: each field from the most
    specific entry that applies and sets it (an empty providers list inherits, as in Istio);
    an access log's filter is the most specific applying entry's own (Istio), and custom
    tags and metrics overrides add up, tag by tag."""
    merged: dict = {}
    for layer in layers:
        for entry in layer.spec.get(signal) or []:
            if not applies_to(entry.get("match"), mode):
                continue
            if signal == ACCESS_LOGGING:
                merged.pop("filter", None)
            for key, value in entry.items():
                if key == "overrides":
                    _merge_overrides(merged, value, mode)
                elif key == "customTags":
                    merged["customTags"] = {**merged.get("customTags", {}), **value}
                elif key != "match" and (key != "providers" or value):
                    merged[key] = value
    return merged


def _merge_overrides(merged: dict, overrides: list[dict], mode: str) -> None:
    """Metrics overrides of one direction, in order: all metrics on or off, one metric off
    (or back on), tag overrides of all metrics (validation refuses what does not map)."""
    for override in overrides:
        match = override.get("match") or {}
        if not applies_to(match, mode):
            continue
        metric = match.get("metric", "ALL_METRICS")
        if metric not in METRIC_STATS and metric != "ALL_METRICS":
            continue  # a metric no cluster stat records (request sizes, gRPC messages): off already
        if "disabled" in override:
            if metric == "ALL_METRICS":
                merged["disabled"] = override["disabled"]
            else:
                merged.setdefault("metrics_off", {})[metric] = override["disabled"]
        # Of one metric, only REMOVE of a label meshwright's stats never carry (validation):
        # nothing to do, the metric already lacks it.
        for label, tag in (override.get("tagOverrides") or {}).items() if metric == "ALL_METRICS" else ():
            merged.setdefault("tags", {})[label] = None if tag.get("operation") == "REMOVE" else cel_string_literal(tag.get("value", ""))


def cel_string_literal(expression: str) -> str | None:
    """The string a CEL expression that is a plain string literal ('v1' or "v1") stands for,
    else None (validation refuses other expressions: a stat name is fixed per cluster)."""
    text = expression.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" and "\\" not in text and text[0] not in text[1:-1]:
        return text[1:-1]
    return None


def _providers(mesh: Mesh, settings: dict, signal: str) -> tuple[Provider, ...]:
    names = [p["name"] for p in settings["providers"]] if "providers" in settings else list(mesh.settings.telemetry.default(signal))
    found = (mesh.settings.telemetry.get(name) for name in dict.fromkeys(names))
    return tuple(p for p in found if p is not None and p.type in SIGNAL_TYPES[signal])


def _collector(mesh: Mesh, provider: Provider) -> tuple[str, bool]:
    """(cluster, dedicated): a mesh service's outbound cluster when the collector is one,
    else a cluster of its own that the bootstrap defines."""
    service = mesh.registry.get(provider.host)
    if service is not None:
        return outbound_cluster_name(provider.port, "", service.hostname), False
    return f"tracing|{provider.name}", True


def effective_telemetry(mesh: Mesh, proxy: Proxy) -> ProxyTelemetry:
    """What this proxy logs, traces and measures, in each direction, and with which providers.
    The layers decide it all: proxies under the same Telemetry resources share one answer."""
    layers = telemetry_layers(mesh, proxy)
    key = ("effective telemetry", *(layer.ref for layer in layers))
    return mesh.memo(key, lambda: ProxyTelemetry(*(_direction(mesh, layers, mode) for mode in MODES)))


def _direction(mesh: Mesh, layers: list[Resource], mode: str) -> Direction:
    logging = _merged(layers, ACCESS_LOGGING, mode)
    log_filter = (logging.get("filter") or {}).get("expression", "")
    access_logs = () if logging.get("disabled") else tuple(AccessLog(p, log_filter) for p in _providers(mesh, logging, ACCESS_LOGGING))
    tracing_settings = _merged(layers, TRACING, mode)
    tracers = _providers(mesh, tracing_settings, TRACING)
    tracing = None
    if tracers and not tracing_settings.get("disableSpanReporting"):
        cluster, dedicated = _collector(mesh, tracers[0])
        tags = tuple(custom_tag_source(tag, spec) for tag, spec in sorted(tracing_settings.get("customTags", {}).items()))
        tracing = Tracing(tracers[0], float(tracing_settings.get("randomSamplingPercentage", DEFAULT_SAMPLING)), cluster, dedicated, tags,
                          tracing_settings.get("useRequestIdForTraceSampling", True))
    metrics_settings = _merged(layers, METRICS, mode)
    metrics = None
    if not metrics_settings.get("disabled") and any(p.type == PROMETHEUS for p in _providers(mesh, metrics_settings, METRICS)):
        off = tuple(sorted(metric for metric, disabled in metrics_settings.get("metrics_off", {}).items() if disabled))
        metrics = Metrics(tuple(sorted(metrics_settings.get("tags", {}).items())), off)
    return Direction(access_logs, tracing, metrics)


# --- Envoy configuration --------------------------------------------------------------


def access_log(log: AccessLog) -> dict:
    """A file access log; with a filter, Envoy's CEL access log filter (the attributes of
    Istio's expressions are Envoy's: response.code, request.headers, ...)."""
    provider = log.provider
    if not is_access_log_path(provider.path):  # validation refused it already: checked at both ends
        raise ValueError(f"refusing access log path {provider.path!r}: expected {ACCESS_LOG_PATH_HELP}")
    if provider.encoding == "JSON":
        log_format: dict = {"json_format": dict(provider.labels or ACCESS_LOG_JSON)}
    else:
        text = provider.text or ACCESS_LOG_TEXT
        log_format = {"text_format_source": {"inline_string": text if text.endswith("\n") else text + "\n"}}
    config: dict = {"name": "envoy.access_loggers.file"}
    if log.filter:
        config["filter"] = {"extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel", "typed_config": typed(CEL_ACCESS_LOG_FILTER, expression=log.filter),
        }}
    config["typed_config"] = typed(FILE_ACCESS_LOG, path=provider.path, log_format=log_format)
    return config


def http_tracing(tracing: Tracing, proxy: Proxy) -> dict:
    """An HTTP connection manager's tracing. Spans name the proxy's service "name.namespace"
    (Zipkin takes it from the bootstrap's node.cluster, OpenTelemetry from service_name)."""
    provider = tracing.provider
    if provider.type == ZIPKIN:
        tracer = {"name": "envoy.tracers.zipkin", "typed_config": typed(
            ZIPKIN_CONFIG, collector_cluster=tracing.cluster, collector_endpoint=provider.path, collector_endpoint_version="HTTP_JSON",
            collector_hostname=provider.host, shared_span_context=False, trace_id_128bit=True,
        )}
    else:
        tracer = {"name": "envoy.tracers.opentelemetry", "typed_config": typed(
            OPENTELEMETRY_CONFIG, grpc_service={"envoy_grpc": {"cluster_name": tracing.cluster, "authority": provider.host}}, service_name=proxy.id,
        )}
    # One span per proxy and request, as in Istio's traces: the outbound side's is a CLIENT
    # span (the listener's direction), the inbound side's its SERVER child.
    config = {"random_sampling": {"value": tracing.sampling}, "provider": tracer}
    if tracing.custom_tags:
        config["custom_tags"] = [custom_tag(*source) for source in tracing.custom_tags]
    return config


def custom_tag_source(tag: str, spec: dict) -> tuple[str, str, str, str]:
    """Istio's customTags entry: (tag, kind, literal value or variable/header name, default)."""
    kind = next(k for k in ("literal", "environment", "header") if k in spec)
    source = spec[kind]
    return (tag, kind, source["value"] if kind == "literal" else source["name"], source.get("defaultValue", ""))


def custom_tag(tag: str, kind: str, name: str, default: str) -> dict:
    """A span tag as Envoy's: a literal value, an environment variable of the proxy or a
    request header, each with its default."""
    if kind == "literal":
        return {"tag": tag, "literal": {"value": name}}
    source = {"name": name, **({"default_value": default} if default else {})}
    return {"tag": tag, "environment" if kind == "environment" else "request_header": source}


def collector_clusters(telemetry: ProxyTelemetry) -> list[dict]:
    """Bootstrap clusters of collectors that are not mesh services: an IP, or a name that
    DNS resolves (STRICT_DNS). OTLP is gRPC, so its cluster speaks HTTP/2."""
    dedicated = {t.cluster: t.provider for t in telemetry.tracings if t.dedicated}
    return [_collector_cluster(name, provider) for name, provider in dedicated.items()]


def _collector_cluster(name: str, provider: Provider) -> dict:
    cluster = static_cluster(name, provider.host, provider.port, http2=provider.type == OPENTELEMETRY)
    try:
        ipaddress.ip_address(provider.host)
    except ValueError:
        cluster["type"] = "STRICT_DNS"
        cluster["dns_lookup_family"] = "V4_ONLY"
    return cluster


def stats_config(telemetry: ProxyTelemetry | None = None, own_tags: tuple[tuple[str, str], ...] = ()) -> dict:
    """Tags that turn stat names into Prometheus labels: the mesh labels of cluster stat
    names (cluster_stat_name) and those tagOverrides add, the proxy's own labels as fixed
    tags (own_stat_tags), the response code, and Envoy's other default tags; metrics turned
    off are not recorded (stats_matcher)."""
    extra = telemetry.extra_labels if telemetry is not None else ()
    per_proxy = telemetry is None or stat_names_per_proxy(telemetry)
    # Without per-proxy stat names, no stat name holds the workload's labels: no regex for them.
    own = () if per_proxy else OWN_LABELS["outbound"] + OWN_LABELS["inbound"][:-1]
    labels = [label for label in (*MESH_LABELS, *extra) if label not in own]
    tags = [
        # A mesh cluster's name is what comes before its first ";"; another cluster's (admin,
        # a collector) what comes before the first dot, as in Envoy. The match ends at the
        # dot after the name, so that what remains is cluster.<stat>.
        {"tag_name": "cluster_name", "regex": r"^cluster\.(([^;]+(?=;)|[^;.]+)(?:;[^;=]+=[^;]*)*;?\.)"},
        *({"tag_name": label, "regex": rf"^cluster\.[^;]*;(?:[^;]*;)*?{label}=([^;]*);"} for label in labels),
        *({"tag_name": name, "fixed_value": value} for name, value in own_tags),
        {"tag_name": "response_code", "regex": r"_rq(_(\d{3}))$"},
        {"tag_name": "response_code_class", "regex": r"_rq(_(\dxx))$"},
        *({"tag_name": name} for name in ENVOY_DEFAULT_TAGS),
    ]
    config: dict = {"use_all_default_tags": False, "stats_tags": tags}
    excluded = [*([HEADER_SIZES] if _sizes_in(telemetry) else []), *_metrics_off(telemetry)] if telemetry is not None else []
    if excluded:
        config["stats_matcher"] = {"exclusion_list": {"patterns": [{"safe_regex": {"regex": regex}} for regex in excluded]}}
    if telemetry is not None and _sizes_in(telemetry):
        config["histogram_bucket_settings"] = [{
            "match": {"safe_regex": {"regex": r"^cluster\.(?:inbound|outbound)\|.*\.upstream_r[qs]_body_size$"}}, "buckets": list(SIZE_BUCKETS),
        }]
    return config


def records_sizes(metrics: Metrics | None) -> bool:
    """Whether a direction's clusters record request and response sizes (Istio's
    REQUEST_SIZE, RESPONSE_SIZE): with metrics, unless both are turned off."""
    return metrics is not None and not set(SIZE_METRICS) <= set(metrics.disabled)


def _sizes_in(telemetry: ProxyTelemetry) -> bool:
    return any(records_sizes(telemetry.of(mode).metrics) for mode in MODES)


def _metrics_off(telemetry: ProxyTelemetry) -> list[str]:
    """Regexes of the cluster stats of the metrics a direction turned off."""
    out = []
    for direction, mode in (("outbound", CLIENT), ("inbound", SERVER)):
        metrics = telemetry.of(mode).metrics
        for metric in metrics.disabled if metrics else ():
            out.append(rf"^cluster\.{direction}\|.*\.{METRIC_STATS[metric]}$")
    return out


def cluster_stat_name(cluster: str, labels: list[tuple[str, str]]) -> str:
    return cluster + _label_text(labels) + ";"


def _workload_labels(proxy: Proxy, side: str) -> list[tuple[str, str]]:
    """side: "source" or "destination": this proxy's workload, as Istio labels it."""
    labels = proxy.label_map
    return [
        (f"{side}_workload", proxy.name), (f"{side}_workload_namespace", proxy.namespace),
        (f"{side}_app", labels.get("app", "")), (f"{side}_version", labels.get("version", "")),
    ]


def _services_by_workload(mesh: Mesh) -> dict[str, list[tuple[str, frozenset[int]]]]:
    """Workload ("name.namespace") -> (service hostname, the ports it serves it on)."""
    index: dict[str, list[tuple[str, frozenset[int]]]] = {}
    for service in mesh.registry.sorted():
        for endpoint in service.endpoints:
            if endpoint.workload:
                index.setdefault(endpoint.workload, []).append((service.hostname, frozenset(endpoint.port_for(p) for p in service.ports)))
    return index


def services_served(mesh: Mesh, proxy: Proxy) -> list[tuple[str, frozenset[int]]]:
    """(service hostname, the ports it serves it on) of the services a proxy's workload serves."""
    return mesh.memo(("telemetry", "services by workload"), lambda: _services_by_workload(mesh)).get(proxy.id, [])


def _inbound_service(mesh: Mesh, proxy: Proxy, port: int) -> str:
    """The service this workload serves on an inbound port, when exactly one does."""
    hosts = sorted({host for host, ports in services_served(mesh, proxy) if port in ports})
    return hosts[0] if len(hosts) == 1 else ""


def with_tag_overrides(labels: list[tuple[str, str]], tags: tuple[tuple[str, str | None], ...]) -> list[tuple[str, str]]:
    """Istio's labels after tagOverrides: REMOVE drops a label, UPSERT sets its value (a new
    label goes after Istio's)."""
    values = dict(labels)
    for label, value in tags:
        if value is None:
            values.pop(label, None)
        else:
            values[label] = value
    return list(values.items())


def cluster_labels(mesh: Mesh, proxy: Proxy, cluster: str) -> list[tuple[str, str]]:
    """Istio's labels for a cluster's stats: outbound clusters report as the source (this
    proxy calls destination_service), inbound ones as the destination (this proxy serves)."""
    direction, port, subset, host = (cluster.split("|") + ["", "", ""])[:4]
    if direction == "outbound":
        return [("reporter", "source"), *_workload_labels(proxy, "source"), ("destination_service", host), ("destination_port", port),
                ("destination_subset", subset)]
    if direction == "inbound":
        return [("reporter", "destination"), *_workload_labels(proxy, "destination"), ("destination_service", _inbound_service(mesh, proxy, int(port))),
                ("destination_port", port)]
    return []


def apply_telemetry(proxy: Proxy, telemetry: ProxyTelemetry, items: list[tuple[str, str, dict]]) -> None:
    """Write a proxy's access logs and tracing into its listeners: items are (patch context,
    kind, resource) as compile.envoyfilter.Patchable holds them. What it writes is the same
    for every proxy of a class (compile/proxy_class.py); stat names, which are not, come
    from with_stat_names."""
    for context, kind, resource in items:
        direction = telemetry.of(MODE_OF_CONTEXT[context])
        if kind != "listener" or (not direction.access_logs and direction.tracing is None):
            continue
        for chain in resource["filter_chains"]:
            for network_filter in chain["filters"]:
                config = network_filter["typed_config"]
                if network_filter["name"] in (HCM_FILTER, TCP_PROXY_FILTER) and direction.access_logs:
                    config["access_log"] = [access_log(log) for log in direction.access_logs]
                if network_filter["name"] == HCM_FILTER and direction.tracing is not None:
                    config["tracing"] = http_tracing(direction.tracing, proxy)
                    if not direction.tracing.request_id_sampling:
                        config["request_id_extension"] = {"typed_config": typed(UUID_REQUEST_ID, use_request_id_for_trace_sampling=False)}


def stat_names_per_proxy(telemetry: ProxyTelemetry) -> bool:
    """Whether tagOverrides rewrite a proxy's own labels in a direction. A fixed tag has one
    value on all of a proxy's stats, so such a proxy keeps its own labels in its clusters'
    stat names, as each proxy's (with_stat_names), and has no fixed tags."""
    for direction, mode in (("outbound", CLIENT), ("inbound", SERVER)):
        metrics = telemetry.of(mode).metrics
        if metrics is not None and any(label in OWN_LABELS[direction] for label, dummy in metrics.tags):
            return True
    return False


def class_cluster_labels(cluster: str) -> list[tuple[str, str]]:
    """The labels of a cluster's stats that are the same on every proxy that has the cluster:
    the reporter and what the cluster's name tells (cluster_labels without the proxy's own)."""
    direction, port, subset, host = (cluster.split("|") + ["", "", ""])[:4]
    if direction == "outbound":
        return [("reporter", "source"), ("destination_service", host), ("destination_port", port), ("destination_subset", subset)]
    if direction == "inbound":
        return [("reporter", "destination"), ("destination_port", port)]
    return []


def with_class_stat_names(mesh: Mesh, telemetry: ProxyTelemetry, clusters: list[dict]) -> list[dict]:
    """The clusters, each mesh cluster a copy whose stat name carries its class_cluster_labels
    (after tagOverrides; where stat names are per proxy, with_stat_names gives them) and that
    records request and response sizes where its direction does: what every proxy of a class
    has. A copy is made once per mesh for each cluster and change, so classes that hold the
    same cluster share its copy (and its hash: compile/incremental.py)."""
    if not telemetry.metrics:
        return clusters
    per_proxy = stat_names_per_proxy(telemetry)
    copies = mesh.memo(("stat-named clusters",), dict)
    # What a direction's stat names and size records read of the telemetry: its tags and whether it records sizes.
    reads = {mode: ((metrics.tags if metrics and not per_proxy else None), records_sizes(metrics))
             for mode, metrics in ((mode, telemetry.of(mode).metrics) for mode in MODE_OF_CLUSTER.values())}
    out = []
    for cluster in clusters:
        mode = MODE_OF_CLUSTER.get(cluster["name"].split("|", 1)[0])
        tags, sizes = reads[mode] if mode else (None, False)
        key = (id(cluster), tags, sizes)  # the copy is the same for the same cluster and reads
        found = copies.get(key)
        if found is None or found[0] is not cluster:
            found = copies[key] = (cluster, _stat_named(cluster, tags, sizes))
        out.append(found[1])
    return out


def _stat_named(cluster: dict, tags, sizes: bool) -> dict:
    """The cluster with its class stat name (after the tags) and its size records; itself when it needs neither."""
    labels = with_tag_overrides(class_cluster_labels(cluster["name"]), tags) if tags is not None else []
    stat_name = cluster_stat_name(cluster["name"], labels) if labels else ""
    if not stat_name and not sizes:
        return cluster
    copy = {**cluster, **({"alt_stat_name": stat_name} if stat_name else {})}
    if sizes:
        copy["track_cluster_stats"] = {**cluster.get("track_cluster_stats", {}), "request_response_sizes": True}
    return copy


def own_stat_tags(mesh: Mesh, proxy: Proxy, telemetry: ProxyTelemetry) -> tuple[tuple[str, str], ...]:
    """The proxy's own labels as fixed tags of its bootstrap (name, value): its workload's
    and the service it serves on each inbound port; none without metrics or where stat names
    carry them (stat_names_per_proxy). Empty values are left out, as in stat names."""
    if not telemetry.metrics or stat_names_per_proxy(telemetry):
        return ()
    workload = [value for dummy, value in _workload_labels(proxy, "source")]
    tags = [(name, value) for name, value in zip(WORKLOAD_TAGS, workload) if value]
    if telemetry.server.metrics is not None:
        ports = sorted({port for dummy, served in services_served(mesh, proxy) for port in served})
        by_port = [(port, _inbound_service(mesh, proxy, port)) for port in ports]
        hosts = {host for dummy, host in by_port}
        if len(hosts) == 1 and "" not in hosts:  # one service on every port: the common case
            tags.append((SERVICE_TAG, hosts.pop()))
        elif hosts - {""}:
            tags.append((SERVICES_TAG, ",".join(f"{port}={host}" for port, host in by_port if host)))
    return tuple(tags)


def with_stat_names(mesh: Mesh, proxy: Proxy, telemetry: ProxyTelemetry, clusters: list[dict]) -> list[dict]:
    """Where stat names are per proxy (stat_names_per_proxy), the clusters, each mesh cluster
    a copy whose stat name carries Istio's labels of this proxy, its own included (the
    originals may be shared with other proxies: they are not changed); else the clusters
    themselves (the same list), whose class stat names are all there is."""
    if not telemetry.metrics or not stat_names_per_proxy(telemetry):
        return clusters
    out = []
    for cluster in clusters:
        labels = _stat_labels(mesh, proxy, telemetry, cluster["name"])
        out.append({**cluster, "alt_stat_name": cluster_stat_name(cluster["name"], labels)} if labels else cluster)
    return out


def _stat_labels(mesh: Mesh, proxy: Proxy, telemetry: ProxyTelemetry, cluster: str) -> list[tuple[str, str]]:
    mode = MODE_OF_CLUSTER.get(cluster.split("|", 1)[0])
    metrics = telemetry.of(mode).metrics if mode else None
    return with_tag_overrides(cluster_labels(mesh, proxy, cluster), metrics.tags) if metrics else []


def _label_text(labels: list[tuple[str, str]]) -> str:
    return "".join(f";{label}={value}" for label, value in labels if value)
