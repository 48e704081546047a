"""`meshwright validate` and `render` as a user runs them: exit codes 0 (valid), 1 (problems,
every one of them listed) and 2 (usage), as `istioctl validate` users expect."""

from __future__ import annotations

import pytest

from meshwright.cli import main
from tests.unit.validation_cases import BASE

# Five independent mistakes in one file: each must be reported, not only the first.
FIVE_PROBLEMS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v3}
    timout: 5s
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 0
    - destination: {host: reviews, subset: v2}
      weight: 0
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy:
    loadBalancer: {simple: LEAST_CONN}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: details, namespace: default}
spec:
  hosts: [details.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: DNS
  location: MESH_INTERNET
"""


def run(argv, capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def mesh_dir(tmp_path):
    (tmp_path / "base.yaml").write_text(BASE)
    return tmp_path


def test_valid_mesh_exits_0(mesh_dir, capsys):
    code, out, err = run(["validate", "--envoy", "none", str(mesh_dir)], capsys)
    assert (code, err) == (0, "")
    assert out.startswith("5 resources valid")


def test_every_problem_is_reported_not_only_the_first(mesh_dir, capsys):
    """Errors are collected across resources and checks (shape, references, semantics)."""
    path = mesh_dir / "problems.yaml"
    path.write_text(FIVE_PROBLEMS)
    code, out, err = run(["validate", "--envoy", "none", str(mesh_dir)], capsys)
    lines = err.splitlines()
    assert code == 1 and out == ""
    assert lines[-1] == "5 problems found; nothing was written."
    assert [line.split(": ")[:3] for line in lines[:-1]] == [
        [f"{path}:8", "VirtualService/default/reviews", "spec.http[0].route[0].destination.subset"],
        [f"{path}:9", "VirtualService/default/reviews", "spec.http[0].timout"],
        [f"{path}:10", "VirtualService/default/reviews", "spec.http[1].route"],
        [f"{path}:22", "DestinationRule/default/ratings", "spec.trafficPolicy.loadBalancer.simple"],
        [f"{path}:31", "ServiceEntry/default/details", "spec.location"],
    ]


def test_problems_across_files_are_all_reported(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: a}\nspec: {egress: [{hosts: [reviews]}]}\n")
    (tmp_path / "b.yaml").write_text("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: b}\nspec: {servers: []}\n")
    code, _, err = run(["validate", "--envoy", "none", str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")], capsys)
    assert code == 1
    assert err.splitlines() == [
        f"{tmp_path / 'a.yaml'}:4: Sidecar/default/a: spec.egress[0].hosts[0]: 'reviews' is not namespace/host (./host, */host, ns/*)",
        f"{tmp_path / 'b.yaml'}:4: Gateway/default/b: spec.servers: needs at least 1 item",
        "2 problems found; nothing was written.",
    ]


def test_missing_file_is_a_problem(tmp_path, capsys):
    code, _, err = run(["validate", "--envoy", "none", str(tmp_path / "nope.yaml")], capsys)
    assert code == 1
    assert err.splitlines()[0] == f"{tmp_path / 'nope.yaml'}:0: no such file or directory"


@pytest.mark.parametrize("argv", [
    [],
    ["validate"],
    ["frobnicate", "mesh.yaml"],
    ["render", "--proxy", "client.default", "--out", "out"],
    ["render", "--mesh", "mesh.yaml", "--proxy", "client.default", "--out", "out", "--format", "toml"],
], ids=["no arguments", "validate without paths", "unknown command", "render without --mesh", "unknown format"])
def test_usage_errors_exit_2(argv, capsys):
    code, _, err = run(argv, capsys)
    assert code == 2
    assert "usage: meshwright" in err


def test_render_of_an_unknown_proxy_exits_2_and_names_the_known_ones(mesh_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run(["render", "--mesh", str(mesh_dir), "--proxy", "clinet.default", "--out", str(out), "--envoy", "none"], capsys)
    assert code == 2
    assert err.strip() == "error: no proxy named 'clinet.default': a proxy is a WorkloadEntry's or a Gateway's name.namespace (known: client.default)"
    assert not out.exists()


def test_help_exits_0(capsys):
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and "validate" in out and "render" in out


def test_render_writes_the_proxy_files(mesh_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, _ = run(["render", "--mesh", str(mesh_dir), "--proxy", "client.default", "--out", str(out), "--envoy", "none"], capsys)
    assert code == 0
    written = {p.name for p in out.iterdir()} - {".meshwright-files"}  # the manifest of what it wrote
    assert stdout.startswith(f"client.default: {len(written)} files in {out}")
    assert {"bootstrap.yaml", "lds.yaml", "cds.yaml", "rds-15001.yaml"} <= written
