#!/usr/bin/python
# -*- coding: utf-8 -*-
# meshwright: install a proxy's certificate chain and trust bundle with its key, on its host.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_workload_cert
short_description: Install a proxy's certificate chain and trust bundle beside its key, all in one step
description:
  - Writes C(key.pem) (C(0600)), C(cert-chain.pem) and C(root-cert.pem) into O(certs_dir) as one new version and
    swaps it in by one rename (the C(..data) link), so Envoy, which watches the folder through SDS, loads a key and
    chain that belong together and uses them for new connections, with no restart.
  - The key is the one the chain was issued for - the pending key M(meshwright.mesh.mesh_workload_csr) made, or the installed one.
    A chain for neither fails the task.
  - Without O(chain), the installed key and chain stay and only the trust bundle changes (root rotation).
  - Nothing is written when the folder already holds exactly this.
  - Runs on the host; needs the standard library and python3-cryptography.
requirements:
  - cryptography >= 38 on the host (Debian and Ubuntu - python3-cryptography)
options:
  certs_dir:
    description: The proxy's certificates folder.
    type: path
    required: true
  chain:
    description: The signed chain (PEM, leaf first), as M(meshwright.mesh.mesh_workload_sign) returns it.
    type: str
  bundle:
    description: The trust bundle (PEM roots).
    type: str
    required: true
  owner:
    description:
      - The user that owns the three files (Envoy's user, which must read the key); its primary group is their group.
        Files already in place for another owner are given over without being rewritten.
      - Default - the user the module runs as.
    type: str
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
  diff_mode:
    support: full
    details: Subject, SPIFFE ID, serial, issuer, expiry and the bundle's roots before and after; never the key.
  platform:
    platforms: posix
author:
  - meshwright maintainers (@meshwright)
"""

EXAMPLES = r"""
- name: Install the signed certificate
  meshwright.mesh.mesh_workload_cert:
    certs_dir: /etc/meshwright/certs
    chain: "{{ signed.chains[mesh_proxy].chain }}"
    bundle: "{{ signed.bundle }}"
    owner: meshwright-proxy

- name: Trust the next root too (root rotation, first step)
  meshwright.mesh.mesh_workload_cert:
    certs_dir: /etc/meshwright/certs
    bundle: "{{ mesh_ca_state.bundle }}"
"""

RETURN = r"""
certificate:
  description: The installed certificate after the task (subject, spiffe_id, serial, issuer, not_before, not_after,
    days_left, needs_renewal, bundle_fingerprint, roots); in check mode what it would be.
  returned: always
  type: dict
previous:
  description: The same for the certificate before the task (null when there was none).
  returned: always
  type: dict
"""

import datetime
import pwd

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.mesh_cryptography import fail_without_cryptography
from ansible.module_utils.mesh_folder_lock import DEFAULT_TIMEOUT

from ansible.module_utils.mesh_pki_csr import CRYPTOGRAPHY_IMPORT_ERROR
from ansible.module_utils.mesh_workload_identity import CertsDir, IdentityError, certificate_summary, in_locked_certs_dir


def main():
    module = AnsibleModule(
        argument_spec=dict(
            certs_dir=dict(type="path", required=True),
            chain=dict(type="str"),
            bundle=dict(type="str", required=True),
            owner=dict(type="str"),
            lock_timeout=dict(type="float", default=DEFAULT_TIMEOUT),
        ),
        supports_check_mode=True,
    )
    if CRYPTOGRAPHY_IMPORT_ERROR:  # no python3-cryptography on the host
        fail_without_cryptography(module, CRYPTOGRAPHY_IMPORT_ERROR)
    in_locked_certs_dir(module, install)


def install(module):
    certs = CertsDir(module.params["certs_dir"])
    now = datetime.datetime.now(datetime.timezone.utc)
    chain = module.params["chain"].encode() if module.params["chain"] else None
    bundle = module.params["bundle"].encode()
    owner = None
    if module.params["owner"]:
        try:
            account = pwd.getpwnam(module.params["owner"])
        except KeyError:
            module.fail_json(msg=f"owner {module.params['owner']!r} is not a user on this host (the proxy's user is made by the envoy_proxy role)")
        owner = (account.pw_uid, account.pw_gid)
    try:
        before = certs.summary(now)
        changed = certs.install(chain, bundle, module.check_mode, owner)
        after = certificate_summary(chain or certs.chain, bundle, now)
    except IdentityError as error:
        module.fail_json(msg=str(error))
    except (OSError, ValueError) as error:
        module.fail_json(msg=f"cannot install the certificates in {certs.path}: {error}")
    result = dict(changed=changed, certificate=after, previous=before)
    if module._diff:
        result["diff"] = {"before": before or {}, "after": after or {}, "before_header": certs.path, "after_header": certs.path}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
