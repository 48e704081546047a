"""Issue 10 item 4 under ansible-playbook: a compromised host returns facts that make it
another proxy, at the site '../root' (facts a host's module returns outrank the inventory's
host variables). The playbooks' way of signing (the first play renders the mesh with the
inventory's hosts and registers the signing plan; the envoy_proxy role's identity phase signs
against it) refuses, naming the host; without the forged facts both hosts get their own
identity."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from cryptography import x509

from tests.modules.conftest import ROOT

SEED = os.path.join(ROOT, "examples", "seed", "mesh")

INVENTORY = """\
[mesh]
payment-1 mesh_proxy=payment-1.default mesh_site=local
order-1 mesh_proxy=order-1.default mesh_site=local

[mesh:vars]
ansible_connection=local
"""

# The first play is deploy.yml's: the same render task (with the signing plan) and the CA.
PLAYBOOK = """\
- name: Render on the controller (as deploy.yml's first play)
  hosts: mesh
  gather_facts: false
  tasks:
    - name: Validate the mesh config and render every proxy
      meshwright.mesh.mesh_render:
        mesh: "{{ mesh_config_paths }}"
        proxies: "{{ dict(ansible_play_hosts_all | map('extract', hostvars, 'mesh_proxy') | zip(ansible_play_hosts_all | map('extract', hostvars, 'mesh_config_dir'))) }}"
        hosts: "{{ dict(ansible_play_hosts_all | zip(ansible_play_hosts_all | map('extract', hostvars, 'mesh_proxy'))) }}"
        sites: "{{ dict(ansible_play_hosts_all | zip(ansible_play_hosts_all | map('extract', hostvars) | map(attribute='mesh_site', default='default'))) }}"
      delegate_to: localhost
      run_once: true
      register: mesh_rendered

    - name: Keep the mesh CA
      ansible.builtin.include_role:
        name: meshwright.mesh.mesh_ca
      vars:
        mesh_ca_intermediates: "{{ mesh_rendered.identities.values() | map(attribute='site') | unique | sort }}"

- name: The proxies' identity phase
  hosts: mesh
  gather_facts: false
  tasks:
    - name: A compromised host's module returns forged facts
      forge_facts:
        facts: {mesh_proxy: order-1.default, mesh_site: ../root}
      when: forge | bool and inventory_hostname == 'payment-1'

    - name: Give each proxy its certificate
      ansible.builtin.include_role:
        name: meshwright.mesh.envoy_proxy
        tasks_from: identity.yml
"""

FORGE_MODULE = """\
#!/usr/bin/python
from ansible.module_utils.basic import AnsibleModule
module = AnsibleModule(argument_spec=dict(facts=dict(type="dict", required=True)))
module.exit_json(changed=False, ansible_facts=module.params["facts"])
"""


def play(tmp_path, forge: bool, inject_facts: bool = True) -> subprocess.CompletedProcess:
    """The play, by default on a controller whose config lets facts override variables (Ansible's
    default; the repository's ansible.cfg turns that off), so that the signing plan alone stands
    between a forged fact and a certificate."""
    (tmp_path / "hosts.ini").write_text(INVENTORY)
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    (tmp_path / "library").mkdir(exist_ok=True)
    (tmp_path / "library" / "forge_facts.py").write_text(FORGE_MODULE)
    extra = {"forge": forge, "mesh_config_paths": [SEED], "mesh_ca_dir": str(tmp_path / "ca"), "ansible_python_interpreter": sys.executable,
             "mesh_config_dir": "{{ '%s/' ~ inventory_hostname ~ '/proxy' }}" % tmp_path,
             # Only the identity phase runs (no preflight, no proxy user made): the certificates
             # stay the connecting user's.
             "envoy_proxy_user": ""}
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_INJECT_FACT_VARS=str(inject_facts))
    return subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", str(tmp_path / "hosts.ini"),
                           str(tmp_path / "play.yml"), "-e", json.dumps(extra)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_a_host_returning_another_proxys_facts_is_refused_and_named(tmp_path):
    run = play(tmp_path, forge=True)
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-4000:]
    assert ("refused to sign the CSR of host payment-1: it claims proxy order-1.default at site ../root, but the inventory gives it "
            "proxy payment-1.default at site local") in output, output[-4000:]
    assert not (tmp_path / "order-1" / "certs" / "cert-chain.pem").exists()
    assert not (tmp_path / "payment-1" / "certs" / "cert-chain.pem").exists()


def assert_own_identities(tmp_path, run: subprocess.CompletedProcess) -> None:
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    for host, account in (("payment-1", "payment-service"), ("order-1", "order-service")):
        leaf = x509.load_pem_x509_certificate((tmp_path / host / "certs" / "cert-chain.pem").read_bytes())
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://cluster.local/ns/default/sa/{account}"]


def test_without_forged_facts_each_host_gets_its_own_identity(tmp_path):
    assert_own_identities(tmp_path, play(tmp_path, forge=False))


def test_with_the_repositorys_ansible_cfg_forged_facts_never_reach_the_variables(tmp_path):
    """inject_facts_as_vars = False: the forged facts stay under ansible_facts, the run goes on
    with the inventory's proxy and site, and each host gets its own identity."""
    assert_own_identities(tmp_path, play(tmp_path, forge=True, inject_facts=False))


ROLE_PLAYBOOK = """\
- name: The mesh_ca role with a site that is a path
  hosts: localhost
  gather_facts: false
  roles:
    - role: meshwright.mesh.mesh_ca
"""


def test_the_mesh_ca_role_refuses_a_site_that_is_a_path_before_the_module_runs(tmp_path):
    (tmp_path / "play.yml").write_text(ROLE_PLAYBOOK)
    extra = {"mesh_ca_dir": str(tmp_path / "ca"), "mesh_ca_intermediates": ["local", "../root", "a\n"], "ansible_python_interpreter": sys.executable}
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    run = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", "-c", "local",
                          str(tmp_path / "play.yml"), "-e", json.dumps(extra)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-4000:]
    assert "site names (mesh_site, mesh_ca_intermediates) must be DNS-1123 labels" in output and '"../root", "a\\n"' in output, output[-4000:]
    assert not (tmp_path / "ca").exists()
