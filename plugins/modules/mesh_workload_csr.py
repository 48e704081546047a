#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copied from modules/mesh_workload_csr.py by tools/sync_collection.py: edit the source, then run it.
# meshwright: a proxy's private key and CSR, made on its host.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_workload_csr
short_description: Make a proxy's private key on its host and return a CSR for its SPIFFE ID when it needs a certificate
description:
  - Looks at the certificate installed in O(certs_dir) and decides whether the proxy needs a new one - none yet,
    not for the installed key, for another identity, not issued by O(issuer), not chaining to O(bundle), or past
    two thirds of its life (Istio's renewal point). With O(renew=always) it always does.
  - When it does, it returns a CSR (PEM) for O(spiffe_id), signed by the proxy's key. The private key is made on
    this host (ECDSA P-256) and never leaves it - only the CSR travels to the controller (M(meshwright.mesh.mesh_workload_sign)).
  - The installed key is reused unless O(new_key) is set or there is none. A new key waits in
    C(<certs_dir>/..pending/key.pem) (C(0600)) until M(meshwright.mesh.mesh_workload_cert) installs it with its certificate, so Envoy
    keeps using the current pair until then.
  - Runs on the host; needs the standard library and python3-cryptography (Debian's 38 is enough).
requirements:
  - cryptography >= 38 on the host (Debian and Ubuntu - python3-cryptography)
options:
  certs_dir:
    description: The proxy's certificates folder (what M(meshwright.mesh.mesh_render) returns as C(identity.certs_dir)).
    type: path
    required: true
  spiffe_id:
    description: The identity to ask for, C(spiffe://<trust domain>/ns/<namespace>/sa/<service account>).
    type: str
    required: true
  issuer:
    description: PEM of the intermediate CA that should have issued the installed certificate; another issuer means renew.
    type: str
  bundle:
    description: PEM trust bundle; a certificate that chains to none of its roots means renew.
    type: str
  renew:
    description: V(due) asks only when needed (see above); V(always) asks every time (forced rotation).
    type: str
    choices: [due, always]
    default: due
  new_key:
    description: Make a new key for the request instead of reusing the installed one (key rotation).
    type: bool
    default: false
  lock_timeout:
    description:
      - One run at a time in the folder - the module holds an exclusive lock on C(.meshwright.lock) in it (the
        holder writes its pid, host and command there; check mode only waits for a writer and changes nothing).
        A second run waits up to this many seconds, then fails naming the holder.
    type: float
    default: 300
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details: Decides the same; a key it would make is made in memory only, so the CSR is still returned.
  diff_mode:
    support: none
  platform:
    platforms: posix
author:
  - meshwright maintainers (@meshwright)
"""

EXAMPLES = r"""
- name: Make a CSR when this proxy's certificate is due
  meshwright.mesh.mesh_workload_csr:
    certs_dir: /etc/meshwright/certs
    spiffe_id: spiffe://cluster.local/ns/default/sa/payment-service
    issuer: "{{ mesh_ca_state.intermediates['eu-west'].certificate }}"
    bundle: "{{ mesh_ca_state.bundle }}"
  register: proxy_csr

- name: Rotate - a new key and certificate whatever the state
  meshwright.mesh.mesh_workload_csr:
    certs_dir: /etc/meshwright/certs
    spiffe_id: spiffe://cluster.local/ns/default/sa/payment-service
    renew: always
    new_key: true
  register: proxy_csr
"""

RETURN = r"""
csr:
  description: The CSR (PEM) when the proxy needs a certificate, else null.
  returned: always
  type: str
reason:
  description: Why it needs one, or null.
  returned: always
  type: str
  sample: past two thirds of its life (expires 2026-12-26T09:00:00+00:00)
new_key:
  description: Whether a new private key was made (in check mode, would be).
  returned: always
  type: bool
public_key_sha256:
  description: SHA-256 (hex) of the DER public key the CSR is for - the key this host holds; M(meshwright.mesh.mesh_workload_sign)
    refuses a CSR whose key is not this one.
  returned: when a CSR is returned
  type: str
"""

import datetime

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.meshwright.mesh.plugins.module_utils.mesh_cryptography import fail_without_cryptography
from ansible_collections.meshwright.mesh.plugins.module_utils.mesh_folder_lock import DEFAULT_TIMEOUT

from ansible_collections.meshwright.mesh.plugins.module_utils.mesh_workload_identity import CertsDir, in_locked_certs_dir
from ansible_collections.meshwright.mesh.plugins.module_utils.mesh_pki_csr import CRYPTOGRAPHY_IMPORT_ERROR, key_pem_public_sha256, make_csr


def main():
    module = AnsibleModule(
        argument_spec=dict(
            certs_dir=dict(type="path", required=True),
            spiffe_id=dict(type="str", required=True),
            issuer=dict(type="str"),
            bundle=dict(type="str"),
            renew=dict(type="str", choices=["due", "always"], default="due"),
            new_key=dict(type="bool", default=False),
            lock_timeout=dict(type="float", default=DEFAULT_TIMEOUT),
        ),
        supports_check_mode=True,
    )
    if CRYPTOGRAPHY_IMPORT_ERROR:  # no python3-cryptography on the host
        fail_without_cryptography(module, CRYPTOGRAPHY_IMPORT_ERROR)
    in_locked_certs_dir(module, request)


def request(module):
    params = module.params
    if not params["spiffe_id"].startswith("spiffe://"):
        module.fail_json(msg=f"spiffe_id must be a SPIFFE ID (spiffe://...), not {params['spiffe_id']!r}")
    certs = CertsDir(params["certs_dir"])
    now = datetime.datetime.now(datetime.timezone.utc)
    try:
        reason = certs.renewal_reason(params["spiffe_id"], params["issuer"], params["bundle"], now)
    except ValueError as error:
        module.fail_json(msg=f"cannot read the certificates in {certs.path}: {error}")
    if reason is None and params["renew"] == "always":
        reason = "renewal forced"
    if reason is None:
        module.exit_json(changed=False, csr=None, reason=None, new_key=False)
    try:
        key, made = certs.key_for_request(params["new_key"], module.check_mode)
    except OSError as error:
        module.fail_json(msg=f"cannot write the new key in {certs.path}: {error}")
    module.exit_json(changed=made, csr=make_csr(key, params["spiffe_id"]).decode(), reason=reason, new_key=made,
                     public_key_sha256=key_pem_public_sha256(key))


if __name__ == "__main__":
    main()
