"""Proxies of one class share their compiled config (compile/proxy_class.py): what each proxy
gets is exactly what compiling it alone gives, two proxies of a class hold the same outbound
objects, and a change to one scope leaves another scope's config as it was."""

from __future__ import annotations

import json
import os
import sys

import pytest
import yaml

from meshwright.compile.build import compile_proxy
from meshwright.compile.proxy import find_proxy, list_proxies
from meshwright.compile.proxy_class import NO_PROXY_SELECTORS, PROXY_SELECTORS, class_key
from meshwright.model.load import load_paths
from meshwright.validate.istio_api import KINDS
from meshwright.check.pipeline import validate_resources
from tests.golden.golden import CASES_DIR, case_names

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench"))
from estate import write_estate  # noqa: E402  bench/estate.py


def built(paths: list[str]):
    mesh, problems = validate_resources(load_paths(paths))
    assert [str(p) for p in problems] == []
    return mesh


def as_json(config) -> str:
    return json.dumps([config.listeners, config.routes, config.clusters, config.endpoints], sort_keys=True)


def estate(tmp_path, services: int = 12) -> str:
    folder = str(tmp_path / "estate")
    write_estate(services, folder)
    return folder


def mesh_folders(tmp_path) -> list[list[str]]:
    return [[os.path.join(CASES_DIR, case, "mesh.yaml")] for case in case_names()] + [[estate(tmp_path)]]


def test_every_proxy_gets_what_compiling_it_alone_gives(tmp_path):
    """Golden cases and a small estate: every proxy compiled in one mesh (classes shared)
    equals the same proxy compiled in a mesh of its own (nothing to share with)."""
    compared = 0
    for paths in mesh_folders(tmp_path):
        shared = built(paths)
        for proxy in list_proxies(shared):
            alone = built(paths)
            assert as_json(compile_proxy(shared, proxy)) == as_json(compile_proxy(alone, find_proxy(alone, proxy.id))), f"{paths}: {proxy.id}"
            compared += 1
    assert compared > 40


def test_two_proxies_of_one_class_hold_the_same_outbound_objects(tmp_path):
    mesh = built([estate(tmp_path)])
    # Services 0 and 2 are in different namespaces; their first workloads' class differs
    # (namespace), while workloads 1 of services 0 and 10 share namespace, zone and scope.
    first, other = find_proxy(mesh, "svc-00000-2.ns-0"), find_proxy(mesh, "svc-00010-2.ns-0")
    assert class_key(mesh, first) == class_key(mesh, other)
    a, b = compile_proxy(mesh, first), compile_proxy(mesh, other)
    assert a.routes is b.routes and a.listeners is b.listeners and a.endpoints is b.endpoints
    outbound = [(x, y) for x, y in zip(a.clusters, b.clusters) if x["name"].startswith("outbound|")]
    assert len(outbound) == 36
    # The same clusters, stat names included: each proxy's own labels are its bootstrap's fixed tags.
    assert a.clusters is b.clusters and "source_workload" not in outbound[0][0]["alt_stat_name"]
    assert dict(a.stat_tags)["mesh_workload"] == "svc-00000-2" and dict(b.stat_tags)["mesh_workload"] == "svc-00010-2"
    assert dict(a.stat_tags)["mesh_service"] == "svc-00000.ns-0.svc.cluster.local"
    assert dict(b.stat_tags)["mesh_service"] == "svc-00010.ns-0.svc.cluster.local"


def test_a_change_to_one_scope_leaves_another_untouched(tmp_path):
    folder = estate(tmp_path)
    before = built([folder])
    path = os.path.join(folder, "sidecars.yaml")
    with open(path, encoding="utf-8") as handle:
        sidecars = list(yaml.safe_load_all(handle))
    ns1 = next(s for s in sidecars if s["metadata"]["namespace"] == "ns-1")
    ns1["spec"]["egress"][0]["hosts"] = ns1["spec"]["egress"][0]["hosts"][:3]
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump_all(sidecars, handle)
    after = built([folder])
    changed = {p.id for p in list_proxies(after) if as_json(compile_proxy(before, find_proxy(before, p.id))) != as_json(compile_proxy(after, p))}
    scoped_in_ns1 = {p.id for p in list_proxies(after) if p.namespace == "ns-1" and ("scope", "scoped") in p.labels}
    assert changed == scoped_in_ns1 and changed


def test_a_label_no_selector_names_does_not_split_a_class(tmp_path):
    mesh = built([estate(tmp_path)])
    # svc-00000-2 (version v1) and svc-00010-2 differ in app, but no selector of proxies names app or version.
    assert class_key(mesh, find_proxy(mesh, "svc-00000-2.ns-0")) == class_key(mesh, find_proxy(mesh, "svc-00010-2.ns-0"))
    # The Sidecars select on scope: a scoped and an unscoped proxy of one namespace and zone differ.
    assert class_key(mesh, find_proxy(mesh, "svc-00000-1.ns-0")) != class_key(mesh, find_proxy(mesh, "svc-00010-2.ns-0"))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_says_whether_it_selects_proxies(kind):
    """A kind added without saying how it selects proxies would let two proxies it tells apart share a config."""
    assert (kind in PROXY_SELECTORS) != (kind in NO_PROXY_SELECTORS)
