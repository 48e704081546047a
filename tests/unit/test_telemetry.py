"""Telemetry config: the MeshConfig's providers, the Telemetry API and what a proxy gets.

Istio's rules: providers are defined once in the MeshConfig (extensionProviders, with the
built-in `prometheus` and `envoy`) and chosen by defaultProviders and Telemetry resources;
a Telemetry with a selector in the workload's namespace wins over one for the namespace,
which wins over one in the root namespace (istio-system), which wins over the defaults,
field by field. Mistakes are reported where they are written.
"""

from __future__ import annotations

import re
import textwrap

import pytest

from meshwright.check.pipeline import validate_mesh
from meshwright.compile.bootstrap import compile_bootstrap
from meshwright.compile.build import compile_proxy
from meshwright.compile.proxy import find_proxy
from meshwright.compile.telemetry import HEADER_SIZES, cluster_stat_name, effective_telemetry, stats_config
from meshwright.model.load import load_paths
from tests.unit.validation_cases import BASE, Case, check_case

PROVIDERS = """\
---
apiVersion: meshwright.io/v1alpha1
kind: MeshConfig
metadata: {name: mesh, namespace: default}
spec:
  extensionProviders:
  - name: zipkin
    zipkin: {service: zipkin.example.com, port: 9411}
  - name: otel
    opentelemetry: {service: 10.1.2.3, port: 4317}
  - name: json-log
    envoyFileAccessLog: {path: /var/log/meshwright/access.log, logFormat: {labels: {code: "%RESPONSE_CODE%"}}}
  - name: text-log
    envoyFileAccessLog: {path: /dev/stdout, logFormat: {text: "%REQ(:METHOD)% %RESPONSE_CODE%"}}
"""
TELEMETRY_BASE = BASE + PROVIDERS
WORKLOADS = """\
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: default}
spec: {address: 10.0.0.1, labels: {app: reviews, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: gateway-0, namespace: edge}
spec: {address: 10.0.0.9, labels: {app: edge}}
"""


def telemetry(name: str, namespace: str, spec: str) -> str:
    return f"---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{textwrap.indent(textwrap.dedent(spec), '  ')}"


def mesh_of(tmp_path, *documents: str):
    (tmp_path / "mesh.yaml").write_text(TELEMETRY_BASE + WORKLOADS + "".join(documents))
    mesh, problems = validate_mesh(load_paths([str(tmp_path)]))
    assert not problems, "\n".join(str(p) for p in problems)
    return mesh


def effective(mesh, proxy_id: str):
    return effective_telemetry(mesh, find_proxy(mesh, proxy_id))


# --- precedence ----------------------------------------------------------------------


def test_defaults_without_any_telemetry_are_istios(tmp_path):
    """No Telemetry, no defaultProviders: metrics by the built-in prometheus, no access log
    (accessLogFile is empty), no tracing."""
    settings = effective(mesh_of(tmp_path), "client.default")
    assert settings.metrics is True
    assert settings.client.access_logs == settings.server.access_logs == ()
    assert settings.tracings == ()


def test_workload_beats_namespace_beats_root_field_by_field(tmp_path):
    """Root: zipkin at 5%. The default namespace: 50% (the provider is inherited). A selector
    for app: reviews: the otel provider (the 50% is inherited). Namespace edge: root only."""
    mesh = mesh_of(
        tmp_path,
        telemetry("mesh-default", "istio-system", "tracing: [{providers: [{name: zipkin}], randomSamplingPercentage: 5}]\n"),
        telemetry("namespace", "default", "tracing: [{randomSamplingPercentage: 50}]\n"),
        telemetry("reviews", "default", "selector: {matchLabels: {app: reviews}}\ntracing: [{providers: [{name: otel}]}]\n"),
    )
    reviews, client, edge = (effective(mesh, p).client.tracing for p in ("reviews-v1.default", "client.default", "gateway-0.edge"))
    assert (reviews.provider.name, reviews.sampling) == ("otel", 50.0)
    assert (client.provider.name, client.sampling) == ("zipkin", 50.0)
    assert (edge.provider.name, edge.sampling) == ("zipkin", 5.0)


def test_selector_only_applies_in_its_own_namespace(tmp_path):
    """A selector matches workloads of the Telemetry's namespace only (Istio); in the root
    namespace it is not mesh-wide."""
    mesh = mesh_of(tmp_path, telemetry("edge-logs", "istio-system", "selector: {matchLabels: {app: edge}}\naccessLogging: [{providers: [{name: json-log}]}]\n"))
    assert effective(mesh, "gateway-0.edge").client.access_logs == ()


def test_disabled_turns_off_what_a_less_specific_level_turned_on(tmp_path):
    mesh = mesh_of(
        tmp_path,
        telemetry("logs", "default", "accessLogging: [{providers: [{name: json-log}, {name: text-log}]}]\n"),
        telemetry("quiet", "default", "selector: {matchLabels: {app: reviews}}\naccessLogging: [{disabled: true}]\nmetrics: [{overrides: [{disabled: true}]}]\n"),
    )
    assert [log.provider.name for log in effective(mesh, "client.default").server.access_logs] == ["json-log", "text-log"]
    reviews = effective(mesh, "reviews-v1.default")
    assert reviews.client.access_logs == reviews.server.access_logs == () and reviews.metrics is False


def test_disable_span_reporting_turns_tracing_off(tmp_path):
    mesh = mesh_of(
        tmp_path,
        telemetry("mesh-default", "istio-system", "tracing: [{providers: [{name: zipkin}]}]\n"),
        telemetry("reviews", "default", "selector: {matchLabels: {app: reviews}}\ntracing: [{disableSpanReporting: true}]\n"),
    )
    assert effective(mesh, "reviews-v1.default").tracings == ()
    assert effective(mesh, "client.default").server.tracing.sampling == 1.0  # Istio's default sampling


def test_default_providers_and_the_builtin_envoy_access_log(tmp_path):
    """accessLogFile turns on the built-in `envoy` provider by default (Istio's behaviour);
    defaultProviders can name any provider; an empty metrics list turns metrics off."""
    text = TELEMETRY_BASE.replace(
        "spec:\n  extensionProviders:",
        "spec:\n  accessLogFile: /dev/stdout\n  accessLogEncoding: TEXT\n  defaultProviders: {metrics: [], tracing: [zipkin]}\n  extensionProviders:",
    )
    (tmp_path / "mesh.yaml").write_text(text)
    mesh, problems = validate_mesh(load_paths([str(tmp_path)]))
    assert not problems
    settings = effective(mesh, "client.default")
    assert [(log.provider.name, log.provider.path, log.provider.encoding) for log in settings.client.access_logs] == [("envoy", "/dev/stdout", "TEXT")]
    assert settings.metrics is False and settings.client.tracing.provider.name == "zipkin"


# --- compiled config -------------------------------------------------------------------


def test_compiled_listeners_clusters_and_bootstrap(tmp_path):
    """Access logs on every HTTP connection manager, tracing to a dedicated STRICT_DNS
    cluster for a collector named by DNS, labelled cluster stat names, and the bootstrap's
    stats listener and tags."""
    mesh = mesh_of(tmp_path, telemetry("all", "istio-system", """\
        accessLogging: [{providers: [{name: text-log}]}]
        tracing: [{providers: [{name: zipkin}], randomSamplingPercentage: 100}]
        """))
    proxy = find_proxy(mesh, "client.default")
    config = compile_proxy(mesh, proxy)
    (listener,) = config.listeners
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert manager["access_log"][0]["typed_config"]["log_format"] == {"text_format_source": {"inline_string": "%REQ(:METHOD)% %RESPONSE_CODE%\n"}}
    tracer = manager["tracing"]["provider"]["typed_config"]
    assert manager["tracing"]["random_sampling"] == {"value": 100.0}
    assert (tracer["collector_cluster"], tracer["collector_hostname"], tracer["collector_endpoint"]) == ("tracing|zipkin", "zipkin.example.com", "/api/v2/spans")
    reviews_v1 = next(c for c in config.clusters if c["name"] == "outbound|9080|v1|reviews.default.svc.cluster.local")
    # The cluster's labels in its stat name; the proxy's own are fixed tags of its bootstrap.
    assert reviews_v1["alt_stat_name"] == (
        "outbound|9080|v1|reviews.default.svc.cluster.local;reporter=source;destination_service=reviews.default.svc.cluster.local;"
        "destination_port=9080;destination_subset=v1;"
    )
    assert config.stat_tags == (("mesh_workload", "client"), ("mesh_workload_namespace", "default"), ("mesh_app", "client"))
    bootstrap = compile_bootstrap(proxy, mesh.settings, config.telemetry, {"lds": {}, "cds": {}}, stat_tags=config.stat_tags)
    fixed = {tag["tag_name"]: tag["fixed_value"] for tag in bootstrap["stats_config"]["stats_tags"] if "fixed_value" in tag}
    assert fixed == {"mesh_workload": "client", "mesh_workload_namespace": "default", "mesh_app": "client"}
    assert [l["name"] for l in bootstrap["static_resources"]["listeners"]] == ["health", "stats"]
    collector = next(c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "tracing|zipkin")
    assert collector["type"] == "STRICT_DNS"
    assert collector["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] == {"address": "zipkin.example.com", "port_value": 9411}
    assert bootstrap["stats_config"]["use_all_default_tags"] is False


def test_opentelemetry_to_an_ip_gets_a_static_http2_cluster(tmp_path):
    mesh = mesh_of(tmp_path, telemetry("all", "istio-system", "tracing: [{providers: [{name: otel}]}]\n"))
    proxy = find_proxy(mesh, "client.default")
    config = compile_proxy(mesh, proxy)
    tracer = config.listeners[0]["filter_chains"][0]["filters"][0]["typed_config"]["tracing"]["provider"]
    assert tracer["name"] == "envoy.tracers.opentelemetry"
    assert tracer["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] == "tracing|otel"
    assert tracer["typed_config"]["service_name"] == "client.default"
    (collector,) = [c for c in compile_bootstrap(proxy, mesh.settings, config.telemetry, {"lds": {}, "cds": {}})["static_resources"]["clusters"] if c["name"] == "tracing|otel"]
    assert collector["type"] == "STATIC"
    assert "http2_protocol_options" in str(collector["typed_extension_protocol_options"])


def test_a_collector_that_is_a_mesh_service_is_reached_through_its_cluster(tmp_path):
    text = TELEMETRY_BASE.replace("zipkin: {service: zipkin.example.com, port: 9411}", "zipkin: {service: default/ratings.default.svc.cluster.local, port: 9080}")
    (tmp_path / "mesh.yaml").write_text(text + WORKLOADS + telemetry("all", "istio-system", "tracing: [{providers: [{name: zipkin}]}]\n"))
    mesh, problems = validate_mesh(load_paths([str(tmp_path)]))
    assert not problems
    proxy = find_proxy(mesh, "client.default")
    config = compile_proxy(mesh, proxy)
    tracer = config.listeners[0]["filter_chains"][0]["filters"][0]["typed_config"]["tracing"]["provider"]["typed_config"]
    assert tracer["collector_cluster"] == "outbound|9080||ratings.default.svc.cluster.local"
    assert [c["name"] for c in compile_bootstrap(proxy, mesh.settings, config.telemetry, {"lds": {}, "cds": {}})["static_resources"]["clusters"]] == ["admin"]


def test_without_metrics_no_stats_listener_and_plain_stat_names(tmp_path):
    mesh = mesh_of(tmp_path, telemetry("no-metrics", "istio-system", "metrics: [{overrides: [{match: {metric: ALL_METRICS}, disabled: true}]}]\n"))
    proxy = find_proxy(mesh, "client.default")
    config = compile_proxy(mesh, proxy)
    assert not any("alt_stat_name" in c for c in config.clusters)
    bootstrap = compile_bootstrap(proxy, mesh.settings, config.telemetry, {"lds": {}, "cds": {}})
    assert [l["name"] for l in bootstrap["static_resources"]["listeners"]] == ["health"]
    assert "stats_config" not in bootstrap


# --- directions (match.mode), filters, custom tags, metrics overrides ------------------

REVIEWS_SIDECAR = """\
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews, namespace: default}
spec:
  workloadSelector: {labels: {app: reviews}}
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    bind: 127.0.0.1
    defaultEndpoint: 127.0.0.1:8080
"""


def listeners_by_direction(config) -> dict[str, dict]:
    """The HTTP connection manager of the proxy's inbound and outbound listener."""
    out = {}
    for listener in config.listeners:
        manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
        out["inbound" if listener["name"].startswith("inbound") or listener["name"].startswith("127.0.0.1_9080") else "outbound"] = manager
    return out


def test_match_mode_gives_each_direction_its_own_access_log_and_tracing(tmp_path):
    """CLIENT entries apply to the outbound listener, SERVER ones to the inbound listener
    (Istio's workload mode); a CLIENT_AND_SERVER entry in the namespace is overridden per
    direction by the workload's entries, field by field."""
    mesh = mesh_of(tmp_path, REVIEWS_SIDECAR, telemetry("ns", "default", """\
        accessLogging: [{providers: [{name: json-log}]}]
        tracing: [{providers: [{name: zipkin}], randomSamplingPercentage: 10}]
        """), telemetry("reviews", "default", """\
        selector: {matchLabels: {app: reviews}}
        accessLogging:
        - match: {mode: CLIENT}
          disabled: true
        - match: {mode: SERVER}
          providers: [{name: text-log}]
          filter: {expression: "response.code >= 500"}
        tracing:
        - match: {mode: SERVER}
          randomSamplingPercentage: 100
        """))
    settings = effective(mesh, "reviews-v1.default")
    assert settings.client.access_logs == ()
    assert [(log.provider.name, log.filter) for log in settings.server.access_logs] == [("text-log", "response.code >= 500")]
    assert (settings.client.tracing.sampling, settings.server.tracing.sampling) == (10.0, 100.0)
    config = compile_proxy(mesh, find_proxy(mesh, "reviews-v1.default"))
    managers = {l["name"]: l["filter_chains"][0]["filters"][0]["typed_config"] for l in config.listeners}
    inbound = next(m for name, m in managers.items() if m["stat_prefix"].startswith("inbound"))
    outbound = next(m for name, m in managers.items() if not m["stat_prefix"].startswith("inbound"))
    assert "access_log" not in outbound
    (log,) = inbound["access_log"]
    assert log["filter"] == {"extension_filter": {
        "name": "envoy.access_loggers.extension_filters.cel",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter", "expression": "response.code >= 500"},
    }}
    assert (outbound["tracing"]["random_sampling"], inbound["tracing"]["random_sampling"]) == ({"value": 10.0}, {"value": 100.0})
    # The client is not selected: both of its directions log with the namespace's provider, unfiltered.
    client = effective(mesh, "client.default")
    assert [(log.provider.name, log.filter) for log in client.client.access_logs] == [("json-log", "")]


def test_a_filter_is_the_most_specific_entrys_own(tmp_path):
    """An entry that applies replaces the filter of a less specific one, even without a
    filter of its own (Istio keeps an access log's settings per entry)."""
    mesh = mesh_of(tmp_path, telemetry("ns", "default", """\
        accessLogging: [{providers: [{name: json-log}], filter: {expression: "response.code >= 400"}}]
        """), telemetry("reviews", "default", """\
        selector: {matchLabels: {app: reviews}}
        accessLogging: [{providers: [{name: text-log}]}]
        """))
    assert [log.filter for log in effective(mesh, "client.default").client.access_logs] == ["response.code >= 400"]
    assert [(log.provider.name, log.filter) for log in effective(mesh, "reviews-v1.default").client.access_logs] == [("text-log", "")]


def test_custom_tags_become_envoys_and_add_up_across_levels(tmp_path):
    mesh = mesh_of(tmp_path, telemetry("mesh", "istio-system", """\
        tracing:
        - providers: [{name: zipkin}]
          customTags:
            cluster: {literal: {value: east}}
            team: {literal: {value: platform}}
        """), telemetry("ns", "default", """\
        tracing:
        - customTags:
            team: {environment: {name: TEAM, defaultValue: unknown}}
            user: {header: {name: x-user}}
        """))
    config = compile_proxy(mesh, find_proxy(mesh, "client.default"))
    tracing = config.listeners[0]["filter_chains"][0]["filters"][0]["typed_config"]["tracing"]
    assert tracing["custom_tags"] == [
        {"tag": "cluster", "literal": {"value": "east"}},
        {"tag": "team", "environment": {"name": "TEAM", "default_value": "unknown"}},
        {"tag": "user", "request_header": {"name": "x-user"}},
    ]


def test_metrics_overrides_per_direction_metric_and_tag(tmp_path):
    """SERVER metrics off: inbound clusters keep plain stat names; CLIENT tagOverrides: a
    literal UPSERT adds a label (and its stats tag), REMOVE drops one; REQUEST_DURATION off:
    the bootstrap's stats_matcher leaves out the outbound clusters' upstream_rq_time."""
    mesh = mesh_of(tmp_path, REVIEWS_SIDECAR, telemetry("ns", "default", """\
        metrics:
        - overrides:
          - match: {mode: SERVER}
            disabled: true
          - match: {mode: CLIENT}
            tagOverrides:
              team: {value: "'storefront'"}
              source_app: {operation: REMOVE}
          - match: {metric: REQUEST_DURATION, mode: CLIENT}
            disabled: true
        """))
    proxy = find_proxy(mesh, "reviews-v1.default")
    config = compile_proxy(mesh, proxy)
    names = {c["name"]: c.get("alt_stat_name") for c in config.clusters}
    assert names["inbound|9080||"] is None
    assert names["outbound|9080||ratings.default.svc.cluster.local"] == (
        "outbound|9080||ratings.default.svc.cluster.local;reporter=source;source_workload=reviews-v1;"
        "source_workload_namespace=default;source_version=v1;destination_service=ratings.default.svc.cluster.local;"
        "destination_port=9080;team=storefront;"
    )
    # A REMOVE of one of the proxy's own labels: they stay in its stat names, as its own, and
    # its bootstrap has no fixed tags (which would put source_app back at the scrape).
    assert config.stat_tags == ()
    stats = compile_bootstrap(proxy, mesh.settings, config.telemetry, {"lds": {}, "cds": {}})["stats_config"]
    assert not [tag for tag in stats["stats_tags"] if "fixed_value" in tag]
    team = next(tag for tag in stats["stats_tags"] if tag["tag_name"] == "team")
    assert extract_tags("cluster." + names["outbound|9080||ratings.default.svc.cluster.local"] + ".upstream_rq_200", stats)[1]["team"] == "storefront"
    assert team["regex"].endswith("team=([^;]*);")
    header_sizes, excluded = stats["stats_matcher"]["exclusion_list"]["patterns"]
    assert header_sizes == {"safe_regex": {"regex": HEADER_SIZES}}
    pattern = re.compile(excluded["safe_regex"]["regex"])
    outbound = "cluster." + names["outbound|9080||ratings.default.svc.cluster.local"]
    assert pattern.search(outbound + ".upstream_rq_time") and pattern.search(outbound + ".external_upstream_rq_time")
    assert not pattern.search(outbound + ".upstream_rq_200") and not pattern.search("cluster.inbound|9080||.upstream_rq_time")


def test_use_request_id_for_trace_sampling_false_makes_sampling_random(tmp_path):
    """Envoy (and Istio) sample by the x-request-id by default; false asks Envoy's UUID request
    id extension for a random decision, on the HTTP listeners of the direction it applies to."""
    mesh = mesh_of(tmp_path, REVIEWS_SIDECAR, telemetry("ns", "default", """\
        tracing:
        - providers: [{name: zipkin}]
          match: {mode: CLIENT}
          useRequestIdForTraceSampling: false
          enableIstioTags: false
        - providers: [{name: zipkin}]
          match: {mode: SERVER}
        """))
    config = compile_proxy(mesh, find_proxy(mesh, "reviews-v1.default"))
    managers = {listener["traffic_direction"]: listener["filter_chains"][0]["filters"][0]["typed_config"] for listener in config.listeners}
    assert managers["OUTBOUND"]["request_id_extension"] == {"typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig", "use_request_id_for_trace_sampling": False}}
    assert "request_id_extension" not in managers["INBOUND"] and "tracing" in managers["INBOUND"]


def test_a_reporting_interval_is_a_warning_that_it_changes_nothing(tmp_path):
    mesh = mesh_of(tmp_path, REVIEWS_SIDECAR, telemetry("ns", "default", """\
        metrics:
        - providers: [{name: prometheus}]
          reportingInterval: 15s
        """))
    assert [str(w).split(": ", 2)[2] for w in mesh.warnings] == [
        "spec.metrics[0].reportingInterval: warning: reportingInterval changes nothing here: Istio reports long connections' TCP metrics "
        "at that interval, while meshwright's are Envoy counters, current as bytes flow, which Prometheus reads at each scrape"
    ]


def test_turning_off_a_metric_no_cluster_stat_records_changes_nothing(tmp_path):
    """Istio's overrides that turn off gRPC message counts are accepted: meshwright records
    none of them, so they are off already (the other metrics stay)."""
    mesh = mesh_of(tmp_path, REVIEWS_SIDECAR, telemetry("ns", "default", """\
        metrics:
        - overrides:
          - match: {metric: GRPC_REQUEST_MESSAGES}
            disabled: true
          - match: {metric: GRPC_RESPONSE_MESSAGES, mode: SERVER}
            disabled: true
        """))
    proxy = find_proxy(mesh, "reviews-v1.default")
    config = compile_proxy(mesh, proxy)
    stats = compile_bootstrap(proxy, mesh.settings, config.telemetry, {"lds": {}, "cds": {}})["stats_config"]
    assert stats["stats_matcher"]["exclusion_list"]["patterns"] == [{"safe_regex": {"regex": HEADER_SIZES}}]  # never recorded
    assert config.telemetry.of("CLIENT").metrics is not None and config.telemetry.of("SERVER").metrics is not None


def test_request_and_response_sizes_and_turning_them_off(tmp_path):
    """Istio's istio_request_bytes / istio_response_bytes: the mesh clusters record body sizes
    (track_cluster_stats) in byte buckets; header sizes, which no Istio metric is made of, are
    never recorded. REQUEST_SIZE and RESPONSE_SIZE off for SERVER: the inbound clusters do not
    record sizes, the outbound ones still do."""
    mesh = mesh_of(tmp_path, REVIEWS_SIDECAR)
    proxy = find_proxy(mesh, "reviews-v1.default")
    config = compile_proxy(mesh, proxy)
    assert {c["name"]: c.get("track_cluster_stats") for c in config.clusters if "|" in c["name"]} == {
        c["name"]: {"request_response_sizes": True} for c in config.clusters if "|" in c["name"]}
    stats = compile_bootstrap(proxy, mesh.settings, config.telemetry, {"lds": {}, "cds": {}})["stats_config"]
    (buckets,) = stats["histogram_bucket_settings"]
    assert buckets["buckets"] == [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9]
    pattern = re.compile(buckets["match"]["safe_regex"]["regex"])
    assert pattern.search("cluster.inbound|9080||;reporter=destination;.upstream_rq_body_size")
    assert not pattern.search("cluster.inbound|9080||;reporter=destination;.upstream_rq_time")

    off = mesh_of(tmp_path, REVIEWS_SIDECAR, telemetry("ns", "default", """\
        metrics:
        - overrides:
          - match: {metric: REQUEST_SIZE, mode: SERVER}
            disabled: true
          - match: {metric: RESPONSE_SIZE, mode: SERVER}
            disabled: true
        """))
    config = compile_proxy(off, find_proxy(off, "reviews-v1.default"))
    recorded = {c["name"] for c in config.clusters if "track_cluster_stats" in c}
    assert recorded and all(name.startswith("outbound|") for name in recorded) and "inbound|9080||" not in recorded


# --- stat names and tags ----------------------------------------------------------------


def extract_tags(stat_name: str, config: dict | None = None) -> tuple[str, dict]:
    """What Envoy's tag extraction does with stats_config's regexes: the first tag extractor
    of a name that matches gives its value (group 2, else 1); the characters of group 1 are
    removed from the name. (Envoy runs these regexes as ECMAScript std::regex; these use
    nothing that Python's re reads differently.)"""
    tags, removed = {}, set()
    for tag in (config or stats_config())["stats_tags"]:
        if "regex" not in tag or tag["tag_name"] in tags:
            continue
        match = re.search(tag["regex"], stat_name)
        if match:
            group = 2 if match.re.groups >= 2 else 1
            tags[tag["tag_name"]] = match.group(group)
            removed.update(range(match.start(1), match.end(1)))
    return "".join(c for i, c in enumerate(stat_name) if i not in removed), tags


@pytest.mark.parametrize("host", ["reviews.default.svc.cluster.local", "db.corp.internal", "api.zone.external", "x"])
@pytest.mark.parametrize("suffix", ["upstream_rq_200", "external.upstream_rq_503", "internal.upstream_rq_2xx", "zone.a.b.upstream_rq_200", "circuit_breakers.default.cx_open"])
def test_every_cluster_stat_name_becomes_its_labels(host, suffix):
    """Whatever the host's labels and the stat's own dots (internal., zone.a.b.), the host
    comes out whole and the metric name is Envoy's without the cluster."""
    cluster = f"outbound|9080|v1|{host}"
    name = f"cluster.{cluster_stat_name(cluster, [('reporter', 'source'), ('source_workload', 'client.v2'), ('destination_service', host), ('destination_subset', 'v1')])}.{suffix}"
    stripped, tags = extract_tags(name)
    assert tags["cluster_name"] == cluster
    assert (tags["reporter"], tags["source_workload"], tags["destination_service"], tags["destination_subset"]) == ("source", "client.v2", host, "v1")
    expected = re.sub(r"_(\d{3}|\dxx)$", "", f"cluster.{suffix}")
    assert stripped == expected


def test_other_clusters_keep_envoys_cluster_name_tag():
    stripped, tags = extract_tags("cluster.admin.upstream_rq_200")
    assert (stripped, tags) == ("cluster.upstream_rq", {"cluster_name": "admin", "response_code": "200"})


# --- validation -------------------------------------------------------------------------

TELEMETRY = "Telemetry/default/t"
MESH_CONFIG = "MeshConfig/default/mesh"

CASES = [
    Case(
        "provider that no MeshConfig defines",
        """
        apiVersion: telemetry.istio.io/v1
        kind: Telemetry
        metadata: {name: t, namespace: default}
        spec:
          tracing:
          - providers:
            - name: jaeger  #!
        """,
        TELEMETRY, "spec.tracing[0].providers[0].name", ("provider 'jaeger' is not defined", "extensionProviders", "defined: envoy, json-log, otel, prometheus, text-log, zipkin"),
    ),
    Case(
        "provider of the wrong kind for the signal",
        """
        apiVersion: telemetry.istio.io/v1
        kind: Telemetry
        metadata: {name: t, namespace: default}
        spec:
          accessLogging:
          - providers:
            - name: zipkin  #!
        """,
        TELEMETRY, "spec.accessLogging[0].providers[0].name", ("provider 'zipkin' is a zipkin provider", "accessLogging needs an envoyFileAccessLog provider"),
    ),
    Case(
        "two tracing providers",
        """
        apiVersion: telemetry.istio.io/v1
        kind: Telemetry
        metadata: {name: t, namespace: default}
        spec:
          tracing:
          - providers:  #!
            - name: zipkin
            - name: otel
        """,
        TELEMETRY, "spec.tracing[0].providers", ("one tracing provider",),
    ),
    Case(
        "targetRefs",
        """
        apiVersion: telemetry.istio.io/v1
        kind: Telemetry
        metadata: {name: t, namespace: default}
        spec:
          targetRefs:  #!
          - {kind: Gateway, group: gateway.networking.k8s.io, name: edge}
        """,
        TELEMETRY, "spec.targetRefs", ("unknown field 'targetRefs'", "Gateway API", "selector.matchLabels"),
    ),
    Case(
        "two access logging entries for the same mode",
        """
        apiVersion: telemetry.istio.io/v1
        kind: Telemetry
        metadata: {name: t, namespace: default}
        spec:
          accessLogging:
          - providers: [{name: json-log}]
          - match: {mode: SERVER}  #!
            disabled: true
        """,
        TELEMETRY, "spec.accessLogging[1]", ("entries 0 and 1 both apply to inbound (SERVER) traffic", "one accessLogging entry per direction"),
    ),
    Case(
        "a metric Envoy's cluster stats do not have, turned on",
        """
        apiVersion: telemetry.istio.io/v1
        kind: Telemetry
        metadata: {name: t, namespace: default}
        spec:
          metrics:
          - overrides:
            - match:
                metric: GRPC_REQUEST_MESSAGES  #!
              disabled: false
        """,
        TELEMETRY, "spec.metrics[0].overrides[0].match.metric", ("GRPC_REQUEST_MESSAGES is not supported by meshwright yet", "no grpc request messages", "REQUEST_SIZE"),
    ),
    Case(
        "tagOverrides with a per-request value",
        """
        apiVersion: telemetry.istio.io/v1
        kind: Telemetry
        metadata: {name: t, namespace: default}
        spec:
          metrics:
          - overrides:
            - tagOverrides:
                request_host:
                  value: request.host  #!
        """,
        TELEMETRY, "spec.metrics[0].overrides[0].tagOverrides.request_host.value", ("value 'request.host' is not supported by meshwright yet", "CEL string literal", "access log"),
    ),
    Case(
        "tagOverrides of one metric",
        """
        apiVersion: telemetry.istio.io/v1
        kind: Telemetry
        metadata: {name: t, namespace: default}
        spec:
          metrics:
          - overrides:
            - match: {metric: REQUEST_COUNT}
              tagOverrides:
                team: {value: "'payments'"}  #!
        """,
        TELEMETRY, "spec.metrics[0].overrides[0].tagOverrides.team", ("tagOverrides is not supported by meshwright yet for one metric (REQUEST_COUNT)", "ALL_METRICS"),
    ),
    Case(
        "REMOVE of a label the stats carry, for one metric",
        """
        apiVersion: telemetry.istio.io/v1
        kind: Telemetry
        metadata: {name: t, namespace: default}
        spec:
          metrics:
          - overrides:
            - match: {metric: REQUEST_COUNT, mode: CLIENT_AND_SERVER}
              tagOverrides:
                grpc_response_status: {operation: REMOVE}
                source_app: {operation: REMOVE}  #!
        """,
        TELEMETRY, "spec.metrics[0].overrides[0].tagOverrides.source_app", ("not supported by meshwright yet for one metric (REQUEST_COUNT)",),
    ),
    Case(
        "tagOverrides value with a semicolon",
        """
        apiVersion: telemetry.istio.io/v1
        kind: Telemetry
        metadata: {name: t, namespace: default}
        spec:
          metrics:
          - overrides:
            - tagOverrides:
                team:
                  value: "'a;b'"  #!
        """,
        TELEMETRY, "spec.metrics[0].overrides[0].tagOverrides.team.value", ("must not contain ';'",),
    ),
    Case(
        "enableIstioTags: true",
        """
        apiVersion: telemetry.istio.io/v1
        kind: Telemetry
        metadata: {name: t, namespace: default}
        spec:
          tracing:
          - enableIstioTags: true  #!
        """,
        TELEMETRY, "spec.tracing[0].enableIstioTags", ("enableIstioTags is not supported by meshwright yet", "give those as customTags"),
    ),
    Case(
        "a custom tag with two sources",
        """
        apiVersion: telemetry.istio.io/v1
        kind: Telemetry
        metadata: {name: t, namespace: default}
        spec:
          tracing:
          - customTags:
              team:  #!
                literal: {value: payments}
                header: {name: x-team}
        """,
        TELEMETRY, "spec.tracing[0].customTags.team", ("literal", "header"),
    ),
    Case(
        "two entries in one list",
        """
        apiVersion: telemetry.istio.io/v1
        kind: Telemetry
        metadata: {name: t, namespace: default}
        spec:
          accessLogging:
          - providers: [{name: json-log}]
          - providers: [{name: text-log}]  #!
        """,
        TELEMETRY, "spec.accessLogging[1]", ("write one accessLogging entry",),
    ),
    Case(
        "sampling above 100",
        """
        apiVersion: telemetry.istio.io/v1
        kind: Telemetry
        metadata: {name: t, namespace: default}
        spec:
          tracing:
          - randomSamplingPercentage: 150  #!
        """,
        TELEMETRY, "spec.tracing[0].randomSamplingPercentage", ("out of range", "from 0 to 100"),
    ),
    Case(
        "second namespace-wide Telemetry",
        """
        apiVersion: telemetry.istio.io/v1
        kind: Telemetry
        metadata: {name: a, namespace: default}
        spec: {metrics: [{providers: [{name: prometheus}]}]}
        ---
        apiVersion: telemetry.istio.io/v1
        kind: Telemetry
        metadata: {name: t, namespace: default}
        spec: {accessLogging: [{providers: [{name: json-log}]}]}  #!
        """,
        TELEMETRY, "spec", ("already has a Telemetry without selector (Telemetry/default/a)", "merge them"),
    ),
    Case(
        "two Telemetry select one workload",
        """
        apiVersion: telemetry.istio.io/v1
        kind: Telemetry
        metadata: {name: a, namespace: default}
        spec:
          selector: {matchLabels: {app: client}}
          metrics: [{providers: [{name: prometheus}]}]
        ---
        apiVersion: telemetry.istio.io/v1
        kind: Telemetry
        metadata: {name: t, namespace: default}
        spec:
          selector: {matchLabels: {app: client}}  #!
          accessLogging: [{providers: [{name: json-log}]}]
        """,
        TELEMETRY, "spec.selector", ("Telemetry/default/a also selects proxy client.default",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_telemetry_problem(tmp_path, case):
    check_case(tmp_path, case, TELEMETRY_BASE)


MESH_CONFIG_CASES = [
    Case(
        "the old enableTracing",
        """
        apiVersion: meshwright.io/v1alpha1
        kind: MeshConfig
        metadata: {name: mesh, namespace: default}
        spec:
          enableTracing: true  #!
        """,
        MESH_CONFIG, "spec.enableTracing", ("unknown field 'enableTracing'", "extensionProviders", "defaultProviders.tracing", "randomSamplingPercentage"),
    ),
    Case(
        "default provider that does not exist",
        """
        apiVersion: meshwright.io/v1alpha1
        kind: MeshConfig
        metadata: {name: mesh, namespace: default}
        spec:
          defaultProviders:
            metrics: [stackdriver]  #!
        """,
        MESH_CONFIG, "spec.defaultProviders.metrics[0]", ("provider 'stackdriver' is not defined", "defined: envoy, prometheus"),
    ),
    Case(
        "unsupported provider type",
        """
        apiVersion: meshwright.io/v1alpha1
        kind: MeshConfig
        metadata: {name: mesh, namespace: default}
        spec:
          extensionProviders:
          - name: dd
            datadog: {service: datadog-agent, port: 8126}  #!
        """,
        MESH_CONFIG, "spec.extensionProviders[0].datadog", ("unknown field 'datadog'", "zipkin, opentelemetry, envoyFileAccessLog, prometheus, envoyExtAuthzHttp and envoyExtAuthzGrpc"),
    ),
    Case(
        "collector port the mesh service does not have",
        """
        apiVersion: meshwright.io/v1alpha1
        kind: MeshConfig
        metadata: {name: mesh, namespace: default}
        spec:
          extensionProviders:
          - name: zipkin
            zipkin:
              service: ratings.default.svc.cluster.local
              port: 9411  #!
        """,
        MESH_CONFIG, "spec.extensionProviders[0].zipkin.port", ("ratings.default.svc.cluster.local has no port 9411 (its ports: 9080)",),
    ),
    Case(
        "OpenTelemetry to an HTTP/1 port",
        """
        apiVersion: meshwright.io/v1alpha1
        kind: MeshConfig
        metadata: {name: mesh, namespace: default}
        spec:
          extensionProviders:
          - name: otel
            opentelemetry:
              service: ratings.default.svc.cluster.local
              port: 9080  #!
        """,
        MESH_CONFIG, "spec.extensionProviders[0].opentelemetry.port", ("gRPC", "is HTTP", "protocol GRPC"),
    ),
    Case(
        "provider defined twice",
        """
        apiVersion: meshwright.io/v1alpha1
        kind: MeshConfig
        metadata: {name: mesh, namespace: default}
        spec:
          extensionProviders:
          - {name: logs, envoyFileAccessLog: {path: /dev/stdout}}
          - name: logs  #!
            prometheus: {}
        """,
        MESH_CONFIG, "spec.extensionProviders[1].name", ("provider 'logs' is defined twice",),
    ),
]


@pytest.mark.parametrize("case", MESH_CONFIG_CASES, ids=str)
def test_mesh_config_problem(tmp_path, case):
    check_case(tmp_path, case)


def test_collector_outside_a_sidecars_egress_hosts(tmp_path):
    """A proxy that traces to a mesh service must import it: the problem points at the
    Sidecar's egress hosts and says what to add."""
    sidecar = """\
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: client, namespace: default}
spec:
  workloadSelector: {labels: {app: client}}
  egress:
  - hosts: [./reviews.default.svc.cluster.local]
"""
    text = TELEMETRY_BASE.replace("zipkin: {service: zipkin.example.com, port: 9411}", "zipkin: {service: ratings.default.svc.cluster.local, port: 9080}")
    (tmp_path / "mesh.yaml").write_text(text + sidecar + telemetry("all", "istio-system", "tracing: [{providers: [{name: zipkin}]}]\n"))
    _, problems = validate_mesh(load_paths([str(tmp_path)]))
    assert [(p.resource, p.message) for p in problems] == [(
        "Sidecar/default/client",
        "proxy client.default reports spans to ratings.default.svc.cluster.local (provider 'zipkin'), which it does not import: "
        "add \"default/ratings.default.svc.cluster.local\" to these egress hosts",
    )]


def test_a_cel_filter_envoy_cannot_parse_is_reported_at_its_telemetry(tmp_path, capsys):
    """`meshwright validate` has Envoy parse the access log filters: a bad one is named at
    its file, line and field, a good one beside it is not."""
    from meshwright.cli import main

    (tmp_path / "mesh.yaml").write_text(TELEMETRY_BASE + WORKLOADS + telemetry("logs", "default", """\
        accessLogging:
        - providers: [{name: json-log}]
          filter:
            expression: "response.code >="
        """) + telemetry("edge", "edge", """\
        accessLogging:
        - providers: [{name: json-log}]
          filter: {expression: "response.code >= 500 && request.method == 'GET'"}
        """))
    code = main(["validate", str(tmp_path / "mesh.yaml")])
    out, err = capsys.readouterr()
    assert code == 1
    (line,) = [line for line in err.splitlines() if "CEL" in line]
    assert re.match(r".*/mesh\.yaml:\d+: Telemetry/default/logs: spec\.accessLogging\[0\]\.filter\.expression: Envoy cannot parse the CEL expression 'response.code >=': .*Syntax error", line), line
    assert "edge" not in err


GATEWAY = """\
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*/reviews.default.svc.cluster.local"]
"""


@pytest.mark.parametrize("mode, logged", [("CLIENT", True), ("SERVER", False), ("CLIENT_AND_SERVER", True)])
def test_a_gateways_listeners_are_client_mode(tmp_path, mode, logged):
    """As in Istio, a gateway's listeners count as CLIENT: a SERVER-only entry leaves them alone."""
    mesh = mesh_of(tmp_path, GATEWAY, telemetry("mesh", "istio-system", f"accessLogging: [{{match: {{mode: {mode}}}, providers: [{{name: json-log}}]}}]\n"))
    config = compile_proxy(mesh, find_proxy(mesh, "ingress.istio-system"))
    (listener,) = config.listeners
    assert ("access_log" in listener["filter_chains"][0]["filters"][0]["typed_config"]) is logged
