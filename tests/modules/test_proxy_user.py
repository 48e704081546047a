"""Proxies never run as root (docs/security.md): the envoy_proxy role runs Envoy as its own
user, meshwright-proxy (uid 1337, as Istio's istio-proxy), unless told otherwise, and refuses
root - by name, by uid, or as the connecting user when no proxy user is set.

The role's preflight runs in a real ansible-playbook run on this machine, whose connecting user
is the test's (root where these tests run as root, as in CI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.modules.conftest import ROOT

BIN = os.path.dirname(sys.executable)

PLAYBOOK = """
- hosts: all
  gather_facts: false
  tasks:
    - name: Run the envoy_proxy role's preflight
      ansible.builtin.include_role:
        name: meshwright.mesh.envoy_proxy
        tasks_from: preflight
        public: true
    - name: Show the proxy's user
      ansible.builtin.debug:
        msg: "proxy user [{{ envoy_proxy_user }}]"
"""


def preflight(tmp_path, **settings) -> tuple[int, str]:
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    extra = {"mesh_proxy": "payment-1.default", "mesh_config_dir": str(tmp_path / "proxy"),
             "mesh_rendered": {"proxies": {"payment-1.default": {}}},
             "envoy_proxy_source": "binary", "envoy_proxy_binary": "/bin/true", **settings}
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    result = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", "host-1,", "-c", "local", str(tmp_path / "play.yml"),
                             "-e", json.dumps(extra), "-e", f"ansible_python_interpreter={sys.executable}"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    return result.returncode, result.stdout + result.stderr


def test_the_proxy_runs_as_meshwright_proxy_by_default(tmp_path):
    code, output = preflight(tmp_path)
    assert code == 0, output[-3000:]
    assert "proxy user [meshwright-proxy]" in output


@pytest.mark.parametrize("settings, reason", [
    ({"envoy_proxy_user": "root"}, "envoy_proxy_user root with uid 1337"),
    ({"envoy_proxy_user": "admin", "envoy_proxy_uid": 0}, "envoy_proxy_user admin with uid 0"),
])
def test_root_as_the_proxy_user_is_refused(tmp_path, settings, reason):
    code, output = preflight(tmp_path, **settings)
    assert code == 2, output[-3000:]
    assert f"host-1: proxies never run as root (payment-1.default: {reason})" in output


@pytest.mark.skipif(os.geteuid() != 0, reason="the connecting user is root only when the tests run as root")
def test_no_proxy_user_with_root_connecting_is_refused(tmp_path):
    code, output = preflight(tmp_path, envoy_proxy_user="")
    assert code == 2, output[-3000:]
    assert ("host-1: proxies never run as root (payment-1.default: envoy_proxy_user is empty, so it would run as the "
            "connecting user, which is root)") in output
