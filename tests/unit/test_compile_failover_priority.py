"""DestinationRule localityLbSetting.failoverPriority, as Istio's pilot computes it: each
client proxy gets the endpoints that agree with its own labels (in the order listed) at the
first priority, then those that agree on fewer of the first labels; `key=value` compares the
endpoints with that value; `failover` beside it orders by locality within each of those; and
proxies that agree on the labels share one load assignment."""

from __future__ import annotations

import textwrap

from meshwright.check.pipeline import validate_mesh
from meshwright.compile.build import compile_proxy
from meshwright.compile.proxy import find_proxy
from meshwright.model.load import load_paths

MESH = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client-a1, namespace: shop}
spec: {address: 10.0.0.1, labels: {app: client, rack: a, row: "1"}, locality: eu/zone1}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client-a2, namespace: shop}
spec: {address: 10.0.0.2, labels: {app: client, rack: a, row: "2"}, locality: eu/zone1}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client-b1, namespace: shop}
spec: {address: 10.0.0.3, labels: {app: client, rack: b, row: "1"}, locality: eu/zone1}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client-bare, namespace: shop}
spec: {address: 10.0.0.4}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: catalog, namespace: shop}
spec:
  hosts: [catalog.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.1.0.1, labels: {rack: a, row: "1"}, locality: eu/zone1}
  - {address: 10.1.0.2, labels: {rack: a, row: "2"}, locality: eu/zone1}
  - {address: 10.1.0.3, labels: {rack: b, row: "1"}, locality: eu/zone2}
  - {address: 10.1.0.4, labels: {rack: c}, locality: us/zone1}
"""


def rule(load_balancer: str, outlier: str = "outlierDetection: {consecutive5xxErrors: 1}") -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: catalog, namespace: shop}}
spec:
  host: catalog
  trafficPolicy:
    loadBalancer: {load_balancer}
    {outlier}
"""


def validate(tmp_path, *texts: str):
    for index, text in enumerate((MESH,) + texts):
        (tmp_path / f"{index}.yaml").write_text(textwrap.dedent(text))
    return validate_mesh(load_paths([str(tmp_path)]))


def compile_mesh(tmp_path, *texts: str):
    mesh, problems = validate(tmp_path, *texts)
    assert not [p for p in problems if not p.is_warning], "\n".join(str(p) for p in problems)
    return mesh


def assignment(mesh, proxy_id: str) -> dict:
    config = compile_proxy(mesh, find_proxy(mesh, proxy_id))
    return next(a for a in config.endpoints if a["cluster_name"] == "outbound|8080||catalog.shop.svc.cluster.local")


def priorities(mesh, proxy_id: str) -> dict[str, int]:
    """endpoint address -> its priority, as the proxy gets them."""
    return {
        lb["endpoint"]["address"]["socket_address"]["address"]: group.get("priority", 0)
        for group in assignment(mesh, proxy_id)["endpoints"] for lb in group["lb_endpoints"]
    }


def test_endpoints_agreeing_on_more_of_the_labels_come_first(tmp_path):
    mesh = compile_mesh(tmp_path, rule("{localityLbSetting: {failoverPriority: [rack, row]}}"))
    assert priorities(mesh, "client-a1.shop") == {"10.1.0.1": 0, "10.1.0.2": 1, "10.1.0.3": 2, "10.1.0.4": 2}
    assert priorities(mesh, "client-a2.shop") == {"10.1.0.1": 1, "10.1.0.2": 0, "10.1.0.3": 2, "10.1.0.4": 2}
    # A row agrees only after the rack does: b's row 1 is not a1's row 1.
    assert priorities(mesh, "client-b1.shop") == {"10.1.0.1": 1, "10.1.0.2": 1, "10.1.0.3": 0, "10.1.0.4": 1}


def test_a_locality_split_by_priority_keeps_its_locality_in_each_group(tmp_path):
    mesh = compile_mesh(tmp_path, rule("{localityLbSetting: {failoverPriority: [rack, row]}}"))
    groups = [(g["locality"].get("zone"), g.get("priority", 0), len(g["lb_endpoints"])) for g in assignment(mesh, "client-a1.shop")["endpoints"]]
    assert groups == [("zone1", 0, 1), ("zone1", 1, 1), ("zone2", 2, 1), ("zone1", 2, 1)]


def test_the_localitys_own_labels_can_be_named(tmp_path):
    mesh = compile_mesh(tmp_path, rule("{localityLbSetting: {failoverPriority: [topology.kubernetes.io/region, topology.kubernetes.io/zone]}}"))
    assert priorities(mesh, "client-a1.shop") == {"10.1.0.1": 0, "10.1.0.2": 0, "10.1.0.3": 1, "10.1.0.4": 2}


def test_a_label_with_a_value_compares_the_endpoints_with_that_value(tmp_path):
    mesh = compile_mesh(tmp_path, rule("{localityLbSetting: {failoverPriority: [rack=c]}}"))
    assert priorities(mesh, "client-a1.shop") == {"10.1.0.1": 1, "10.1.0.2": 1, "10.1.0.3": 1, "10.1.0.4": 0}


def test_failover_beside_it_orders_by_locality_within_each_label_priority(tmp_path):
    mesh = compile_mesh(tmp_path, rule("{localityLbSetting: {failoverPriority: [rack], failover: [{from: eu, to: us}]}}"))
    # rack a first (both in the client's zone), then the rest: zone2 of its region before us.
    assert priorities(mesh, "client-a1.shop") == {"10.1.0.1": 0, "10.1.0.2": 0, "10.1.0.3": 1, "10.1.0.4": 2}


def test_a_client_without_labels_gets_no_priorities(tmp_path):
    mesh = compile_mesh(tmp_path, rule("{localityLbSetting: {failoverPriority: [rack]}}"))
    assert set(priorities(mesh, "client-bare.shop").values()) == {0}


def test_without_outlier_detection_nothing_is_ordered_and_a_warning_says_so(tmp_path):
    mesh, problems = validate(tmp_path, rule("{localityLbSetting: {failoverPriority: [rack]}}", outlier=""))
    assert not problems
    assert [str(w) for w in mesh.warnings] == [
        f"{tmp_path}/1.yaml:7: DestinationRule/shop/catalog: spec.trafficPolicy.loadBalancer.localityLbSetting.failoverPriority: warning: "
        "failoverPriority needs outlierDetection in the same policy (else Envoy never leaves the first priority): it does nothing here"
    ]
    assert set(priorities(mesh, "client-a1.shop").values()) == {0}


def test_clients_that_agree_on_the_labels_share_the_load_assignment(tmp_path):
    mesh = compile_mesh(tmp_path, rule("{localityLbSetting: {failoverPriority: [rack]}}"))
    assert assignment(mesh, "client-a1.shop") is assignment(mesh, "client-a2.shop")
    assert assignment(mesh, "client-a1.shop") != assignment(mesh, "client-b1.shop")


def test_bad_labels_and_invalid_combinations_are_refused(tmp_path):
    _, problems = validate(tmp_path, rule("{localityLbSetting: {failoverPriority: [rack, 'bad key', topology.kubernetes.io/zone], "
                                          "failover: [{from: eu, to: us}]}}"))
    messages = sorted(str(p).split(": ", 1)[1] for p in problems)
    assert messages == [
        "DestinationRule/shop/catalog: spec.trafficPolicy.loadBalancer.localityLbSetting.failoverPriority[1]: 'bad key' is not "
        "a label key, or key=value (a label key: an optional DNS-1123 prefix and '/', then up to 63 letters, digits, '-', '_' and '.')",
        "DestinationRule/shop/catalog: spec.trafficPolicy.loadBalancer.localityLbSetting.failoverPriority[2]: topology.kubernetes.io/zone "
        "cannot be named beside failover, which orders endpoints by locality itself (Istio refuses it too)",
    ]


def test_distribute_and_failover_priority_together_are_refused(tmp_path):
    _, problems = validate(tmp_path, rule("{localityLbSetting: {failoverPriority: [rack], distribute: [{from: 'eu/*', to: {'eu/*': 100}}]}}"))
    assert len(problems) == 1 and "localityLbSetting" in str(problems[0]) and "failoverPriority" in str(problems[0])
