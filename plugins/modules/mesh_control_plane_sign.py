#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copied from modules/mesh_control_plane_sign.py by tools/sync_collection.py: edit the source, then run it.
# meshwright (documentation only: the action plugin plugins/action/mesh_control_plane_sign.py does the work):
# the control plane's credentials from the mesh CA, on the controller (a pipe module).

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_control_plane_sign
short_description: Sign the control plane's serving certificate and hand out the intermediate its CSR service signs with
description:
  - A pipe module for the control_plane role, like C(x509_certificate_pipe) - it writes nothing on the controller.
  - With O(csr) (made on the control plane's host by M(meshwright.mesh.mesh_workload_csr), whose key never leaves it), it signs the
    control plane's serving certificate with the intermediate O(intermediate), for the control plane's SPIFFE ID
    C(spiffe://<trust domain>/ns/meshwright-system/sa/meshwright-control-plane) only (the one proxies' xDS bootstraps
    accept); a CSR for anything else is refused. Lifetime 30 days, never past the intermediate's expiry.
  - It always returns the intermediate's certificate chain and the trust bundle; with O(signing_key), the
    intermediate's private key too, for C(meshwright serve --signing-key) (the CSR service signs proxies'
    certificates with it). Use C(no_log) on that task. Only that intermediate leaves the controller - the root's key,
    and every site's intermediate that signs files-delivered proxies, stay in the CA folder.
  - Holds a shared lock on the CA folder while it reads it (see M(meshwright.mesh.mesh_ca)).
  - "An action plugin: it runs in the controller's Ansible process, with the Python that runs ansible-playbook
    (which must have the C(meshwright) package). Use C(run_once: true)."
requirements:
  - meshwright (on the controller)
options:
  ca_dir:
    description: The mesh CA's folder (M(meshwright.mesh.mesh_ca)'s O(meshwright.mesh.mesh_ca#module:path)).
    type: path
    required: true
  trust_domain:
    description: The mesh's trust domain.
    type: str
    required: true
  intermediate:
    description: The intermediate of the CA folder that signs the control plane's certificate and that it signs with.
    type: str
    default: control-plane
  csr:
    description: PEM CSR of the control plane's serving key; omitted, no certificate is signed.
    type: str
  signing_key:
    description: Return the intermediate's private key (RV(signing_key)).
    type: bool
    default: false
  lock_timeout:
    description: Seconds to wait for the CA folder's lock.
    type: float
    default: 300
extends_documentation_fragment:
  - action_common_attributes
  - meshwright.mesh.vault
attributes:
  check_mode:
    support: full
    details: Signs in check mode too; it writes nothing either way.
  diff_mode:
    support: none
  platform:
    platforms: posix
author:
  - meshwright maintainers (@meshwright)
"""

EXAMPLES = r"""
- name: Sign the control plane's serving certificate
  meshwright.mesh.mesh_control_plane_sign:
    ca_dir: /srv/mesh-ca
    trust_domain: cluster.local
    csr: "{{ control_plane_csr.csr }}"
  run_once: true
  register: control_plane_signed
"""

RETURN = r"""
spiffe_id:
  description: The control plane's SPIFFE ID.
  returned: success
  type: str
  sample: spiffe://cluster.local/ns/meshwright-system/sa/meshwright-control-plane
chain:
  description: The serving certificate, then the intermediate (PEM).
  returned: when O(csr) is given
  type: str
serial:
  description: Serial number of the serving certificate (hex).
  returned: when O(csr) is given
  type: str
not_after:
  description: When the serving certificate expires (ISO 8601).
  returned: when O(csr) is given
  type: str
signing_chain:
  description: The intermediate's certificate, then the root (PEM) - C(meshwright serve --signing-cert).
  returned: success
  type: str
signing_key:
  description: The intermediate's private key (PEM).
  returned: when O(signing_key) is true
  type: str
bundle:
  description: The trust bundle (the roots every proxy trusts now).
  returned: success
  type: str
"""
