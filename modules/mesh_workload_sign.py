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
  - With O(plan) (what M(mesh_render) returns as C(identities) when given the inventory's hosts), O(csrs) are keyed
    by inventory host name, and each host is signed only for the proxy and site the plan gives it. A host missing
    from the plan, claiming another proxy or site than the plan's, or sending a CSR for another SPIFFE ID or one
    not signed by its own key is refused, with the host named - whatever facts the host returned.
  - The lifetime is the MeshConfig's C(certificates.workloadCertTtl) (30 days by default), never past the
    intermediate's or the root's expiry; an expired intermediate or root signs nothing (renew it with M(mesh_ca)).
  - Site names must be DNS-1123 labels (a site is a folder of the CA).
  - Holds a shared lock on the CA folder while it reads the CA - it waits while M(mesh_ca) writes, not for other
    readers, and changes nothing (see M(mesh_ca)'s O(mesh_ca#module:lock_timeout)).
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
      - Without O(plan) - proxy ID (C(name.namespace)) to its CSR, either the PEM text (signed by O(intermediate))
        or C({csr, intermediate}) to name the site's intermediate per proxy.
      - With O(plan) - inventory host name to its CSR, the PEM text or C({csr, proxy, intermediate}) where
        C(proxy) and C(intermediate) are what the host claims (each must equal the plan's).
      - An entry may carry C(public_key_sha256), M(mesh_workload_csr)'s digest of the key the host holds - a CSR
        for another key is refused.
    type: dict
    required: true
  plan:
    description:
      - Inventory host name to C({proxy, site, spiffe_id}), built on the controller from the inventory and the
        mesh before any host ran a task (M(mesh_render)'s C(identities), registered). The SPIFFE ID must still be
        the one the mesh gives the proxy.
    type: dict
  lock_timeout:
    description: Seconds to wait for another run holding the CA folder's lock before failing (naming the holder).
    type: float
    default: 300
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
  description: Proxy ID (with O(plan) - inventory host name) to its signed certificate.
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
    proxy:
      description: The proxy it was signed for.
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
    from meshwright.deliver.identity import check_request, planned_requests, proxy_requests, sign_proxy_csr
    from meshwright.pki.ca_folder import CaError, CaFolder, check_site
    from meshwright.pki.vault import Vault, VaultError
    from meshwright.pki.info import describe, first_certificate
    from meshwright.pki.workload import CsrRefused
except ImportError:
    CaFolder = None


def requests(module):
    """The requests to sign: keyed by inventory host against the plan when there is one."""
    try:
        if module.params["plan"] is not None:
            return planned_requests(module.params["csrs"], module.params["plan"])
        return proxy_requests(module.params["csrs"], module.params["intermediate"])
    except CsrRefused as error:
        module.fail_json(msg=str(error), host=getattr(error, "host", None))


def sign_all(module, folder, mesh, wanted):
    """Request key -> its chain and summary; fails naming the first request refused."""
    chains = {}
    for request in wanted:
        try:
            check_site(request.site)
        except CaError as error:
            module.fail_json(msg=f"refused to sign the CSR of {request.who}: {error}", proxy=request.proxy, host=request.key)
        issuer = folder.intermediate(request.site)  # CaError (no such site, no key, expired...) as it is
        try:
            check_request(mesh, request)
            chain = sign_proxy_csr(mesh, request.proxy, request.csr.encode(), issuer, folder.now)
        except CsrRefused as error:
            module.fail_json(msg=f"refused to sign the CSR of {request.who}: {error}", proxy=request.proxy, host=request.key)
        info = describe(first_certificate(chain), folder.now)
        chains[request.key] = dict(chain=chain.decode(), spiffe_id=info.spiffe_id, serial=info.serial,
                                   not_after=info.not_after.isoformat(), intermediate=request.site, proxy=request.proxy)
    return chains


def main():
    module = AnsibleModule(
        argument_spec=dict(
            ca_dir=dict(type="path", required=True),
            mesh=dict(type="list", elements="path", required=True),
            csrs=dict(type="dict", required=True),
            intermediate=dict(type="str", default="default"),
            vault_password_file=dict(type="path", no_log=False, fallback=(env_fallback, ["ANSIBLE_VAULT_PASSWORD_FILE"])),  # a path, not the secret
            plan=dict(type="dict"),
            lock_timeout=dict(type="float", default=300.0),
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
    # It only reads the CA (check mode for the folder: nothing is ever made, not even a missing folder).
    folder = CaFolder(module.params["ca_dir"], check_mode=True, vault=vault)
    try:
        mesh = load_mesh(module.params["mesh"]) if wanted else None
        with folder.locked(module.params["lock_timeout"]):
            chains = sign_all(module, folder, mesh, wanted)
            bundle = folder.bundle().decode()
    except (CaError, UnknownProxy) as error:
        module.fail_json(msg=str(error))
    except RenderError as error:
        module.fail_json(msg=str(error), problems=[str(problem) for problem in error.problems])
    module.exit_json(changed=False, chains=chains, bundle=bundle)


if __name__ == "__main__":
    main()
