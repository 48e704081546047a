"""The modules under ansible-playbook itself, as the roles use them: found through ansible.cfg
(library, module_utils), their arguments typed from YAML, supervisord detached from Ansible's
pipes, --check --diff output, and a second run that changes nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import envoy._bin

from tests.harness import free_port
from tests.modules.conftest import ROOT

PLAYBOOK = """\
- name: Deploy one proxy's config and an app on this machine
  hosts: localhost
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Validate and render the mesh
      meshwright.mesh.mesh_render:
        mesh: ["{{ mesh }}"]
        proxies: {"frontend.default": "{{ work }}/config"}
      register: rendered

    - name: Install Envoy
      meshwright.mesh.mesh_envoy:
        version: "1.40.0"
        prefix: "{{ work }}"
        binary: "{{ envoy_binary }}"
      register: installed

    - name: Write the proxy's config
      meshwright.mesh.mesh_proxy_config:
        config_dir: "{{ work }}/config"
        files: "{{ rendered.proxies['frontend.default'].files }}"
        validation_bootstrap: "{{ rendered.proxies['frontend.default'].validation_bootstrap }}"
        envoy: "{{ installed.path }}"
        mode: "0644"

    - name: Run the app
      meshwright.mesh.mesh_service:
        name: app
        state: "{{ app_state }}"
        command: ["{{ ansible_playbook_python }}", -m, http.server, "{{ app_port }}", --bind, 127.0.0.1]
        supervisor_dir: "{{ work }}/supervisor"
        ready_url: "http://127.0.0.1:{{ app_port }}/"
        ready_timeout: "10"
      tags: [app]

    - name: Read the state of a proxy that is not running (on a port known to be free)
      meshwright.mesh.mesh_proxy_info:
        admin_port: "{{ idle_port }}"
      register: info

    - name: Assert the proxy reads as not ready
      ansible.builtin.assert:
        that: [not info.ready]
"""
RECAP = re.compile(r"^localhost\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def playbook(tmp_path, *args: str, app_state: str = "started", app_port: int = 0) -> tuple[int, str]:
    path = tmp_path / "play.yml"
    path.write_text(PLAYBOOK)
    extra = {"mesh": os.path.join(ROOT, "examples", "basic", "mesh.yaml"), "work": str(tmp_path / "host"),
             "envoy_binary": os.path.join(os.path.dirname(envoy._bin.__file__), "envoy"), "app_state": app_state,
             "app_port": app_port, "idle_port": free_port()}
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"),
               ANSIBLE_REMOTE_TEMP=str(tmp_path / "ansible-tmp"))
    result = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", "-c", "local",
                             str(path), "-e", json.dumps(extra), *args],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    ok, changed, unreachable, failed = map(int, RECAP.search(output).groups())
    assert (unreachable, failed) == (0, 0), output
    return changed, output


def test_check_diff_apply_and_rerun_through_ansible_playbook(tmp_path):
    port = free_port()
    try:
        changed, output = playbook(tmp_path, "--check", "--diff", app_port=port)
        assert changed == 3, output  # Envoy, config files, app
        assert f"+++ after: {tmp_path}/host/config/lds.yaml" in output
        assert "not validated: " in output  # Envoy is not installed yet in check mode
        assert not os.path.exists(tmp_path / "host")

        changed, output = playbook(tmp_path, app_port=port)
        assert changed == 3, output
        assert os.path.exists(tmp_path / "host" / "config" / "bootstrap.yaml")

        changed, output = playbook(tmp_path, app_port=port)
        assert changed == 0, output
    finally:
        changed, output = playbook(tmp_path, "--tags", "app", app_state="absent", app_port=port)
    assert changed == 1, output
    assert not os.path.exists(tmp_path / "host" / "supervisor" / "supervisor.sock")
