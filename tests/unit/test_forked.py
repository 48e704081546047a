"""Check 4 in parts side by side (meshwright/forked.py): the same problems, in the same order,
as in one process; a copy's error is raised; a copy that dies has its part done again."""

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
