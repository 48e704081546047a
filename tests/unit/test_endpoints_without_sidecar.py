"""A WorkloadEntry annotated `meshwright.io/sidecar: "false"` (a pod without an injected
sidecar) is an endpoint of the services selecting it and no proxy: nothing is compiled for
it, auto mTLS reaches it in plaintext (its endpoint is not tagged tlsMode=istio) while the
sidecars beside it get mTLS, and a DestinationRule's ISTIO_MUTUAL still sends mTLS to all,
as Istio does. Its arrivals, departures and readiness take the fast path."""

from __future__ import annotations

import copy
import random

import pytest

from meshwright.check.incremental import apply, apply_resources
from meshwright.check.pipeline import validate_mesh
from meshwright.compile.build import compile_proxy
from meshwright.compile.incremental import compile_estate, with_workloads_changed
from meshwright.compile.proxy import find_proxy, list_proxies
from meshwright.mesh import Mesh
from meshwright.model.load import load_paths, resource_from_document
from tests.unit.test_incremental import estate_mesh, expected_changes, full_versions

MESH = """\
apiVersion: meshwright.io/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec: {trustDomain: cluster.local, certificates: {dir: certs}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  ingress: [{port: {number: 9080, protocol: HTTP, name: http}, defaultEndpoint: "127.0.0.1:8000"}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-injected, namespace: shop}
spec: {address: 10.244.0.5, labels: {app: reviews}, serviceAccount: reviews}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-plain, namespace: shop, annotations: {meshwright.io/sidecar: "false"}}
spec: {address: 10.244.0.6, labels: {app: reviews}, serviceAccount: reviews}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client, namespace: shop}
spec: {address: 10.244.0.9, labels: {app: client}, serviceAccount: client}
"""

ISTIO_MUTUAL = """\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec: {host: reviews.shop.svc.cluster.local, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}
"""


def mesh_of(tmp_path, text: str) -> tuple[Mesh | None, list[str]]:
    (tmp_path / "mesh.yaml").write_text(text)
    mesh, problems = validate_mesh(load_paths([str(tmp_path / "mesh.yaml")]))
    return mesh, [str(p) for p in problems]


def line_of(text: str, part: str) -> int:
    return 1 + text[:text.index(part)].count("\n")


def reviews_cluster(mesh: Mesh) -> tuple[dict, dict]:
    """The client's cluster of reviews and its load assignment."""
    config = compile_proxy(mesh, find_proxy(mesh, "client.shop"))
    name = "outbound|9080||reviews.shop.svc.cluster.local"
    return (next(c for c in config.clusters if c["name"] == name), next(e for e in config.endpoints if e["cluster_name"] == name))


def tls_modes(assignment: dict) -> dict[str, str]:
    """address -> the tlsMode its endpoint is tagged with ('' when none: plaintext)."""
    return {lb["endpoint"]["address"]["socket_address"]["address"]:
            lb.get("metadata", {}).get("filter_metadata", {}).get("envoy.transport_socket_match", {}).get("tlsMode", "")
            for group in assignment["endpoints"] for lb in group["lb_endpoints"]}


def test_a_workload_without_a_sidecar_is_an_endpoint_but_no_proxy(tmp_path):
    mesh, problems = mesh_of(tmp_path, MESH)
    assert problems == []
    assert [p.id for p in list_proxies(mesh)] == ["client.shop", "reviews-injected.shop"]
    assert [e.address for e in mesh.registry.get("reviews.shop.svc.cluster.local").endpoints] == ["10.244.0.5", "10.244.0.6"]


def test_auto_mtls_reaches_the_sidecar_with_mtls_and_the_plain_workload_in_plaintext(tmp_path):
    mesh, _ = mesh_of(tmp_path, MESH)
    cluster, assignment = reviews_cluster(mesh)
    assert [m["name"] for m in cluster["transport_socket_matches"]] == ["tlsMode-istio", "tlsMode-disabled"]
    assert tls_modes(assignment) == {"10.244.0.5": "istio", "10.244.0.6": ""}


def test_a_service_of_plain_workloads_only_is_reached_in_plaintext(tmp_path):
    mesh, _ = mesh_of(tmp_path, MESH.replace('metadata: {name: reviews-injected, namespace: shop}',
                                             'metadata: {name: reviews-injected, namespace: shop, annotations: {meshwright.io/sidecar: "false"}}'))
    cluster, assignment = reviews_cluster(mesh)
    assert "transport_socket_matches" not in cluster and "transport_socket" not in cluster
    assert tls_modes(assignment) == {"10.244.0.5": "", "10.244.0.6": ""}


def test_istio_mutual_in_a_destination_rule_still_sends_mtls_to_every_endpoint(tmp_path):
    """As in Istio: the rule wins over auto mTLS, and the plain workload's handshake fails."""
    mesh, _ = mesh_of(tmp_path, MESH + ISTIO_MUTUAL)
    cluster, assignment = reviews_cluster(mesh)
    assert cluster["transport_socket"]["name"] == "envoy.transport_sockets.tls" and "transport_socket_matches" not in cluster
    assert tls_modes(assignment) == {"10.244.0.5": "", "10.244.0.6": ""}


@pytest.mark.parametrize("annotations, message", [
    ({"meshwright.io/sidecar": "no"}, "'no': expected 'false' (no proxy runs beside this workload: it is an endpoint only) or no annotation"),
    ({"meshwright.io/sidecar": "false", "sidecar.istio.io/interceptionMode": "REDIRECT"},
     "a workload without a sidecar has no proxy to capture its traffic: remove sidecar.istio.io/interceptionMode or this annotation"),
])
def test_a_bad_sidecar_annotation_is_refused_with_its_path(tmp_path, annotations, message):
    text = MESH.replace('annotations: {meshwright.io/sidecar: "false"}', "annotations: " + repr(annotations).replace("'", '"'))
    mesh, problems = mesh_of(tmp_path, text)
    assert mesh is None
    assert problems == [f"{tmp_path / 'mesh.yaml'}:{line_of(text, 'name: reviews-plain')}: WorkloadEntry/shop/reviews-plain: metadata.annotations.meshwright.io/sidecar: {message}"]


def test_the_sidecar_annotation_on_another_kind_is_refused(tmp_path):
    text = MESH.replace("metadata: {name: reviews, namespace: shop}\nspec:\n  hosts",
                        'metadata: {name: reviews, namespace: shop, annotations: {meshwright.io/sidecar: "false"}}\nspec:\n  hosts')
    mesh, problems = mesh_of(tmp_path, text)
    assert mesh is None
    assert problems == [f"{tmp_path / 'mesh.yaml'}:{line_of(text, 'name: reviews, namespace: shop, annotations')}: ServiceEntry/shop/reviews: metadata.annotations.meshwright.io/sidecar: 'false': expected set on a WorkloadEntry"]


def plain_arrival(rng: random.Random, mesh: Mesh) -> tuple[dict, bool]:
    """A pod without a sidecar beside a workload of the estate (no capture: none to capture
    with, under the estate's STRICT mesh-wide PeerAuthentication, which binds sidecars only)."""
    twin = rng.choice([w for w in mesh.of_kind("WorkloadEntry") if not (w.spec.get("labels") or {}).get("istio")])
    document = copy.deepcopy(twin.document)
    document["metadata"] = {"name": f"{twin.name}-plain-{rng.randrange(10**6)}", "namespace": twin.namespace,
                            "annotations": {"meshwright.io/sidecar": "false"}}
    document["spec"]["address"] = f"10.{rng.randrange(200, 250)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    return document, False


def plain_departure(rng: random.Random, mesh: Mesh) -> tuple[dict, bool] | None:
    plain = [w for w in mesh.of_kind("WorkloadEntry") if w.annotations.get("meshwright.io/sidecar") == "false"]
    return (rng.choice(plain).document, True) if plain else None


def plain_readiness(rng: random.Random, mesh: Mesh) -> tuple[dict, bool] | None:
    plain = [w for w in mesh.of_kind("WorkloadEntry") if w.annotations.get("meshwright.io/sidecar") == "false"]
    if not plain:
        return None
    document = copy.deepcopy(rng.choice(plain).document)
    annotations = document["metadata"]["annotations"]
    if annotations.pop("meshwright.io/endpoint", None) is None:
        annotations["meshwright.io/endpoint"] = "not-ready"
    return document, False


@pytest.mark.parametrize("seed", [11, 12])
def test_plain_workloads_coming_going_and_changing_readiness_take_the_fast_path_and_no_proxy_changes(tmp_path, seed):
    """In batches as a registry publishes them: one fast step each, what it reports is what
    full compiles before and after differ in, and the set of proxies never changes."""
    rng = random.Random(seed)
    estate = compile_estate(estate_mesh(tmp_path))
    proxies = list(estate.proxies)
    before = full_versions(estate.mesh)
    for _ in range(4):
        edited, removed, touched = [], [], set()
        for make_change in (plain_arrival, plain_arrival, plain_departure, plain_readiness):
            change = make_change(rng, estate.mesh)
            if change is None or (change[0]["metadata"]["namespace"], change[0]["metadata"]["name"]) in touched:
                continue
            touched.add((change[0]["metadata"]["namespace"], change[0]["metadata"]["name"]))
            (removed if change[1] else edited).append(resource_from_document(change[0]))
        assert with_workloads_changed(estate, edited, removed) is not None
        estate, changes = apply_resources(estate, edited, removed)
        after = full_versions(estate.mesh)
        assert changes == expected_changes(before, after)
        assert {kind for diff in changes.values() for kind in diff} <= {"endpoints"}
        assert list(estate.proxies) == proxies == [p.id for p in list_proxies(Mesh.build(list(estate.mesh.resources)))]
        before = after


def test_a_plain_workload_that_arrives_is_in_its_services_endpoints_untagged(tmp_path):
    estate = compile_estate(estate_mesh(tmp_path, services=3))
    document, _ = plain_arrival(random.Random(3), estate.mesh)
    new, changes = apply(estate, document)
    addresses = {address: mode for config in (g.config for g in new.groups.values()) for assignment in config.endpoints
                 for address, mode in tls_modes(assignment).items()}
    assert addresses[document["spec"]["address"]] == ""
    assert "istio" in addresses.values()  # the sidecars beside it keep mTLS
    assert f"{document['metadata']['name']}.{document['metadata']['namespace']}" not in new.proxies and changes
