"""Prometheus for the mesh: scrape targets (file-based service discovery) and the scrape
configuration that turns Envoy's cluster stats into Istio's standard metrics.

Envoy without Istio's stats filter has no `istio_requests_total`. What it has are cluster
stats whose names carry Istio's labels (compile/telemetry.py: `alt_stat_name` and
`stats_tags`): per mesh cluster, requests by response code, the request time histogram,
connections and bytes. Each Istio metric is one of those counters under another name, so
the scrape renames them (`metric_relabel_configs`) and fills the labels Istio has that a
cluster's stat name cannot carry:

- the proxy's own labels (its workload's, the service it serves on each inbound port) are
  fixed tags on all its stats under neutral names (compile/telemetry.py own_stat_tags: the
  clusters of a class are then the same for all its proxies); the scrape gives them Istio's
  names by reporter: source_* on reporter="source", destination_* on reporter="destination";
- what Envoy does not know of itself (its principal, the mutual TLS mode of its inbound
  ports) comes from its scrape target's labels (`scrape_targets`), which change when
  proxies come and go without touching the Prometheus configuration;
- the labels that are fixed per service (gRPC ports, the namespace of a host that does not
  name it) come from rules made from the mesh (`metric_relabel_configs`);
- a label known only per request (the peer on the other side of the call, response_flags)
  is `unknown`, as Istio writes it when it has no peer metadata (docs/telemetry.md).

Relabelling at the scrape (not recording rules) keeps the series real counters, current at
every scrape, that `rate()` and `histogram_quantile()` read as Istio's.
"""

from __future__ import annotations

import json
import re

import yaml

from meshwright.compile.peer_authentication import mtls_mode
from meshwright.compile.proxy import STATS_PORT, Proxy, list_proxies
from meshwright.compile.telemetry import OWN_TAGS, SERVICE_TAG, SERVICES_TAG, WORKLOAD_TAGS, effective_telemetry, own_stat_tags, services_served
from meshwright.mesh import Mesh
from meshwright.pki.spiffe import spiffe_id

PROXIES_JOB = "meshwright-proxies"
ENVOY_JOB = "meshwright-envoy"

# Istio metric <- Envoy cluster stat (as Prometheus names it). TCP bytes are Istio's view of
# the call: received = what the client sent (request), sent = what the server answered, so
# the proxy's bytes towards its upstream are the received ones.
ISTIO_METRICS = {
    "envoy_cluster_upstream_rq": "istio_requests_total",
    "envoy_cluster_upstream_rq_time_bucket": "istio_request_duration_milliseconds_bucket",
    "envoy_cluster_upstream_rq_time_sum": "istio_request_duration_milliseconds_sum",
    "envoy_cluster_upstream_rq_time_count": "istio_request_duration_milliseconds_count",
    "envoy_cluster_upstream_rq_body_size_bucket": "istio_request_bytes_bucket",
    "envoy_cluster_upstream_rq_body_size_sum": "istio_request_bytes_sum",
    "envoy_cluster_upstream_rq_body_size_count": "istio_request_bytes_count",
    "envoy_cluster_upstream_rs_body_size_bucket": "istio_response_bytes_bucket",
    "envoy_cluster_upstream_rs_body_size_sum": "istio_response_bytes_sum",
    "envoy_cluster_upstream_rs_body_size_count": "istio_response_bytes_count",
    "envoy_cluster_upstream_cx_total": "istio_tcp_connections_opened_total",
    "envoy_cluster_upstream_cx_destroy": "istio_tcp_connections_closed_total",
    "envoy_cluster_upstream_cx_tx_bytes_total": "istio_tcp_received_bytes_total",
    "envoy_cluster_upstream_cx_rx_bytes_total": "istio_tcp_sent_bytes_total",
}
REQUEST_STATS = ("envoy_cluster_upstream_rq", *(f"envoy_cluster_{stat}_{part}" for stat in ("upstream_rq_time", "upstream_rq_body_size",
                 "upstream_rs_body_size") for part in ("bucket", "sum", "count")))
# A local rate limit's 429s (Envoy's `<stat_prefix>.http_local_rate_limit.enforced`): the
# request never reaches a cluster, so no cluster stat counts it.
RATE_LIMITED = r"envoy_(.+)_http_local_rate_limit_enforced"

WORKLOAD_LABELS = ("workload", "workload_namespace", "app", "version", "principal")
# The labels of Istio's standard metrics; those still empty after the proxy's own are filled
# become "unknown", Istio's value for what a proxy cannot tell.
ISTIO_LABELS = (
    *(f"source_{label}" for label in WORKLOAD_LABELS), *(f"destination_{label}" for label in WORKLOAD_LABELS),
    "destination_service", "destination_service_name", "destination_service_namespace",
    "source_canonical_service", "source_canonical_revision", "destination_canonical_service", "destination_canonical_revision",
    "connection_security_policy",
)
# Target labels that carry a proxy's own values to the series of its stats, dropped after use
# (as are the proxy's fixed tags, OWN_TAGS, once their values have Istio's names).
OWN = "mw_"
SECURITY_POLICY = {"STRICT": "mutual_tls", "DISABLE": "none"}  # PERMISSIVE: per connection, unknown


def stats_address(proxy: Proxy, host: str | None = None) -> str | None:
    """HOST:PORT of a proxy's stats listener (host: where it is reached, else its address in
    the mesh); None when that is not known (a gateway made from a Gateway alone listens on
    every address of a host the mesh does not name)."""
    host = host or proxy.address
    if host in ("0.0.0.0", "::", ""):
        return None
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{proxy.port(STATS_PORT)}"


def inbound_security(mesh: Mesh, proxy: Proxy) -> str:
    """connection_security_policy of a sidecar's inbound calls: mutual_tls when every port it
    serves is STRICT, none when every one is DISABLE; else unknown (PERMISSIVE accepts both,
    and which a call used is known per connection only)."""
    ports = sorted({port for dummy, served in services_served(mesh, proxy) for port in served})
    policies = {SECURITY_POLICY.get(mtls_mode(mesh, proxy.namespace, proxy.labels, port), "unknown") for port in ports}
    return policies.pop() if len(policies) == 1 else "unknown"


# Registries whose workloads run on a platform of their own (serve/registries.py names them
# "<platform>/<name>"; a resource they publish has "<registry>:<Kind>/..." as its source).
PLATFORM_SOURCE = re.compile(r"(kubernetes|marathon)/[^/:]+:")


def platform(mesh: Mesh, proxy: Proxy) -> str:
    """Where a proxy's workload runs: kubernetes or marathon when a registry of that platform
    published its WorkloadEntry, else vm (the mesh's files, a host of the inventory)."""
    entry = mesh.find("WorkloadEntry", proxy.namespace, proxy.name)
    found = PLATFORM_SOURCE.match(entry.source.file) if entry is not None else None
    return found.group(1) if found else "vm"


def workload_platforms(mesh: Mesh) -> dict[tuple[str, str], str]:
    """(namespace, workload name) -> platform, of every proxy of the mesh (the service graph's marks)."""
    return mesh.memo(("graph", "platforms"), lambda: {(proxy.namespace, proxy.name): platform(mesh, proxy) for proxy in list_proxies(mesh)})


def target_labels(mesh: Mesh, proxy: Proxy) -> dict[str, str]:
    own = {
        "principal": spiffe_id(mesh.settings.trust_domain, proxy.namespace, proxy.service_account),
        "security": inbound_security(mesh, proxy) if proxy.kind == "sidecar" else "unknown",
    }
    return {"mesh_proxy": proxy.id, "mesh_proxy_kind": proxy.kind, "mesh_platform": platform(mesh, proxy),
            **{OWN + key: value for key, value in own.items()}}


def scrape_targets(mesh: Mesh, addresses: dict[str, str] | None = None) -> tuple[list[dict], list[str]]:
    """File-based service discovery: one target group per proxy that serves metrics, and the
    proxies left out for want of an address. addresses: proxy id -> the host its stats
    listener is reached on, for proxies whose address the mesh does not give (or where
    Prometheus must use another one)."""
    addresses = addresses or {}
    groups, unaddressed = [], []
    for proxy in list_proxies(mesh):
        if not effective_telemetry(mesh, proxy).metrics:
            continue
        address = stats_address(proxy, addresses.get(proxy.id))
        if address is None:
            unaddressed.append(proxy.id)
        else:
            groups.append({"targets": [address], "labels": target_labels(mesh, proxy)})
    return groups, unaddressed


def _alternation(values) -> str:
    return "|".join(re.escape(value) for value in sorted(set(values)))


def _set(target: str, value: str, source_labels: list[str], regex: str) -> dict:
    return {"source_labels": source_labels, "separator": ";", "regex": regex, "target_label": target, "replacement": value}


def _selection_rules() -> list[dict]:
    """Keep the stats Istio's metrics are made of; of request counts, the per-code series only."""
    kept = _alternation(ISTIO_METRICS) + "|" + RATE_LIMITED
    return [
        {"source_labels": ["__name__"], "regex": kept, "action": "keep"},
        {"source_labels": ["__name__", "response_code_class"], "separator": ";", "regex": "envoy_cluster_upstream_rq;.+", "action": "drop"},
        # A cluster that is not a mesh service (the admin cluster, a tracing collector).
        {"source_labels": ["__name__", "reporter"], "separator": ";", "regex": "envoy_cluster_.+;", "action": "drop"},
    ]


def _rate_limit_rules() -> list[dict]:
    """The proxy answered 429 itself, as the caller's side of the call (Istio: reporter source,
    response_flags RL); which service the route would have called is not in the stat."""
    fixed = {"reporter": "source", "response_code": "429", "response_flags": "RL", "request_protocol": "http"}
    return [
        _set("rate_limiter", "$1", ["__name__"], RATE_LIMITED),
        *(_set(label, value, ["__name__"], RATE_LIMITED) for label, value in fixed.items()),
        _set("__name__", "istio_requests_total", ["__name__"], RATE_LIMITED),
    ]


def _own_label_rules(mesh: Mesh) -> list[dict]:
    """The reporting proxy's own labels: the source's when it reports as source, the
    destination's when it reports as destination (those already in the stat name stay, as
    where tagOverrides rewrite them): its workload's from its fixed tags, its principal from
    its target; and, reported as destination, the service it serves on the port."""
    rules = []
    for side in ("source", "destination"):
        for label, tag in zip(WORKLOAD_LABELS, (*WORKLOAD_TAGS, OWN + "principal")):
            rules.append(_set(f"{side}_{label}", "$1", ["reporter", f"{side}_{label}", tag], f"{side};;(.+)"))
    rules.append(_set("destination_service", "$1", ["reporter", "destination_service", SERVICE_TAG], "destination;;(.+)"))
    # A workload serving different services on different ports lists "port=service" pairs;
    # Prometheus' regexes have no back-references, so one rule per such port in the mesh.
    for port in _ports_served_apart(mesh):
        rules.append(_set("destination_service", "$1", ["reporter", "destination_service", "destination_port", SERVICES_TAG],
                          rf"destination;;{port};(?:[^,]*,)*{port}=([^,]+)(?:,.*)?"))
    rules.append(_set("connection_security_policy", "$1", ["reporter", OWN + "security"], "destination;(.+)"))
    return rules


def _ports_served_apart(mesh: Mesh) -> list[int]:
    """The inbound ports of the workloads that serve different services on different ports
    (the fixed tag SERVICES_TAG): rare, so that proxies that come and go seldom change them."""
    ports = set()
    for proxy in list_proxies(mesh):
        tags = dict(own_stat_tags(mesh, proxy, effective_telemetry(mesh, proxy)))
        ports.update(int(pair.partition("=")[0]) for pair in tags.get(SERVICES_TAG, "").split(",") if pair)
    return sorted(ports)


def _protocol_rules(mesh: Mesh) -> list[dict]:
    """request_protocol: http for requests (gRPC on a GRPC port), tcp for connection metrics."""
    tcp = [f"{host};{port}" for host, port in service_ports(mesh, tcp=True)]
    rules = [
        _set("request_protocol", "http", ["__name__", "request_protocol"], f"(?:{_alternation(REQUEST_STATS)});"),
        # Istio's TCP metrics are those of TCP services: the connections that carry HTTP
        # requests are not counted (an inbound cluster serving one TCP service names it).
        *([_set("request_protocol", "tcp", ["__name__", "destination_service", "destination_port"],
                f"envoy_cluster_upstream_cx_.+;(?:{_alternation(tcp)})")] if tcp else []),
        {"source_labels": ["__name__", "request_protocol"], "separator": ";", "regex": "envoy_cluster_upstream_cx_.+;", "action": "drop"},
    ]
    grpc = [f"{host};{port}" for host, port in service_ports(mesh, grpc=True)]
    if grpc:
        rules.append(_set("request_protocol", "grpc", ["__name__", "destination_service", "destination_port"],
                          f"(?:{_alternation(REQUEST_STATS)});(?:{_alternation(grpc)})"))
    return rules


def service_ports(mesh: Mesh, grpc: bool = False, tcp: bool = False) -> list[tuple[str, int]]:
    """(service host, port) of its GRPC ports (grpc) or its ports that carry no HTTP (tcp): the
    port as the caller names it and as each endpoint serves it (an inbound cluster's port)."""
    out = set()
    for service in mesh.registry.sorted():
        for port in service.ports:
            if (grpc and port.protocol == "GRPC") or (tcp and not port.is_http):
                out.add((service.hostname, port.number))
                out.update((service.hostname, endpoint.port_for(port)) for endpoint in service.endpoints)
    return sorted(out)


def _service_rules(mesh: Mesh) -> list[dict]:
    """destination_service_name and _namespace: a Kubernetes-form host names both
    (name.namespace.svc.<domain>); another host is its own name, in its ServiceEntry's namespace."""
    rules = [
        _set("destination_service_name", "$1", ["destination_service"], r"([^.]+)\.[^.]+\.svc\..+"),
        _set("destination_service_namespace", "$1", ["destination_service"], r"[^.]+\.([^.]+)\.svc\..+"),
    ]
    other: dict[str, list[str]] = {}
    for service in mesh.registry.sorted():
        if not re.fullmatch(r"[^.]+\.[^.]+\.svc\..+", service.hostname):
            other.setdefault(service.namespace, []).append(service.hostname)
    for namespace, hosts in sorted(other.items()):
        rules.append(_set("destination_service_name", "$1", ["destination_service"], f"({_alternation(hosts)})"))
        rules.append(_set("destination_service_namespace", namespace, ["destination_service"], _alternation(hosts)))
    return rules


def _canonical_rules() -> list[dict]:
    """Istio's canonical service (app label, else the workload) and revision (version, else latest)."""
    rules = []
    for side in ("source", "destination"):
        rules.append(_set(f"{side}_canonical_service", "$1", [f"{side}_app"], "(.+)"))
        rules.append(_set(f"{side}_canonical_service", "$1", [f"{side}_canonical_service", f"{side}_workload"], ";(.+)"))
        rules.append(_set(f"{side}_canonical_revision", "$1", [f"{side}_version"], "(.+)"))
        rules.append(_set(f"{side}_canonical_revision", "latest", [f"{side}_canonical_revision", f"{side}_workload"], ";.+"))
    return rules


def metric_relabel_configs(mesh: Mesh) -> list[dict]:
    """The rules, in order: select, label (own, protocol, service, canonical, unknown), rename, tidy."""
    return [
        *_selection_rules(),
        *_rate_limit_rules(),
        *_own_label_rules(mesh),
        *_protocol_rules(mesh),
        *_service_rules(mesh),
        *_canonical_rules(),
        *(_set(label, "unknown", [label], "") for label in ISTIO_LABELS),
        *(_set("__name__", istio, ["__name__"], re.escape(envoy)) for envoy, istio in ISTIO_METRICS.items()),
        {"regex": f"{OWN}.+|cluster_name|{'|'.join(OWN_TAGS)}", "action": "labeldrop"},
    ]


def prometheus_config(mesh: Mesh, targets_file: str, scrape_interval: str = "15s", envoy_stats: bool = False,
                      extra_targets: tuple[str, ...] = ()) -> dict:
    """Prometheus' configuration: the proxies from targets_file (file-based service discovery,
    re-read when it changes), with Istio's metrics; envoy_stats adds a job with all of Envoy's
    stats under their own names (many more series: docs/telemetry.md); extra_targets
    (HOST:PORT of /metrics endpoints, e.g. the control plane) are scraped as they are."""
    proxies = {
        "job_name": PROXIES_JOB,
        "metrics_path": "/stats/prometheus",
        # Only stats that have counted something: a cluster nobody called has no series (Istio's
        # metrics appear with the first request too).
        "params": {"usedonly": [""]},
        "file_sd_configs": [{"files": [targets_file], "refresh_interval": "30s"}],
        "metric_relabel_configs": metric_relabel_configs(mesh),
    }
    jobs = [proxies]
    if envoy_stats:
        jobs.append({"job_name": ENVOY_JOB, "metrics_path": "/stats/prometheus", "params": {"usedonly": [""]},
                     "file_sd_configs": [{"files": [targets_file]}], "metric_relabel_configs": [{"regex": f"{OWN}.+", "action": "labeldrop"}]})
    if extra_targets:
        jobs.append({"job_name": "meshwright-control-plane", "static_configs": [{"targets": list(extra_targets)}]})
    return {"global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval}, "scrape_configs": jobs}


CONFIG_FILE = "prometheus.yml"
TARGETS_FILE = "targets/meshwright-proxies.json"


def targets_text(groups: list[dict]) -> str:
    return json.dumps(groups, indent=2, sort_keys=True) + "\n"


def prometheus_files(mesh: Mesh, scrape_interval: str = "15s", envoy_stats: bool = False, extra_targets: tuple[str, ...] = (),
                     addresses: dict[str, str] | None = None) -> dict[str, str]:
    """The files of a Prometheus for this mesh, by path relative to its configuration folder
    (Prometheus reads file_sd paths relative to its configuration file)."""
    config = prometheus_config(mesh, TARGETS_FILE, scrape_interval, envoy_stats, extra_targets)
    return {
        CONFIG_FILE: "# Written by `meshwright prometheus` from the mesh config: edits are overwritten.\n"
                     + yaml.safe_dump(config, sort_keys=False, default_flow_style=False, width=1000),
        TARGETS_FILE: targets_text(scrape_targets(mesh, addresses)[0]),
    }
