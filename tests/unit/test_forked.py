"""Work in parts side by side (meshwright/forked.py): loading, shape checks, check 4, and checks
2-3 beside check 4 give the same resources and problems, in the same order, as one process; a
copy's error is raised; a copy that dies has its part done again."""

from __future__ import annotations

import os

import pytest

from meshwright.check import envoy_proto, pipeline
from meshwright.check.envoy_proto import TYPES
from meshwright.check.pipeline import validate_mesh, validate_proxies
from meshwright.compile.proxy import list_proxies
from meshwright.compile.proxy_class import proxy_classes
from meshwright.forked import forked_map
from meshwright.model.load import load_paths
from tests.unit.validation_cases import BASE

# Proxies of several classes: clients in two localities beside BASE's.
MORE_CLASSES = BASE + "".join(f"""\
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: client-{n}, namespace: {namespace}}}
spec: {{address: 127.0.1.{n}, labels: {{app: client-{n}}}, locality: {locality}}}
""" for n, namespace, locality in ((1, "default", "r1/z1"), (2, "default", "r1/z1"), (3, "other", "r2/z2"), (4, "other", "r2/z2")))


def test_parts_give_what_one_process_gives_in_its_order():
    assert forked_map(lambda n: [n * n, os.getpid()], [1, 2, 3])[0][0] == 1
    results = forked_map(lambda n: n * n, list(range(5)))
    assert results == [0, 1, 4, 9, 16]
    pids = forked_map(lambda n: os.getpid(), [0, 1, 2])
    assert pids[0] == os.getpid() and len(set(pids)) == 3, "each part but the first runs in a copy"


def test_an_error_in_a_copy_is_raised_here():
    def work(n):
        if n == 2:
            raise ValueError("part 2 is bad")
        return n

    with pytest.raises(ValueError, match="part 2 is bad"):
        forked_map(work, [0, 1, 2])


def test_a_copy_that_dies_has_its_part_done_here():
    parent = os.getpid()

    def work(n):
        if n == 1 and os.getpid() != parent:
            os._exit(9)  # killed before it said anything
        return n + 10

    assert forked_map(work, [0, 1, 2]) == [10, 11, 12]


def test_check_4_in_parts_finds_what_one_process_finds(tmp_path, monkeypatch):
    (tmp_path / "mesh.yaml").write_text(MORE_CLASSES)
    mesh, problems = validate_mesh(load_paths([str(tmp_path)]))
    assert problems == []
    assert len(proxy_classes(mesh, list_proxies(mesh))) >= 3, "the test needs classes to split"
    check = envoy_proto.check_resource
    # Every proxy's endpoints refused: each class has problems to report, in every part.
    monkeypatch.setattr(envoy_proto, "check_resource", lambda type_name, resource: "no" if type_name == TYPES["endpoints"] else check(type_name, resource))
    one = validate_proxies(mesh, workers=1)
    assert len({p.resource for p in one}) == len(list_proxies(mesh))
    assert validate_proxies(mesh, workers=3) == one


def test_a_big_mesh_is_split_and_a_small_one_is_not(tmp_path, monkeypatch):
    (tmp_path / "mesh.yaml").write_text(MORE_CLASSES)
    mesh, _ = validate_mesh(load_paths([str(tmp_path)]))
    classes = proxy_classes(mesh, list_proxies(mesh))
    monkeypatch.setattr(pipeline, "available_workers", lambda: 2)
    assert pipeline._workers_for(mesh, classes) == 1
    monkeypatch.setattr(pipeline, "PARALLEL_FROM", 1)
    assert pipeline._workers_for(mesh, classes) == 2
    parts = pipeline._balanced_parts(mesh, classes, 2)
    assert len(parts) == 2 and sorted(p.id for part in parts for c in part for p in c) == sorted(p.id for p in list_proxies(mesh))


def test_a_process_with_other_threads_does_not_fork():
    import threading

    from meshwright.forked import available_workers

    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert available_workers() == 1
    finally:
        stop.set()
        thread.join()


BROKEN_SUBSET = """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  http:
  - route:
    - destination: {host: reviews.default.svc.cluster.local, subset: nope}
"""


def _side_by_side_used(monkeypatch) -> list[bool]:
    """Forces the parts (two workers, any size) and records whether checks 2-3 ran beside check 4."""
    monkeypatch.setattr(pipeline, "available_workers", lambda: 2)
    monkeypatch.setattr(pipeline, "PARALLEL_FROM", 1)
    used: list[bool] = []
    side_by_side = pipeline._side_by_side
    monkeypatch.setattr(pipeline, "_side_by_side", lambda *args: used.append(True) or side_by_side(*args))
    return used


@pytest.mark.parametrize("extra", ["", BROKEN_SUBSET], ids=["valid", "refused-by-check-3"])
def test_checks_2_and_3_beside_check_4_report_what_they_report_in_turn(tmp_path, monkeypatch, extra):
    (tmp_path / "mesh.yaml").write_text(MORE_CLASSES + extra)
    in_turn = pipeline.validate_mesh_with(load_paths([str(tmp_path)]), lambda mesh, config, proxies: len(proxies))
    used = _side_by_side_used(monkeypatch)
    beside = pipeline.validate_mesh_with(load_paths([str(tmp_path)]), lambda mesh, config, proxies: len(proxies))
    assert used == [True]
    assert beside[1] == in_turn[1] and sorted(beside[2]) == sorted(in_turn[2])
    if extra:
        assert [p.message for p in beside[1]] == [p.message for p in in_turn[1]] and "subset 'nope'" in beside[1][0].message
        assert beside[0] is None and beside[2] == []
    else:
        assert beside[1] == [] and beside[0] is not None


def test_check_4_errors_on_a_mesh_check_3_refuses_are_not_reported(tmp_path, monkeypatch):
    """Check 4 runs beside checks 2-3 on a mesh they may still refuse: then what it raised does not count."""
    (tmp_path / "mesh.yaml").write_text(MORE_CLASSES + BROKEN_SUBSET)
    _side_by_side_used(monkeypatch)

    def compile_fails(*args):
        raise KeyError("what an unchecked reference does to the compiler")

    monkeypatch.setattr(pipeline, "_classes_problems", compile_fails)
    mesh, problems = validate_mesh(load_paths([str(tmp_path)]))
    assert mesh is None and "subset 'nope'" in problems[0].message
    (tmp_path / "mesh.yaml").write_text(MORE_CLASSES)
    with pytest.raises(KeyError, match="unchecked reference"):  # on a sound mesh, the same error is a bug: raised
        validate_mesh(load_paths([str(tmp_path)]))


def test_a_large_load_parsed_in_parts_gives_what_one_process_gives(tmp_path, monkeypatch):
    from meshwright.model import load

    (tmp_path / "a.yaml").write_text(MORE_CLASSES)
    (tmp_path / "b.yaml").write_text(BROKEN_SUBSET + "---\nkind: [not, closed\n---\n" + BROKEN_SUBSET.replace("broken", "after"))
    (tmp_path / "c.yaml").write_text(MORE_CLASSES.replace("namespace: default", "namespace: third"))
    one = load.load_paths([str(tmp_path)])
    monkeypatch.setattr(load, "available_workers", lambda: 3)
    monkeypatch.setattr(load, "PARALLEL_FROM_BYTES", 1)
    parts = load.load_paths([str(tmp_path)])
    assert [(r.ref, r.source, r.spec, r.lines) for r in parts.resources] == [(r.ref, r.source, r.spec, r.lines) for r in one.resources]
    assert parts.problems == one.problems and any("not valid YAML" in p.message for p in one.problems)
    assert "VirtualService/default/after" not in {r.ref for r in one.resources}, "a file is read up to its first document that is not YAML"


def test_shape_checks_in_parts_keep_order_and_problems(tmp_path, monkeypatch):
    bad_shape = BROKEN_SUBSET.replace("subset: nope", "subset: nope, weight: many")
    (tmp_path / "mesh.yaml").write_text(MORE_CLASSES + bad_shape)
    one = pipeline.validate_resources(load_paths([str(tmp_path)]))
    monkeypatch.setattr(pipeline, "available_workers", lambda: 3)
    monkeypatch.setattr(pipeline, "SHAPES_PARALLEL_FROM", 1)
    parts = pipeline.validate_resources(load_paths([str(tmp_path)]))
    assert parts == one and any("weight" in p.message for p in one[1])
    (tmp_path / "mesh.yaml").write_text(MORE_CLASSES)
    mesh_parts = pipeline.validate_resources(load_paths([str(tmp_path)]))[0]
    monkeypatch.setattr(pipeline, "available_workers", lambda: 1)
    mesh_one = pipeline.validate_resources(load_paths([str(tmp_path)]))[0]
    assert [(r.ref, r.spec, r.metadata) for r in mesh_parts.resources] == [(r.ref, r.spec, r.metadata) for r in mesh_one.resources]


def test_a_long_resource_list_written_in_parts_is_the_text_written_whole(monkeypatch):
    from meshwright.deliver import files
    from meshwright.deliver.yaml_text import yaml_text

    resources = [{"@type": "t", "name": f"outbound|{n}||s-{n}.ns", "weights": [n, {"odd": n % 2 == 1}], "text": "a: b" if n % 7 else "x\ny"}
                 for n in range(200)]
    monkeypatch.setattr(files, "PARALLEL_ITEMS_FROM", 10)
    monkeypatch.setattr(files, "available_workers", lambda: 3)
    pids = []
    monkeypatch.setattr(files, "forked_map", lambda work, parts: pids.append(len(parts)) or forked_map(work, parts))
    assert files.serialize({"resources": resources}, "yaml") == yaml_text({"resources": resources})
    assert pids == [3], "the list was written in three parts"
