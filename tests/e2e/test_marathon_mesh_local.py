"""The role meshwright.mesh.marathon_mesh from the installed collection, against the Marathon
double (tests/fakes/marathon.py) and a control plane following it (`serve --marathon`, in this
process): the role checks the control plane follows Marathon, injects the listed app and
deploys it as a pod with the sidecar; a second run changes nothing; --check --diff shows a new
sidecar version without deploying it; the new version rolls out as a Marathon deployment, and
one whose instances never become healthy is rolled back and the run fails naming the app (what
upgrade.yml does for Marathon apps, through this role).
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from meshwright.serve import server as xds_server
from meshwright.serve.marathon import MarathonRegistry
from meshwright.serve.source import load_valid
from tests.e2e.deploy import BIN, ROOT, PlaybookRun, playbook_env
from tests.fakes.marathon import MarathonDouble
from tests.harness import free_port

APP = {"id": "/shop/payment", "cmd": "./payment", "instances": 2,
       "portDefinitions": [{"port": 0, "name": "http", "labels": {"meshwright.io/port": "80"}}]}
PLAYBOOK = """\
- name: Mesh the Marathon apps
  hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: meshwright.mesh.marathon_mesh
"""


class Lab:
    def __init__(self, tmp_path):
        self.double = MarathonDouble()
        mesh_dir = tmp_path / "mesh"
        mesh_dir.mkdir()
        (mesh_dir / "mesh.yaml").write_text("apiVersion: meshwright.io/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\nspec: {}\n")
        mesh, problems = load_valid([str(mesh_dir)])
        assert problems == []
        self.running = xds_server.start(mesh, [str(mesh_dir)], ("127.0.0.1", free_port()), None, ("127.0.0.1", free_port()),
                                        registries=[MarathonRegistry([self.double.url], "marathon/prod")])
        self.playbook = tmp_path / "marathon.yml"
        self.playbook.write_text(PLAYBOOK)

    def run(self, *args: str, **extra) -> PlaybookRun:
        extra_vars = {"marathon_mesh_urls": [self.double.url], "marathon_mesh_name": "prod", "marathon_mesh_apps": [{"definition": APP}],
                      "marathon_mesh_xds": "10.0.0.1:15012", "marathon_mesh_csr": "10.0.0.1:15016",
                      "marathon_mesh_control_plane_status_url": f"http://127.0.0.1:{self.running.status_port}/status",
                      "ansible_python_interpreter": os.path.join(BIN, "python"), **extra}
        command = [os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", str(self.playbook), "-e", json.dumps(extra_vars), *args]
        return PlaybookRun(subprocess.run(command, cwd=ROOT, env=playbook_env(), capture_output=True, text=True, timeout=300))

    def pod(self) -> dict:
        return self.double.cluster.pods["/shop/payment"]

    def sidecar_version(self) -> str:
        return self.pod()["labels"]["meshwright.io/injected"]

    def close(self) -> None:
        self.running.stop()
        self.double.stop()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("marathon-mesh"))
    yield lab
    lab.close()


def test_the_role_injects_and_deploys_the_listed_app_then_changes_nothing(lab):
    first = lab.run()
    assert first.returncode == 0, first
    assert first.changed() == {"localhost": 1}
    assert [c["name"] for c in lab.pod()["containers"]] == ["payment", "meshwright-sidecar"]
    assert "--xds 10.0.0.1:15012 --csr 10.0.0.1:15016" in lab.pod()["containers"][1]["exec"]["command"]["shell"]
    assert all(i["status"] == "STABLE" for i in lab.double.cluster.instances["/shop/payment"])
    again = lab.run()
    assert again.returncode == 0, again
    assert again.changed() == {"localhost": 0}


def test_check_mode_shows_a_new_sidecar_version_and_deploys_nothing(lab):
    lab.run()
    before = lab.pod()["version"]
    checked = lab.run("--check", "--diff", marathon_mesh_sidecar_version="9.9.9")
    assert checked.returncode == 0, checked
    assert checked.changed() == {"localhost": 1}
    assert "9.9.9" in checked.output
    assert lab.pod()["version"] == before


def test_a_new_sidecar_rolls_out_and_an_unhealthy_one_is_rolled_back(lab):
    assert lab.run(marathon_mesh_sidecar_version="0.2.0").returncode == 0
    assert lab.sidecar_version() == "0.2.0"
    lab.double.cluster.healthy_on_start = lambda pod: (pod.get("labels") or {}).get("meshwright.io/injected") != "0.3.0"
    try:
        failed = lab.run(marathon_mesh_sidecar_version="0.3.0", marathon_mesh_wait_timeout=3)
    finally:
        lab.double.cluster.healthy_on_start = True
    assert failed.returncode != 0
    assert "/shop/payment" in failed.output and "rolled back" in failed.output, failed
    assert lab.sidecar_version() == "0.2.0"
    assert all(i["status"] == "STABLE" for i in lab.double.cluster.instances["/shop/payment"])


def test_the_role_stops_when_the_control_plane_does_not_follow_marathon(lab):
    refused = lab.run(marathon_mesh_name="elsewhere", marathon_mesh_follow_timeout=2)
    assert refused.returncode != 0
    assert "Wait until the control plane follows Marathon" in refused.output, refused
