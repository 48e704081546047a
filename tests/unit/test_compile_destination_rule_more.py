"""DestinationRule fields from Istio's reference beyond the basics, as compiled clusters,
routes and tcp proxies: consistent hash on a query parameter, ring hash and Maglev, warmup
(slow start), h2UpgradePolicy, useClientProtocol, maxConcurrentStreams, tcp idleTimeout and
maxConnectionDuration, local-origin outlier errors; workloadSelector and exportTo choosing
which rule a client gets; fault delay.percent."""

from __future__ import annotations

import textwrap

from meshwright.check.pipeline import validate_mesh
from meshwright.compile.build import compile_proxy
from meshwright.compile.proxy import find_proxy
from meshwright.compile.proxy_class import class_key
from meshwright.model.load import load_paths

CLIENTS = """\
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  egress:
  - port: {number: 7080, protocol: HTTP, name: http}
    hosts: ["./*", "other/*"]
  - port: {number: 7432, protocol: TCP, name: tcp}
    hosts: ["./db.shop.svc.cluster.local"]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: other}
spec:
  egress:
  - port: {number: 7080, protocol: HTTP, name: http}
    hosts: ["shop/*"]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: frontend, namespace: shop}
spec: {address: 10.0.0.1, labels: {app: frontend}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: batch, namespace: shop}
spec: {address: 10.0.0.2, labels: {app: batch}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reporter, namespace: other}
spec: {address: 10.0.0.3, labels: {app: frontend}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: catalog, namespace: shop}
spec:
  hosts: [catalog.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints: [{address: 10.1.0.1}, {address: 10.1.0.2}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: shop}
spec:
  hosts: [db.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  endpoints: [{address: 10.2.0.1}]
"""


def write(tmp_path, *texts: str) -> None:
    for index, text in enumerate((CLIENTS,) + texts):
        (tmp_path / f"{index}.yaml").write_text(textwrap.dedent(text))


def compile_mesh(tmp_path, *texts: str):
    write(tmp_path, *texts)
    mesh, problems = validate_mesh(load_paths([str(tmp_path)]))
    assert not problems, "\n".join(str(p) for p in problems)
    return mesh


def problems_of(tmp_path, *texts: str) -> list[str]:
    write(tmp_path, *texts)
    _, problems = validate_mesh(load_paths([str(tmp_path)]))
    return [str(p) for p in problems]


def rule(spec: str, name: str = "catalog", namespace: str = "shop") -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: {namespace}}}
spec:
{textwrap.indent(textwrap.dedent(spec), "  ")}"""


def cluster(mesh, proxy_id: str, name: str = "outbound|8080||catalog.shop.svc.cluster.local") -> dict:
    config = compile_proxy(mesh, find_proxy(mesh, proxy_id))
    return next(c for c in config.clusters if c["name"] == name)


def route_action(mesh, proxy_id: str, port: int = 7080, host: str = "catalog.shop.svc.cluster.local:8080") -> dict:
    config = compile_proxy(mesh, find_proxy(mesh, proxy_id))
    routes = next(r for r in config.routes if r["name"] == str(port))
    return next(v for v in routes["virtual_hosts"] if v["name"] == host)["routes"][0]["route"]


def protocol_options(found: dict) -> dict:
    return found["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]


def tcp_proxy_config(mesh, proxy_id: str, listener_name: str = "127.0.0.1_7432") -> dict:
    config = compile_proxy(mesh, find_proxy(mesh, proxy_id))
    listener = next(l for l in config.listeners if l["name"] == listener_name)
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def test_consistent_hash_on_a_query_parameter_hashes_the_route_on_it(tmp_path):
    mesh = compile_mesh(tmp_path, rule("""\
    host: catalog
    trafficPolicy: {loadBalancer: {consistentHash: {httpQueryParameterName: user, ringHash: {minimumRingSize: 2048}}}}
    """))
    assert route_action(mesh, "frontend.shop")["hash_policy"] == [{"query_parameter": {"name": "user"}}]
    found = cluster(mesh, "frontend.shop")
    assert found["lb_policy"] == "RING_HASH" and found["ring_hash_lb_config"] == {"minimum_ring_size": "2048"}


def test_maglev_with_a_table_size(tmp_path):
    mesh = compile_mesh(tmp_path, rule("""\
    host: catalog
    trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 65537}}}}
    """))
    found = cluster(mesh, "frontend.shop")
    assert found["lb_policy"] == "MAGLEV" and found["maglev_lb_config"] == {"table_size": "65537"}
    assert route_action(mesh, "frontend.shop")["hash_policy"] == [{"header": {"header_name": "x-user"}}]


def test_a_maglev_table_size_that_is_not_prime_is_refused(tmp_path):
    problems = problems_of(tmp_path, rule("""\
    host: catalog
    trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 65536}}}}
    """))
    assert len(problems) == 1
    assert "DestinationRule/shop/catalog: spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: tableSize 65536 is not a prime number" in problems[0]


def test_ring_hash_and_maglev_together_are_refused(tmp_path):
    problems = problems_of(tmp_path, rule("""\
    host: catalog
    trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 7}, ringHash: {minimumRingSize: 8}}}}
    """))
    assert len(problems) == 1 and "spec.trafficPolicy.loadBalancer.consistentHash" in problems[0] and "ringHash" in problems[0] and "maglev" in problems[0]


def test_warmup_becomes_slow_start_of_the_load_balancer(tmp_path):
    mesh = compile_mesh(tmp_path, rule("""\
    host: catalog
    trafficPolicy:
      loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 60s, minimumPercent: 20, aggression: 1.5}}
      portLevelSettings:
      - port: {number: 8080}
        loadBalancer: {warmupDurationSecs: 30s}
    subsets:
    - name: v1
      labels: {version: v1}
      trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 60s, minimumPercent: 20, aggression: 1.5}}}
    """))
    # Port-level settings replace the whole policy: LEAST_REQUEST (the default) with the older field.
    assert cluster(mesh, "frontend.shop")["least_request_lb_config"] == {"slow_start_config": {"slow_start_window": "30s"}}
    subset = cluster(mesh, "frontend.shop", "outbound|8080|v1|catalog.shop.svc.cluster.local")
    assert subset["lb_policy"] == "ROUND_ROBIN"
    assert subset["round_robin_lb_config"] == {"slow_start_config": {
        "slow_start_window": "60s", "aggression": {"default_value": 1.5, "runtime_key": "upstream.warmup_aggression"}, "min_weight_percent": {"value": 20}}}


def test_warmup_with_random_is_refused(tmp_path):
    problems = problems_of(tmp_path, rule("""\
    host: catalog
    trafficPolicy: {loadBalancer: {simple: RANDOM, warmup: {duration: 60s}}}
    """))
    assert len(problems) == 1 and "spec.trafficPolicy.loadBalancer.warmup: warmup needs simple ROUND_ROBIN or LEAST_REQUEST" in problems[0]


def test_h2_upgrade_and_concurrent_streams(tmp_path):
    mesh = compile_mesh(tmp_path, rule("""\
    host: catalog
    trafficPolicy:
      connectionPool:
        http: {h2UpgradePolicy: UPGRADE, maxConcurrentStreams: 100}
        tcp: {maxConnectionDuration: 1h}
    """))
    options = protocol_options(cluster(mesh, "frontend.shop"))
    assert options["explicit_http_config"] == {"http2_protocol_options": {"max_concurrent_streams": 100}}
    assert options["common_http_protocol_options"] == {"max_connection_duration": "3600s"}


def test_do_not_upgrade_keeps_http1(tmp_path):
    mesh = compile_mesh(tmp_path, rule("""\
    host: catalog
    trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: DO_NOT_UPGRADE}}}
    """))
    assert "typed_extension_protocol_options" not in cluster(mesh, "frontend.shop")


def test_use_client_protocol_speaks_what_the_client_spoke(tmp_path):
    mesh = compile_mesh(tmp_path, rule("""\
    host: catalog
    trafficPolicy: {connectionPool: {http: {useClientProtocol: true, h2UpgradePolicy: UPGRADE}}}
    """))
    options = protocol_options(cluster(mesh, "frontend.shop"))
    assert options["use_downstream_protocol_config"] == {"http_protocol_options": {}, "http2_protocol_options": {}}
    assert "explicit_http_config" not in options


def test_tcp_idle_timeout_and_max_connection_duration_go_on_the_tcp_proxy(tmp_path):
    mesh = compile_mesh(tmp_path, rule("""\
    host: db
    trafficPolicy: {connectionPool: {tcp: {idleTimeout: 5m, maxConnectionDuration: 2h}}}
    """, name="db"))
    proxy = tcp_proxy_config(mesh, "frontend.shop")
    assert proxy["cluster"] == "outbound|5432||db.shop.svc.cluster.local"
    assert proxy["idle_timeout"] == "300s" and proxy["max_downstream_connection_duration"] == "7200s"


def test_local_origin_errors_counted_apart(tmp_path):
    mesh = compile_mesh(tmp_path, rule("""\
    host: catalog
    trafficPolicy: {outlierDetection: {splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 2, consecutive5xxErrors: 4}}
    """))
    outlier = cluster(mesh, "frontend.shop")["outlier_detection"]
    assert outlier["split_external_local_origin_errors"] is True
    assert outlier["consecutive_local_origin_failure"] == 2 and outlier["enforcing_consecutive_local_origin_failure"] == 100
    assert outlier["consecutive_5xx"] == 4


def test_workload_selector_applies_the_rule_only_to_the_clients_it_picks(tmp_path):
    mesh = compile_mesh(tmp_path, rule("""\
    host: catalog
    trafficPolicy: {loadBalancer: {simple: RANDOM}}
    """), rule("""\
    host: catalog
    workloadSelector: {matchLabels: {app: frontend}}
    trafficPolicy: {loadBalancer: {consistentHash: {httpQueryParameterName: user}}}
    """, name="catalog-frontend"))
    assert cluster(mesh, "frontend.shop")["lb_policy"] == "RING_HASH"
    assert route_action(mesh, "frontend.shop")["hash_policy"] == [{"query_parameter": {"name": "user"}}]
    # batch is not picked: the rule without a selector.
    assert cluster(mesh, "batch.shop")["lb_policy"] == "RANDOM"
    assert "hash_policy" not in route_action(mesh, "batch.shop")
    # reporter has the label, in another namespace: selectors never reach across namespaces.
    assert cluster(mesh, "reporter.other")["lb_policy"] == "RANDOM"
    # The two clients of shop differ only in a label the selector reads: never one class.
    assert class_key(mesh, find_proxy(mesh, "frontend.shop")) != class_key(mesh, find_proxy(mesh, "batch.shop"))


def test_a_subset_defined_only_by_a_rule_with_a_selector_is_refused(tmp_path):
    """Clients the selector does not pick would be routed to a subset they have no cluster for."""
    problems = problems_of(tmp_path, rule("""\
    host: catalog
    workloadSelector: {matchLabels: {app: frontend}}
    subsets: [{name: v1, labels: {version: v1}}]
    """), """\
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: catalog, namespace: shop}
    spec:
      hosts: [catalog]
      http: [{route: [{destination: {host: catalog, subset: v1}}]}]
    """)
    assert "VirtualService/shop/catalog: spec.http[0].route[0].destination.subset: subset 'v1' of catalog.shop.svc.cluster.local is not defined" in problems[0]


def test_two_rules_for_one_host_and_selector_are_refused(tmp_path):
    problems = problems_of(tmp_path, rule("""\
    host: catalog
    workloadSelector: {matchLabels: {app: frontend}}
    """), rule("""\
    host: catalog
    workloadSelector: {matchLabels: {app: frontend}}
    """, name="catalog-again"))
    assert len(problems) == 1 and "already has DestinationRule/shop/catalog in namespace shop for the same workloadSelector: merge them" in problems[0]


def test_export_to_its_own_namespace_hides_the_rule_from_others(tmp_path):
    mesh = compile_mesh(tmp_path, rule("""\
    host: catalog
    exportTo: ["."]
    trafficPolicy: {loadBalancer: {simple: RANDOM}}
    """))
    assert cluster(mesh, "frontend.shop")["lb_policy"] == "RANDOM"
    assert cluster(mesh, "reporter.other")["lb_policy"] == "LEAST_REQUEST"


def test_export_to_named_namespaces(tmp_path):
    mesh = compile_mesh(tmp_path, rule("""\
    host: catalog
    exportTo: [other]
    trafficPolicy: {loadBalancer: {simple: RANDOM}}
    """))
    assert cluster(mesh, "reporter.other")["lb_policy"] == "RANDOM"
    # Istio: a rule exported to other namespaces only is not visible in its own.
    assert cluster(mesh, "frontend.shop")["lb_policy"] == "LEAST_REQUEST"


def test_export_to_a_bad_name_is_refused(tmp_path):
    problems = problems_of(tmp_path, rule("""\
    host: catalog
    exportTo: [Other_NS]
    """))
    assert len(problems) == 1 and "DestinationRule/shop/catalog: spec.exportTo[0]" in problems[0] and "'*', '.', '~' or a namespace" in problems[0]


def test_fault_delay_percent_is_the_share_of_delayed_requests(tmp_path):
    mesh = compile_mesh(tmp_path, """\
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: catalog, namespace: shop}
    spec:
      hosts: [catalog]
      http:
      - fault: {delay: {percent: 100, fixedDelay: 2s}}
        route: [{destination: {host: catalog}}]
    """)
    config = compile_proxy(mesh, find_proxy(mesh, "frontend.shop"))
    routes = next(r for r in config.routes if r["name"] == "7080")
    route = next(v for v in routes["virtual_hosts"] if v["name"] == "catalog.shop.svc.cluster.local:8080")["routes"][0]
    fault = route["typed_per_filter_config"]["envoy.filters.http.fault"]
    assert fault["delay"] == {"fixed_delay": "2s", "percentage": {"numerator": 1000000, "denominator": "MILLION"}}
