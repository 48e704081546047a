"""The watched folder's reload parses only the documents that changed: the others give the
very resources they gave before (so the plane sees one change, and takes the incremental
path), with the same problems; a document whose place moved is parsed again (its lines are
named as they are now); the load's limits hold as on a first load."""

from __future__ import annotations

import io
import logging
import time

from meshwright.model.load import load_paths
from meshwright.serve.plane import ControlPlane
from meshwright.serve.source import MeshFolder, load_valid

ENTRY = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: default}}
spec: {{address: {address}, labels: {{app: reviews}}}}
"""
SERVICE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: reviews}}
"""


def write(folder, addresses: list[str], header: str = "") -> None:
    entries = [ENTRY.format(name=f"reviews-{i}", address=address) for i, address in enumerate(addresses)]
    (folder / "mesh.yaml").write_text(header + "---\n".join([SERVICE, *entries]))


def test_a_reload_parses_again_only_the_documents_that_changed(tmp_path):
    write(tmp_path, ["10.0.0.1", "10.0.0.2", "10.0.0.3"])
    parsed: dict = {}
    first = load_paths([str(tmp_path)], parsed)
    write(tmp_path, ["10.0.0.1", "10.0.0.9", "10.0.0.3"])
    second = load_paths([str(tmp_path)], parsed)
    assert [r.name for r in second.resources] == ["reviews", "reviews-0", "reviews-1", "reviews-2"]
    same = [after is before for before, after in zip(first.resources, second.resources)]
    assert same == [True, True, False, True]
    assert second.resources[2].spec["address"] == "10.0.0.9" and first.resources[2].spec["address"] == "10.0.0.2"
    # A line added above every document moves them all: each is parsed again and names its new line.
    write(tmp_path, ["10.0.0.1", "10.0.0.9", "10.0.0.3"], header="# a comment\n")
    third = load_paths([str(tmp_path)], parsed)
    assert not any(after is before for before, after in zip(second.resources, third.resources))
    assert [r.source.line - 1 for r in third.resources] == [r.source.line for r in second.resources]
    # Equal to what a first load gives.
    assert [(r.key, r.spec, r.source) for r in third.resources] == [(r.key, r.spec, r.source) for r in load_paths([str(tmp_path)]).resources]


def test_a_kept_document_keeps_its_problems_and_the_limits_still_hold(tmp_path, monkeypatch):
    (tmp_path / "mesh.yaml").write_text(SERVICE + "---\n" + ENTRY.format(name="a", address="10.0.0.1").replace("spec:", "spec: {}\nspec:"))
    parsed: dict = {}
    first = load_paths([str(tmp_path)], parsed)
    again = load_paths([str(tmp_path)], parsed)
    assert [str(p) for p in again.problems] == [str(p) for p in first.problems] and "duplicate key" in str(first.problems[0])
    monkeypatch.setenv("MESHWRIGHT_MAX_DOCUMENTS", "1")
    limited = load_paths([str(tmp_path)], parsed)
    assert limited.resources == [] and "more than 1 documents" in str(limited.problems[0])


def test_an_edit_of_one_workload_among_many_in_the_folder_takes_the_incremental_path(tmp_path):
    """Through the watch, as `meshwright serve` runs it: the plane is told of one resource."""
    addresses = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(300)]
    write(tmp_path, addresses)
    mesh, problems = load_valid([str(tmp_path)])
    assert problems == []
    plane = ControlPlane(mesh, require_identity=False)
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    logger = logging.getLogger("meshwright.serve")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    loads = []

    def on_loaded(loaded):
        loads.append(loaded.resources)
        return plane.apply_loaded(loaded)

    watch = MeshFolder([str(tmp_path)], on_loaded)
    watch.start()
    try:
        for step in range(2):
            generation = plane.generation
            time.sleep(0.5)  # the watch's first load done, and a modification time that differs
            addresses[150] = f"10.9.9.{step + 1}"
            write(tmp_path, addresses)
            deadline = time.monotonic() + 5
            while plane.generation == generation and time.monotonic() < deadline:
                time.sleep(0.02)
            assert plane.generation == generation + 1
            assert log.getvalue().count("(files: one resource, WorkloadEntry/default/reviews-150 in ") == step + 1
        assert [r.spec.get("address") for r in plane.estate.mesh.resources if r.name == "reviews-150"] == ["10.9.9.2"]
        # The second reload gave the very resources of the first, but the edited one.
        assert [after is before for before, after in zip(*loads)] == [True] * 151 + [False] + [True] * 149
    finally:
        watch.stop()
        logger.removeHandler(handler)


def _config_map_folder(folder, text: str, stamp: str) -> None:
    """A folder as the kubelet mounts a ConfigMap: the file in a hidden timestamped folder, ..data
    linking to it, and the file's name linking through ..data (an update swaps ..data)."""
    (folder / stamp).mkdir()
    (folder / stamp / "mesh.yaml").write_text(text)
    (folder / "..data_tmp").symlink_to(stamp)
    (folder / "..data_tmp").rename(folder / "..data")
    if not (folder / "mesh.yaml").is_symlink():
        (folder / "mesh.yaml").symlink_to("..data/mesh.yaml")


def test_a_config_map_mounted_as_the_mesh_folder_is_read_once_and_its_update_seen(tmp_path):
    from meshwright.serve.source import fingerprint

    mesh = "apiVersion: meshwright.io/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\nspec: {trustDomain: cluster.local}\n"
    _config_map_folder(tmp_path, mesh, "..2026_12_08_01_00_00.1")
    loaded = load_paths([str(tmp_path)])
    assert not loaded.problems and len(loaded.resources) == 1, loaded.problems
    before = fingerprint([str(tmp_path)])
    _config_map_folder(tmp_path, mesh.replace("cluster.local", "east.example"), "..2026_12_08_01_05_00.2")
    assert fingerprint([str(tmp_path)]) != before
    assert "east.example" in repr(load_paths([str(tmp_path)]).resources[0])
