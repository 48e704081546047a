"""meshwright.mesh.mesh_prometheus_config: the texts `meshwright prometheus` writes, made in the
controller's Ansible process for the telemetry role (no delegate_to)."""

from __future__ import annotations

import json
import os

from tests.modules.conftest import run_module

SEED = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples", "seed")


def test_the_seed_mesh_gives_a_config_and_a_target_per_proxy_with_metrics():
    result = run_module("mesh_prometheus_config", mesh=[SEED], scrape_interval="5s")

    assert not result.get("failed"), result
    assert result["changed"] is False and set(result["files"]) == {"prometheus.yml", "targets/meshwright-proxies.json"}
    assert "scrape_interval: 5s" in result["files"]["prometheus.yml"]
    targets = json.loads(result["files"]["targets/meshwright-proxies.json"])
    assert len(targets) == result["proxies"] > 0
    assert all(group["labels"]["mesh_proxy"] for group in targets)


def test_an_invalid_mesh_fails_naming_its_problem(tmp_path):
    bad = tmp_path / "mesh.yaml"
    bad.write_text("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\nspec: {hosts: 7}\n")

    result = run_module("mesh_prometheus_config", mesh=[str(bad)])

    assert result["failed"] and "VirtualService/default/x" in json.dumps(result)
