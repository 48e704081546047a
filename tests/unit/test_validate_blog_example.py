"""The "bad input" of a well-known blog post, kept verbatim in data/blog-example.yaml.

It holds four mistakes people make with the Istio API; like Galley (`istioctl validate`),
meshwright must report each of them, once, where it is written, and say what to do instead.
"""

from __future__ import annotations

import os

import pytest

from meshwright.cli import main

EXAMPLE = os.path.join(os.path.dirname(__file__), "data", "blog-example.yaml")


@pytest.fixture(scope="module")
def report():
    """(exit code, the problem lines) of `meshwright validate` on the example."""
    import contextlib
    import io

    stderr, stdout = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
        code = main(["validate", "--envoy", "none", EXAMPLE])
    lines = stderr.getvalue().splitlines()
    assert lines[-1] == "4 problems found; nothing was written."
    assert stdout.getvalue() == ""
    return code, lines[:-1]


def _only(lines: list[str], prefix: str) -> str:
    matching = [line for line in lines if line.startswith(prefix)]
    assert len(matching) == 1, f"expected one problem starting {prefix!r}, got {matching}"
    return matching[0]


def test_exits_1_with_exactly_four_problems(report):
    code, lines = report
    assert code == 1
    assert len(lines) == 4, "\n".join(lines)


def test_nested_route_with_weight_and_percent_says_how_to_split_and_limit(report):
    """A `route` inside a route destination (with weight/percent) is no Istio field: the
    message explains weights (they split, they do not limit) and points to local rate limits."""
    line = _only(report[1], f"{EXAMPLE}:29: VirtualService/default/order-service: spec.http[0].route[1].route: ")
    assert "unknown field 'route' in a route destination" in line
    assert "Routes do not nest" in line
    assert "give each a weight (relative: each gets weight / sum of the weights)" in line
    assert "does not limit it" in line
    assert "local rate limit" in line and "envoy.filters.http.local_ratelimit" in line


def test_subset_v1_that_no_destination_rule_defines(report):
    """Routing to a subset needs a DestinationRule that defines it (Istio would send the
    traffic to a cluster that does not exist: 503 NR)."""
    line = _only(report[1], f"{EXAMPLE}:28: VirtualService/default/order-service: spec.http[0].route[0].destination.subset: ")
    assert "subset 'v1' of order-service.default.svc.cluster.local is not defined" in line
    assert "DestinationRule/default/order-service defines no subsets" in line
    assert "add {name: v1, labels: {...}} to its subsets" in line


def test_traffic_policy_observability_points_to_telemetry_config(report):
    line = _only(report[1], f"{EXAMPLE}:41: DestinationRule/default/order-service: spec.trafficPolicy.observability: ")
    assert "unknown field 'observability' in a traffic policy" in line
    assert "not traffic policy" in line
    assert "MeshConfig" in line and "extensionProviders" in line and "Telemetry resource" in line


def test_location_mesh_internet_suggests_mesh_internal(report):
    line = _only(report[1], f"{EXAMPLE}:8: ServiceEntry/default/order-service: spec.location: ")
    assert "'MESH_INTERNET' is not valid: expected one of MESH_EXTERNAL, MESH_INTERNAL" in line
    assert "(did you mean MESH_INTERNAL?)" in line


def test_each_problem_points_at_the_line_of_its_field(report):
    """The line is where the offending key is written (not where its value starts), and
    problems come in file order."""
    numbers = [int(line.split(":")[1]) for line in report[1]]
    assert numbers == [8, 28, 29, 41]
    with open(EXAMPLE) as handle:
        text = handle.read().splitlines()
    assert [text[n - 1].strip() for n in numbers] == ["location: MESH_INTERNET", "subset: v1", "- route:", "observability:"]


def test_render_writes_nothing(tmp_path, capsys):
    """Render validates first: with problems, it exits 1 and the output directory is not
    even created (Envoy keeps running on its last good config)."""
    out = tmp_path / "out"
    code = main(["render", "--mesh", EXAMPLE, "--proxy", "order-service.default", "--out", str(out), "--envoy", "none"])
    assert code == 1
    assert not out.exists()
    assert capsys.readouterr().err.splitlines()[-1] == "4 problems found; nothing was written."
