#!/usr/bin/python
# -*- coding: utf-8 -*-
# meshwright: sign proxies' CSRs with the mesh CA, on the controller (a pipe module).

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_workload_sign
short_description: Sign proxies' CSRs with the mesh CA, each only for its own SPIFFE ID
description:
  - A pipe module, like C(x509_certificate_pipe) - CSRs in, certificate chains out; it writes nothing and never
    reports a change. M(mesh_workload_cert) installs each chain on its host.
  - The identity a proxy may have comes from the mesh config, never from the request - the namespace and service
    account of its WorkloadEntry (or, for a standalone gateway, its Gateway). A CSR asking for any other SPIFFE ID,
    or not signed by its own key, or not ECDSA P-256, fails the task with the reason and signs nothing.
  - The lifetime is the MeshConfig's C(certificates.workloadCertTtl) (30 days by default), never past the
    intermediate's own expiry.
  - Runs on the controller with the Python that has the C(meshwright) package.
requirements:
  - meshwright (on the controller)
options:
  ca_dir:
    description: The mesh CA's folder (M(mesh_ca)'s O(mesh_ca#module:path)).
    type: path
    required: true
  mesh:
    description: Mesh config files or folders, as for M(mesh_render).
    type: list
    elements: path
    required: true
  csrs:
    description:
      - Proxy ID (C(name.namespace)) to its CSR, either the PEM text (signed by O(intermediate)) or
        C({csr, intermediate}) to name the site's intermediate per proxy.
    type: dict
    required: true
  intermediate:
    description: The intermediate CA (site) that signs CSRs that name none.
    type: str
    default: default
  vault_password_file:
    description: The vault password file of a CA whose keys are ansible-vault encrypted (M(mesh_ca)'s
      O(mesh_ca#module:vault_password_file)); the key is decrypted in memory only. Without it, the environment's
      C(ANSIBLE_VAULT_PASSWORD_FILE).
    type: path
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details: Signs in check mode too; it writes nothing either way.
  diff_mode:
    support: full
    details: Nothing to diff; it never changes anything.
  platform:
    platforms: posix
author:
  - meshwright maintainers
"""

EXAMPLES = r"""
- name: Sign the CSRs of every proxy of the batch that made one
  mesh_workload_sign:
    ca_dir: /srv/meshwright/ca
    mesh: ["{{ mesh_config_dir }}"]
    csrs: "{{ dict(ansible_play_hosts | map('extract', hostvars, 'mesh_proxy')
             | zip(ansible_play_hosts | map('extract', hostvars, ['proxy_csr', 'csr']))) }}"
    intermediate: eu-west
  delegate_to: localhost
  run_once: true
  vars:
    ansible_python_interpreter: "{{ meshwright_controller_python }}"
  register: signed
"""

RETURN = r"""
chains:
  description: Proxy ID to its signed certificate.
  returned: success
  type: dict
  contains:
    chain:
      description: The leaf and the intermediate (PEM), never the root.
      type: str
    spiffe_id:
      description: The identity it carries.
      type: str
      sample: spiffe://cluster.local/ns/default/sa/payment-service
    serial:
      description: Serial number, lower-case hex as Envoy's admin C(/certs) shows it.
      type: str
    not_after:
      description: Expiry (ISO 8601).
      type: str
    intermediate:
      description: The site whose intermediate signed it.
      type: str
bundle:
  description: The trust bundle that goes with the chains (PEM).
  returned: success
  type: str
"""

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib

try:
    from meshwright.compile.proxy import UnknownProxy
    from meshwright.deliver.bundle import RenderError, load_mesh
    from meshwright.pki.ca_folder import CaError, CaFolder
    from meshwright.pki.vault import Vault, VaultError
    from meshwright.pki.identity import sign_proxy_csr
    from meshwright.pki.info import describe, first_certificate
    from meshwright.pki.workload import CsrRefused
except ImportError:
    CaFolder = None


def requests(module):
    """(proxy, csr PEM, intermediate) for each entry of csrs."""
    out = []
    for proxy, entry in sorted(module.params["csrs"].items()):
        csr, site = (entry.get("csr"), entry.get("intermediate")) if isinstance(entry, dict) else (entry, None)
        if not csr:
            module.fail_json(msg=f"csrs.{proxy}: no CSR given")
        out.append((str(proxy), str(csr), str(site or module.params["intermediate"])))
    return out


def main():
    module = AnsibleModule(
        argument_spec=dict(
            ca_dir=dict(type="path", required=True),
            mesh=dict(type="list", elements="path", required=True),
            csrs=dict(type="dict", required=True),
            intermediate=dict(type="str", default="default"),
            vault_password_file=dict(type="path", no_log=False, fallback=(env_fallback, ["ANSIBLE_VAULT_PASSWORD_FILE"])),  # a path, not the secret
        ),
        supports_check_mode=True,
    )
    if CaFolder is None:
        module.fail_json(msg=missing_required_lib("meshwright", reason="to sign with the mesh CA on the controller"))
    wanted = requests(module)
    try:
        vault = Vault.from_file(module.params["vault_password_file"]) if module.params["vault_password_file"] else None
    except VaultError as error:
        module.fail_json(msg=str(error))
    folder = CaFolder(module.params["ca_dir"], vault=vault)
    chains = {}
    try:
        mesh = load_mesh(module.params["mesh"]) if wanted else None
        for proxy, csr, site in wanted:
            try:
                chain = sign_proxy_csr(mesh, proxy, csr.encode(), folder.intermediate(site))
            except CsrRefused as error:
                module.fail_json(msg=f"refused to sign the CSR of {proxy}: {error}", proxy=proxy)
            info = describe(first_certificate(chain), folder.now)
            chains[proxy] = dict(chain=chain.decode(), spiffe_id=info.spiffe_id, serial=info.serial,
                                 not_after=info.not_after.isoformat(), intermediate=site)
        bundle = folder.bundle().decode()
    except (CaError, UnknownProxy) as error:
        module.fail_json(msg=str(error))
    except RenderError as error:
        module.fail_json(msg=str(error), problems=[str(problem) for problem in error.problems])
    module.exit_json(changed=False, chains=chains, bundle=bundle)


if __name__ == "__main__":
    main()
