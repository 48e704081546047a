"""The envoy_proxy role's `meshwright agent` command for a proxy delivered by xds, with two control
plane instances (high availability): every instance's CSR port for renewals, the first
instance's join port (where the run issues the join token) for the first certificate, and a
command the agent's own parser takes."""

from __future__ import annotations

import json
import os

from meshwright.cli import build_parser
from tests.modules.conftest import ROOT
from tests.modules.test_collection import ansible

PLAYBOOK = """\
- name: The agent's command, from the role's defaults and vars
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Read the role's defaults, then its vars
      ansible.builtin.include_vars: "{{ item }}"
      loop: ["ROLE/defaults/main.yml", "ROLE/vars/main.yml"]
    - name: Show the command
      ansible.builtin.debug:
        msg: "AGENT {{ _envoy_proxy_agent_command | to_json }}"
"""
EXTRA = {
    "mesh_proxy": "order-1.default",
    "envoy_proxy_name": "order-1.default",
    "envoy_proxy_bundle": {"identity": {"certs_dir": "/etc/meshwright/certs"}},
    "mesh_control_planes": [{"host": "cp-1", "xds": "10.0.0.2:15012", "csr": "10.0.0.2:15016", "join": "10.0.0.2:15017"},
                            {"host": "cp-2", "xds": "10.0.0.3:15012", "csr": "10.0.0.3:15016", "join": "10.0.0.3:15017"}],
}


def test_the_agent_renews_through_every_control_plane_instance_and_joins_where_the_token_is(tmp_path):
    (tmp_path / "play.yml").write_text(PLAYBOOK.replace("ROLE", os.path.join(ROOT, "roles", "envoy_proxy")))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_STDOUT_CALLBACK="default")
    out = ansible("ansible-playbook", "-i", "localhost,", "-c", "local", str(tmp_path / "play.yml"), "-e", json.dumps(EXTRA), env=env, cwd=ROOT)
    line = next(line for line in out.splitlines() if '"msg": "AGENT ' in line)
    command = json.loads(json.loads(line.split(": ", 1)[1])[len("AGENT "):])

    args = build_parser().parse_args(command[1:])

    assert [server for group in args.server for server in group] == [("10.0.0.2", 15016), ("10.0.0.3", 15016)]
    assert [server for group in args.join_server for server in group] == [("10.0.0.2", 15017)]
    assert (args.proxy, args.certs_dir) == ("order-1.default", "/etc/meshwright/certs")
