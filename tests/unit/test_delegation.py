"""VirtualService delegation merged as istiod merges it (model/delegation.py), compiled at a
gateway, and the messages for delegates that cannot be used."""

from __future__ import annotations

import os

import pytest

from meshwright.check.pipeline import validate_mesh
from meshwright.compile.build import compile_proxy
from meshwright.compile.proxy import find_proxy
from meshwright.model.delegation import has_conflict, merge_route
from meshwright.model.load import load_paths
from tests.golden.golden import CASES_DIR

CASE = os.path.join(CASES_DIR, "virtual-service-delegate", "mesh.yaml")


@pytest.mark.parametrize(("root", "leaf", "conflict"), [
    ({"uri": {"prefix": "/a"}}, {"uri": {"prefix": "/a/b"}}, False),
    ({"uri": {"prefix": "/a/b"}}, {"uri": {"prefix": "/a"}}, True),  # the delegate's must be within the root's
    ({"uri": {"prefix": "/a"}}, {"uri": {"exact": "/a/x"}}, False),
    ({"uri": {"exact": "/a"}}, {"uri": {"prefix": "/a"}}, True),
    ({"uri": {"exact": "/a"}}, {"uri": {"exact": "/a"}}, False),
    ({"uri": {"regex": "/a.*"}}, {"uri": {"prefix": "/a"}}, True),  # regexes are never narrowed
    ({"uri": {"prefix": "/a"}}, {"headers": {"x": {"exact": "1"}}}, False),
    ({"headers": {"x": {"exact": "1"}}}, {"headers": {"x": {"exact": "2"}}}, True),
    ({"port": 80}, {"port": 8080}, True),
    ({"sourceNamespace": "a"}, {}, True),
    ({"sourceLabels": {"app": "a"}}, {"sourceLabels": {"app": "b"}}, True),
    ({"gateways": ["g1"]}, {"gateways": ["g1", "g2"]}, True),
    ({"ignoreUriCase": True}, {}, True),
])
def test_a_delegate_match_must_fit_within_its_root_match(root, leaf, conflict):
    assert has_conflict(root, leaf) is conflict


def test_a_delegate_route_takes_the_root_match_and_the_fields_it_does_not_set():
    root = {"name": "pp", "match": [{"uri": {"prefix": "/productpage"}, "headers": {"x": {"exact": "1"}}}], "delegate": {"name": "d"},
            "timeout": "5s", "retries": {"attempts": 1}}
    merged = merge_route(root, {"name": "v1", "match": [{"uri": {"prefix": "/productpage/v1"}, "headers": {"y": {}}}],
                                "route": [{"destination": {"host": "a"}}], "retries": {"attempts": 3}})
    assert merged == {
        "name": "pp-v1",
        "match": [{"uri": {"prefix": "/productpage/v1"}, "headers": {"x": {"exact": "1"}, "y": {}}}],
        "route": [{"destination": {"host": "a"}}], "retries": {"attempts": 3}, "timeout": "5s",
    }
    assert merge_route(root, {"match": [{"uri": {"prefix": "/elsewhere"}}], "route": []}) is None


def gateway_routes(mesh) -> list[tuple[str, str]]:
    config = compile_proxy(mesh, find_proxy(mesh, "mygateway.default"))
    return [(str(r["match"]), r["route"]["cluster"]) for c in config.routes for h in c["virtual_hosts"] for r in h["routes"]]


def test_istios_delegation_example_routes_at_the_gateway():
    mesh, problems = validate_mesh(load_paths([CASE]))
    assert problems == []
    assert [cluster for _, cluster in gateway_routes(mesh)] == [
        "outbound|9080||productpage-v1.nsa.svc.cluster.local", "outbound|9080||productpage.nsa.svc.cluster.local",
        "outbound|9080|v2|reviews.nsb.svc.cluster.local", "outbound|9080|v1|reviews.nsb.svc.cluster.local",
    ]


def messages(tmp_path, old: str, new: str) -> list[str]:
    with open(CASE, encoding="utf-8") as handle:
        text = handle.read()
    assert old in text
    (tmp_path / "mesh.yaml").write_text(text.replace(old, new))
    mesh, problems = validate_mesh(load_paths([str(tmp_path)]))
    return [f"{p.resource}: {'.'.join(str(x) for x in p.path)}: {'warning: ' if p.is_warning else ''}{p.message}" for p in problems or mesh.warnings]


def test_a_delegate_that_cannot_be_used_is_an_error(tmp_path):
    assert messages(tmp_path, "exportTo: [default]", "exportTo: [nsb]") == [
        "VirtualService/default/bookinfo: spec.http.1.delegate: VirtualService nsb/reviews is not exported to namespace default (add it to the delegate's exportTo)"]
    assert messages(tmp_path, "      name: reviews\n      namespace: nsb", "      name: ratings\n      namespace: nsb") == [
        "VirtualService/default/bookinfo: spec.http.1.delegate: VirtualService nsb/ratings does not exist (define it, without hosts, with the http routes to delegate to)",
        "VirtualService/nsb/reviews: metadata.name: warning: no VirtualService delegates to this one (it has no hosts): it routes nothing",
    ]
    assert messages(tmp_path, "  exportTo: [default]\n", "  exportTo: [default]\n  gateways: [mesh]\n") == [
        "VirtualService/nsb/reviews: spec.gateways: gateways cannot be used in a delegate VirtualService (one without hosts): "
        "a delegate takes the gateways of the VirtualServices that delegate to it"]


def test_a_delegate_cannot_delegate_further(tmp_path):
    lines = messages(tmp_path, """  - match:
    - headers: {end-user: {exact: jason}}
    route:
    - destination: {host: reviews.nsb.svc.cluster.local, subset: v2}
""", "  - match:\n    - headers: {end-user: {exact: jason}}\n    delegate: {name: productpage, namespace: nsa}\n")
    assert lines[0] == "VirtualService/nsb/reviews: spec.http.0.delegate: a delegate VirtualService cannot delegate further (Istio delegates one level)"
