"""VirtualService weights are relative, as in Istio's current API: a destination gets
weight / sum of the weights, a single destination all the traffic whatever its weight, and a
destination without a weight (or of weight 0) among several gets none."""

from __future__ import annotations

import textwrap

import pytest

from meshwright.check.pipeline import validate_mesh
from meshwright.compile.build import compile_proxy
from meshwright.compile.proxy import find_proxy
from meshwright.model.load import load_paths
from tests.unit.validation_cases import BASE

V1, V2 = "outbound|9080|v1|reviews.default.svc.cluster.local", "outbound|9080|v2|reviews.default.svc.cluster.local"
DB = "outbound|5432||db.default.svc.cluster.local"


def validated(tmp_path, case: str):
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "case.yaml").write_text(textwrap.dedent(case))
    mesh, problems = validate_mesh(load_paths([str(tmp_path)]))
    assert not problems, "\n".join(str(p) for p in problems)
    return mesh


def http_route(tmp_path, destinations: str):
    """The Envoy route of reviews' first HTTP route on the client, and the mesh's warnings."""
    mesh = validated(tmp_path, f"""
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {{name: reviews, namespace: default}}
        spec:
          hosts: [reviews]
          http:
          - route: {destinations}
        """)
    config = compile_proxy(mesh, find_proxy(mesh, "client.default"))
    routes = [r for rc in config.routes for vh in rc["virtual_hosts"] if vh["name"].startswith("reviews.") for r in vh["routes"]]
    return routes[0], [str(w) for w in mesh.warnings]


def test_weights_that_do_not_sum_to_100_split_relative_to_their_sum(tmp_path):
    route, warnings = http_route(tmp_path, "[{destination: {host: reviews, subset: v1}, weight: 1}, {destination: {host: reviews, subset: v2}, weight: 3}]")
    assert route["route"]["weighted_clusters"] == {"clusters": [{"name": V1, "weight": 1}, {"name": V2, "weight": 3}]}
    assert "total_weight" not in route["route"]["weighted_clusters"]  # Envoy sums the weights itself
    assert len(warnings) == 1
    assert warnings[0].endswith("spec.http[0].route: warning: weights sum to 4 (1 + 3), not 100: they are relative, so the destinations get 25%, 75% of the traffic")


def test_weights_that_sum_to_100_give_no_warning(tmp_path):
    route, warnings = http_route(tmp_path, "[{destination: {host: reviews, subset: v1}, weight: 80}, {destination: {host: reviews, subset: v2}, weight: 20}]")
    assert route["route"]["weighted_clusters"]["clusters"] == [{"name": V1, "weight": 80}, {"name": V2, "weight": 20}]
    assert warnings == []


@pytest.mark.parametrize("weight", ["", ", weight: 10", ", weight: 0", ", weight: 250"])
def test_a_single_destination_gets_all_traffic_whatever_its_weight(tmp_path, weight):
    route, warnings = http_route(tmp_path, f"[{{destination: {{host: reviews, subset: v2}}{weight}}}]")
    assert route["route"]["cluster"] == V2 and "weighted_clusters" not in route["route"]
    assert warnings == []


def test_destinations_without_weight_among_several_get_nothing(tmp_path):
    """Istio's sample: weight 100 on primary, none on the others: all goes to primary (one
    cluster, with that destination's header operations on the route, as Istio does)."""
    route, warnings = http_route(tmp_path, """
            - destination: {host: reviews, subset: v1}
              weight: 100
              headers: {response: {set: {x-version: v1}}}
            - destination: {host: reviews, subset: v2}
        """)
    assert route["route"]["cluster"] == V1 and "weighted_clusters" not in route["route"]
    assert route["response_headers_to_add"] == [{"header": {"key": "x-version", "value": "v1"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
    assert warnings == []


def test_tcp_egress_listener_splits_by_relative_weights(tmp_path):
    mesh = validated(tmp_path, """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: db, namespace: default}
        spec:
          hosts: [db]
          tcp:
          - route:
            - {destination: {host: db}, weight: 2}
            - {destination: {host: ratings, port: {number: 9080}}, weight: 0}
            - {destination: {host: reviews, port: {number: 9080}}, weight: 1}
        ---
        apiVersion: networking.istio.io/v1
        kind: Sidecar
        metadata: {name: client, namespace: default}
        spec:
          workloadSelector: {labels: {app: client}}
          egress:
          - port: {number: 5432, protocol: TCP, name: tcp}
            hosts: [./db.default.svc.cluster.local]
        """)
    config = compile_proxy(mesh, find_proxy(mesh, "client.default"))
    (listener,) = [item for item in config.listeners if item["name"].endswith("_5432")]
    proxy = listener["filter_chains"][0]["filters"][-1]["typed_config"]
    assert proxy["weighted_clusters"] == {"clusters": [{"name": DB, "weight": 2}, {"name": "outbound|9080||reviews.default.svc.cluster.local", "weight": 1}]}
