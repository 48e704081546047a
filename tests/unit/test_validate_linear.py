"""Checks 1-3 (validate_resources, Mesh.build included) and list_proxies do work linear in the
estate's size (issue #11): for the estate of bench/estate.py with 4x the services, no line of
meshwright runs, and no function is called, more than about 4x as often. Work that pairs every resource with every other (a selector
tried on every WorkloadEntry, a lookup scanning every service per workload) runs 16x as often.
Counting, not timing, keeps the test exact on a busy machine."""

from __future__ import annotations

import gc
import os
import sys
from collections import Counter

import pytest
import yaml

import meshwright
from meshwright.compile.proxy import list_proxies
from meshwright.model.load import load_paths
from meshwright.check import pipeline
from meshwright.validate import semantics
from meshwright.check.pipeline import validate_resources

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench"))
from estate import document, service_name, write_estate  # noqa: E402  bench/estate.py

MESHWRIGHT = os.path.dirname(meshwright.__file__)
SMALL = 50
LINEAR_GROWTH = 4.4  # linear work grows 4x (a little less with fixed costs); quadratic 16x
FIXED_COST = 20  # lines run fewer times than this at 4x the size are fixed costs, not growth


def executions(work) -> Counter:
    """How often work() runs each line of meshwright (a loop of N steps counts N, calls or not)
    and calls each Python function (a generator counts each item it yields)."""
    counts: Counter = Counter()

    def line(frame, event, arg):
        if event == "line":
            counts[f"{frame.f_code.co_filename}:{frame.f_lineno}"] += 1
        return line

    def call(frame, event, arg):
        code = frame.f_code
        counts[f"{code.co_filename}:{code.co_firstlineno} {code.co_qualname}"] += 1
        return line if code.co_filename.startswith(MESHWRIGHT) else None

    before = sys.gettrace()
    sys.settrace(call)
    try:
        work()
    finally:
        sys.settrace(before)
    return counts


def policy_documents(services: int) -> list[dict]:
    """Per service, what selects its workloads besides its ServiceEntry: a STRICT
    PeerAuthentication, an AuthorizationPolicy and a Telemetry (policies as many as services)."""
    documents = []
    for index in range(services):
        name, namespace = service_name(index)
        selector = {"matchLabels": {"app": name}}
        documents += [
            document("PeerAuthentication", name, namespace, {"selector": selector, "mtls": {"mode": "STRICT"}}, "security.istio.io/v1"),
            document("AuthorizationPolicy", name, namespace, {
                "selector": selector, "action": "ALLOW", "rules": [{"from": [{"source": {"namespaces": [namespace]}}]}],
            }, "security.istio.io/v1"),
            document("Telemetry", name, namespace, {"selector": selector, "metrics": [{"overrides": [{"disabled": False}]}]}, "telemetry.istio.io/v1"),
        ]
    return documents


def checks_of_estate(folder, services: int, policies: bool) -> Counter:
    write_estate(services, str(folder))
    if policies:
        (folder / "policies.yaml").write_text(yaml.safe_dump_all(policy_documents(services)))
    loaded = load_paths([str(folder)])

    def checks():
        mesh, problems = validate_resources(loaded)
        assert [str(problem) for problem in problems] == []
        list_proxies(mesh)

    return executions(checks)


@pytest.mark.parametrize("policies", [False, True], ids=["estate", "estate-with-a-policy-per-service"])
def test_checks_1_to_3_run_no_line_more_than_4x_as_often_for_4x_the_services(tmp_path, policies):
    small = checks_of_estate(tmp_path / "small", SMALL, policies)
    large = checks_of_estate(tmp_path / "large", 4 * SMALL, policies)
    outgrown = {name: f"{small[name]} -> {runs}" for name, runs in large.items() if runs >= FIXED_COST and runs > LINEAR_GROWTH * small[name]}
    assert outgrown == {}
    # The estate grew, and what is counted is the work: selectors matched against labels.
    assert sum(large.values()) > 3.5 * sum(small.values())
    assert any(name.endswith(" labels_match") and runs >= 3 * 4 * SMALL for name, runs in large.items())


def test_validation_pauses_the_garbage_collector_and_leaves_it_as_it_found_it(tmp_path, monkeypatch):
    """validate_resources pauses the cyclic collector while its checks run (meshwright/
    collector.py's cyclic_collector_paused): it is on again after, and stays off where the caller turned it off."""
    write_estate(5, str(tmp_path))
    loaded = load_paths([str(tmp_path)])
    collector_on = []

    def check_conflicts(mesh, problems):
        collector_on.append(gc.isenabled())
        semantics.check_conflicts(mesh, problems)

    monkeypatch.setattr(pipeline, "check_conflicts", check_conflicts)
    assert validate_resources(loaded)[1] == [] and gc.isenabled()
    gc.disable()
    try:
        assert validate_resources(loaded)[1] == [] and not gc.isenabled()
    finally:
        gc.enable()
    assert collector_on == [False, False]


def test_check_4_runs_no_line_more_than_4x_as_often_for_4x_the_services(tmp_path):
    """Check 4 (validate_proxies) compiles and checks each class of proxies once: in this
    estate the classes stay the same as it grows, so nothing in it may pair every proxy with
    every service (a set of all a proxy's clusters built per proxy, not per class)."""
    counts = []
    for name, services in (("small", SMALL), ("large", 4 * SMALL)):
        write_estate(services, str(tmp_path / name))
        mesh, problems = validate_resources(load_paths([str(tmp_path / name)]))
        assert [str(problem) for problem in problems] == []
        counts.append(executions(lambda: pipeline.validate_proxies(mesh)))
    small, large = counts
    outgrown = {name: f"{small[name]} -> {runs}" for name, runs in large.items() if runs >= FIXED_COST and runs > LINEAR_GROWTH * small[name]}
    assert outgrown == {}
    assert sum(large.values()) > 2.5 * sum(small.values())  # the work grew (each distinct shape is parsed once: fixed)
