"""Routing documents in the shapes Istio's docs use (tests/unit/data/istio_corpus_routing, each
beside _client.yaml standing in for what they assume): each is accepted and compiles to what
Istio would do with it."""

from __future__ import annotations

import os

import pytest

from meshwright.check.pipeline import validate_mesh
from meshwright.compile.build import compile_proxy
from meshwright.compile.proxy import find_proxy
from meshwright.model.load import load_paths

CORPUS = os.path.join(os.path.dirname(__file__), "data", "istio_corpus_routing")
CLIENT = os.path.join(CORPUS, "_client.yaml")
DOCUMENTS = sorted(name for name in os.listdir(CORPUS) if not name.startswith("_"))


def accepted(name: str):
    mesh, problems = validate_mesh(load_paths([CLIENT, os.path.join(CORPUS, name)]))
    assert not problems, "\n".join(str(p) for p in problems)
    return mesh


def sleep_routes(mesh, virtual_host: str) -> list[dict]:
    config = compile_proxy(mesh, find_proxy(mesh, "sleep.default"))
    return next(h for r in config.routes for h in r["virtual_hosts"] if h["name"] == virtual_host)["routes"]


@pytest.mark.parametrize("name", DOCUMENTS)
def test_every_document_is_accepted(name):
    accepted(name)


def test_the_corpus_holds_the_routing_documents():
    assert len(DOCUMENTS) == 9


def test_kubernetes_objects_beside_the_istio_resources_are_skipped_with_warnings():
    mesh = accepted("bookinfo-reviews-with-kubernetes-objects.yaml")
    assert [w.resource.split("/")[0] for w in mesh.warnings] == ["Service", "ServiceAccount", "Deployment"]
    assert [r["name"] for r in sleep_routes(mesh, "reviews.default.svc.cluster.local:9080")] == ["default.reviews.0", "default.reviews.1"]


def test_direct_responses_answer_with_text_and_bytes():
    routes = sleep_routes(accepted("direct-response.yaml"), "ratings.prod.svc.cluster.local:9080")
    assert [r.get("direct_response") for r in routes] == [
        {"status": 503, "body": {"inline_string": "unknown error"}}, {"status": 503, "body": {"inline_bytes": "dW5rbm93biBlcnJvcg=="}}, None]


def test_the_egress_gateway_task_routes_sidecars_to_the_gateway_and_the_gateway_out():
    mesh = accepted("egress-gateway-by-match.yaml")
    sidecar = sleep_routes(mesh, "edition.cnn.com:80")
    assert [r["route"]["cluster"] for r in sidecar] == ["outbound|80|cnn|istio-egressgateway.istio-system.svc.cluster.local"]
    gateway = compile_proxy(mesh, find_proxy(mesh, "istio-egressgateway.default"))
    routes = [r for config in gateway.routes for h in config["virtual_hosts"] for r in h["routes"]]
    assert [r["route"]["cluster"] for r in routes] == ["outbound|80||edition.cnn.com"]


def test_the_older_tls_origination_task_sends_port_80_to_443():
    routes = sleep_routes(accepted("egress-tls-origination-by-port-match.yaml"), "edition.cnn.com:80")
    assert [r["route"]["cluster"] for r in routes] == ["outbound|443|tls-origination|edition.cnn.com"]


def test_mirrors_grpc_abort_retries_and_derive_port_compile():
    mirrors = sleep_routes(accepted("mirrors.yaml"), "httpbin.default.svc.cluster.local:8000")[0]["route"]["request_mirror_policies"]
    assert [m["cluster"] for m in mirrors] == ["outbound|8000|v2|httpbin.default.svc.cluster.local", "outbound|9080||reviews.default.svc.cluster.local"]
    abort, retry = sleep_routes(accepted("grpc-abort-and-retries.yaml"), "ratings.prod.svc.cluster.local:9080")
    assert abort["typed_per_filter_config"]["envoy.filters.http.fault"]["abort"]["grpc_status"] == 14
    assert retry["route"]["retry_policy"]["retry_back_off"] == {"base_interval": "0.05s"}
    redirect = sleep_routes(accepted("redirect-derive-port.yaml"), "ratings.prod.svc.cluster.local:9080")[0]
    assert redirect["redirect"]["port_redirect"] == 9080
    assert redirect["match"]["headers"] == [{"name": ":scheme", "string_match": {"exact": "http"}}]


def test_delegated_routes_sit_under_the_root_match():
    routes = sleep_routes(accepted("delegate.yaml"), "reviews.default.svc.cluster.local:9080")
    assert [(r["match"], r["route"]["cluster"]) for r in routes] == [
        ({"prefix": "/productpage/v1/"}, "outbound|9080||ratings.prod.svc.cluster.local"),
        ({"prefix": "/productpage"}, "outbound|9080||reviews.default.svc.cluster.local"),
        ({"prefix": "/"}, "outbound|9080||reviews.default.svc.cluster.local"),
    ]
