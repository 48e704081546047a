"""The registry contract (serve/registries.py): what a registry publishes joins the mesh files
in the control plane, applied incrementally; a workload marked not ready stays a proxy but is
no endpoint; a bad publish is rejected with its origin named and the last good view kept."""

from __future__ import annotations

import pytest

from meshwright.compile.incremental import assignment_named, compile_estate
from meshwright.model.load import LoadResult, load_paths
from meshwright.check.pipeline import validate_mesh
from meshwright.registry.published import registry_resource
from meshwright.serve.plane import ControlPlane
from meshwright.serve.registries import FILES, ViewChanges, publisher
from meshwright.serve.source import load_valid

FILES_MESH = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client, namespace: default}
spec: {address: 10.0.0.9, labels: {app: client}, serviceAccount: client}
"""
REGISTRY = "test/cluster-1"
CLUSTER = "outbound|9080||reviews.default.svc.cluster.local"


def pod(name: str, address: str, ready: bool = True, annotations: dict | None = None):
    """A WorkloadEntry as a registry makes one for a pod."""
    metadata = {"name": name, "namespace": "default", "annotations": dict(annotations or {})}
    if not ready:
        metadata["annotations"]["meshwright.io/endpoint"] = "not-ready"
    document = {"apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry", "metadata": metadata,
                "spec": {"address": address, "labels": {"app": "reviews"}, "serviceAccount": "reviews"}}
    return registry_resource(REGISTRY, document, f"{REGISTRY}:Pod/default/{name}")


@pytest.fixture
def plane(tmp_path):
    (tmp_path / "mesh.yaml").write_text(FILES_MESH)
    mesh, problems = load_valid([str(tmp_path)])
    assert problems == []
    plane = ControlPlane(mesh, require_identity=False)
    plane.files = [str(tmp_path)]
    return plane


def endpoints_seen_by_client(plane: ControlPlane, proxy_id: str = "client.default") -> list[str]:
    assignment = assignment_named(plane.estate, proxy_id, CLUSTER)
    return sorted(lb["endpoint"]["address"]["socket_address"]["address"]
                  for group in assignment.get("endpoints", []) for lb in group.get("lb_endpoints", []))


def assert_same_as_compiled_whole(plane: ControlPlane) -> None:
    """The incrementally served estate equals the merged mesh compiled from scratch."""
    merged = [r for held in plane._sources.values() for r in held.values()]
    mesh, problems = validate_mesh(LoadResult(merged))
    assert problems == []
    whole = compile_estate(mesh)
    assert list(plane.estate.proxies) == list(whole.proxies)
    for proxy_id in whole.proxies:
        assert plane.estate.versions(proxy_id) == whole.versions(proxy_id), proxy_id


def test_a_publish_adds_workloads_as_proxies_and_not_ready_ones_are_no_endpoint(plane):
    assert plane.apply_source(REGISTRY, [pod("reviews-a", "10.1.0.1"), pod("reviews-b", "10.1.0.2", ready=False)]) == []

    assert {"reviews-a.default", "reviews-b.default", "client.default"} <= set(plane.estate.proxies)
    assert endpoints_seen_by_client(plane) == ["10.1.0.1"]
    assert_same_as_compiled_whole(plane)


def test_readiness_moves_and_removals_follow_each_publish(plane):
    plane.apply_source(REGISTRY, [pod("reviews-a", "10.1.0.1"), pod("reviews-b", "10.1.0.2", ready=False)])

    assert plane.apply_source(REGISTRY, [pod("reviews-a", "10.1.0.1"), pod("reviews-b", "10.1.0.2")]) == []
    assert endpoints_seen_by_client(plane) == ["10.1.0.1", "10.1.0.2"]
    assert_same_as_compiled_whole(plane)

    assert plane.apply_source(REGISTRY, [pod("reviews-b", "10.1.0.7"), pod("reviews-c", "10.1.0.3")]) == []
    assert endpoints_seen_by_client(plane) == ["10.1.0.3", "10.1.0.7"]
    assert "reviews-a.default" not in plane.estate.proxies
    assert_same_as_compiled_whole(plane)

    assert plane.apply_source(REGISTRY, []) == []
    assert endpoints_seen_by_client(plane) == []
    assert set(plane.estate.proxies) == {"client.default"}


def test_a_bad_publish_is_rejected_naming_its_origin_and_the_last_good_view_stays(plane, caplog):
    plane.apply_source(REGISTRY, [pod("reviews-a", "10.1.0.1")])
    generation = plane.generation

    publisher(plane, REGISTRY)([pod("reviews-a", "10.1.0.1"), pod("reviews-b", "not an address")])

    assert plane.generation == generation
    assert plane.rejection["source"] == REGISTRY
    assert any(p.startswith(f"{REGISTRY}:Pod/default/reviews-b:1: WorkloadEntry/default/reviews-b: spec.address")
               for p in plane.rejection["problems"]), plane.rejection
    assert "test/cluster-1: change rejected (1 problem); proxies keep its last good resources" in caplog.text
    assert endpoints_seen_by_client(plane) == ["10.1.0.1"]
    # An edit of the files still applies, with the registry's last good resources.
    assert plane.apply_loaded(load_paths(plane.files)) == []
    assert plane.apply_source(FILES, [r for r in load_paths(plane.files).resources if r.kind != "WorkloadEntry"]) == []
    assert "client.default" not in plane.estate.proxies
    assert endpoints_seen_by_client(plane, "reviews-a.default") == ["10.1.0.1"]


def test_the_readiness_annotation_takes_one_value(plane):
    problems = plane.apply_source(REGISTRY, [pod("reviews-a", "10.1.0.1", annotations={"meshwright.io/endpoint": "maybe"})])

    assert [str(p) for p in problems] == [
        f"{REGISTRY}:Pod/default/reviews-a:1: WorkloadEntry/default/reviews-a: metadata.annotations.meshwright.io/endpoint: "
        "'maybe': expected 'not-ready' (the workload is in no service's endpoints) or no annotation"]
    assert "reviews-a.default" not in plane.estate.proxies


def test_many_workloads_at_once_are_validated_and_compiled_whole(plane):
    pods = [pod(f"reviews-{i}", f"10.1.{i // 200}.{i % 200 + 1}") for i in range(80)]  # a new class: more than ONE_BY_ONE_LIMIT

    assert plane.apply_source(REGISTRY, pods) == []

    assert len(endpoints_seen_by_client(plane)) == 80
    assert_same_as_compiled_whole(plane)


def test_a_workload_another_source_holds_too_is_refused_as_a_duplicate(plane):
    """The files hold WorkloadEntry default/client: a registry that publishes one of that name
    does not replace it quietly; validation refuses the duplicate and names it."""
    problems = plane.apply_source(REGISTRY, [pod("client", "10.1.0.1")])

    assert [str(p).split(" is also defined at ")[0] for p in problems] == [
        f"{REGISTRY}:Pod/default/client:1: WorkloadEntry/default/client: metadata.name: duplicate WorkloadEntry: WorkloadEntry/default/client"]
    assert plane.estate.proxies["client.default"].address == "10.0.0.9"


def changes(*resources, gone=()) -> ViewChanges:
    """A registry's publish of what changed: resources as they are now, and the names of pods that left."""
    return ViewChanges({**{r.key: r for r in resources}, **{("WorkloadEntry", "default", name): None for name in gone}})


def test_a_publish_of_what_changed_edits_the_registrys_view_alone(plane):
    """After a whole view, a registry publishes only its changes: a pod that moved, one that
    came and one that went; the pods it did not name stay as they were."""
    assert plane.apply_source(REGISTRY, [pod("reviews-a", "10.1.0.1"), pod("reviews-b", "10.1.0.2")]) == []

    assert plane.apply_source(REGISTRY, changes(pod("reviews-b", "10.1.0.7"), pod("reviews-c", "10.1.0.3", ready=False))) == []
    assert endpoints_seen_by_client(plane) == ["10.1.0.1", "10.1.0.7"]
    assert "reviews-c.default" in plane.estate.proxies
    assert_same_as_compiled_whole(plane)

    assert plane.apply_source(REGISTRY, changes(pod("reviews-c", "10.1.0.3"), gone=["reviews-a", "reviews-z"])) == []
    assert endpoints_seen_by_client(plane) == ["10.1.0.3", "10.1.0.7"]
    assert "reviews-a.default" not in plane.estate.proxies
    assert_same_as_compiled_whole(plane)


def test_refused_changes_are_tried_again_with_the_registrys_next_ones(plane):
    """A change refused stays refused until the registry changes it again (as a whole view
    holding it would be): the pod's later fix applies, and so does the change refused beside it."""
    plane.apply_source(REGISTRY, [pod("reviews-a", "10.1.0.1")])

    problems = plane.apply_source(REGISTRY, changes(pod("reviews-a", "10.1.0.5"), pod("reviews-b", "not an address")))
    assert [str(p).split(": spec.address")[0] for p in problems] == [f"{REGISTRY}:Pod/default/reviews-b:1: WorkloadEntry/default/reviews-b"]
    assert endpoints_seen_by_client(plane) == ["10.1.0.1"]

    problems = plane.apply_source(REGISTRY, changes(pod("reviews-c", "10.1.0.3")))
    assert problems and plane.rejection["source"] == REGISTRY  # reviews-b is still bad
    assert endpoints_seen_by_client(plane) == ["10.1.0.1"]

    assert plane.apply_source(REGISTRY, changes(pod("reviews-b", "10.1.0.2"))) == []
    assert endpoints_seen_by_client(plane) == ["10.1.0.2", "10.1.0.3", "10.1.0.5"]
    assert_same_as_compiled_whole(plane)
