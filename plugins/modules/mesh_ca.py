#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copied from modules/mesh_ca.py by tools/sync_collection.py: edit the source, then run it.
# meshwright (documentation only: the action plugin plugins/action/mesh_ca.py does the work):
# the mesh CA on the controller (root, one intermediate per site, rotations).

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_ca
short_description: Keep the mesh CA (a root and one intermediate per site) in a folder on the controller
description:
  - Makes the mesh's root CA and one intermediate CA per site (cluster, data centre) under O(path), as Istio's
    plug-in CA layout does; workload certificates are signed by the intermediates (M(meshwright.mesh.mesh_workload_sign)).
  - Keys are ECDSA P-256, written C(0600) in C(0700) folders, and never returned or printed; the module returns
    certificate summaries and the trust bundle (public).
  - With O(vault_password_file), every key is stored encrypted as C(ansible-vault encrypt) writes it (format 1.1,
    AES256) and decrypted in memory only; keys found in plaintext are encrypted in place (reported as changed
    once). A password that does not open a key is an error naming the file, before anything is written.
  - Existing material is handled by O(regenerate), careful by default - a root is never replaced by accident.
  - Whatever O(regenerate) says, an intermediate is renewed (new key, signed by the root) once it is past two thirds
    of its life, expired, or not limited to the trust domain by a URI name constraint (C(spiffe://<trust domain>)
    only); its workloads then renew their certificates. A root past two thirds of its life is a warning.
  - Each root or intermediate is written into a new folder renamed into place - an interruption leaves the old key
    and certificate or the new ones, never a mix. One run at a time - see O(lock_timeout).
  - O(rotate) runs one step of a rotation. Each step can be run again after an interruption; rotate_certs.yml
    runs them in order with the proxies' certificates in between.
  - "An action plugin: it runs in the controller's Ansible process, with the Python that runs ansible-playbook
    (which must have the C(meshwright) package) - no C(delegate_to), no interpreter setting. Use C(run_once: true)."
requirements:
  - meshwright (on the controller)
options:
  path:
    description: The CA folder on the controller (created C(0700)).
    type: path
    required: true
  state:
    description:
      - V(present) keeps the CA as the other options say.
      - V(absent) removes the folder O(path) whole, keys and all (C(playbooks/uninstall.yml) with
        C(mesh_ca_remove_on_uninstall)), once no other run holds its lock. A folder holding anything the mesh CA does
        not make is an error, and nothing is removed. The other options are not used then.
    type: str
    choices: [present, absent]
    default: present
  trust_domain:
    description: The mesh's trust domain (the MeshConfig's C(trustDomain)); the root's organization.
    type: str
    default: cluster.local
  intermediates:
    description:
      - Sites that need an intermediate CA (made when missing). Each is a DNS-1123 label (it names the
        intermediate's folder); anything else, such as C(../root), is refused before anything is read or written.
    type: list
    elements: str
    default: []
  regenerate:
    description:
      - What to do with a root or intermediate that exists already.
      - V(never) keeps it as it is (a warning says when it does not match, for example an expired one); an
        intermediate that the current root did not issue is an error even so.
      - V(fail) fails when it does not match the options (trust domain, site name, expiry, issuer).
      - V(partial_idempotence) replaces it when it does not match.
      - V(always) replaces it on every run (not idempotent; every proxy then needs new certificates).
      - The same policy decides whether O(import) may replace a different root or intermediate.
    type: str
    choices: [never, fail, partial_idempotence, always]
    default: never
  import:
    description:
      - Existing CA material to take, from files on the controller; the same material again changes nothing.
      - Without the root's key the CA can only sign with imported intermediates.
    type: dict
    suboptions:
      root:
        description: The root CA.
        type: dict
        suboptions:
          certificate: {description: PEM certificate file., type: path, required: true}
          private_key: {description: PEM private key file (unencrypted); may be left out., type: path}
      intermediates:
        description: Site name to C({certificate, private_key}) files of an intermediate issued by the root.
        type: dict
  rotate:
    description:
      - V(none) only makes what is missing.
      - V(intermediates) makes a new intermediate for every site in O(intermediates) (its workloads then renew).
      - V(root_begin) makes the next root; the trust bundle holds both roots from then on.
      - V(root_switch) makes the next root the root (the old one stays in the bundle) and reissues every
        intermediate from it.
      - V(root_finish) drops the old root from the bundle (once every proxy holds a chain from the new root).
    type: str
    choices: [none, intermediates, root_begin, root_switch, root_finish]
    default: none
  hosts_trust:
    description:
      - Inventory host name to the trust bundle (PEM) its proxy has installed already, read from the hosts before
        anything changes (the mesh_ca role reads them).
      - When a host trusts none of the roots this CA holds (root, next or previous root), the CA folder looks lost
        or is another mesh's, and the module fails naming the hosts before anything is written, rather than make a
        new root and move the proxies to it one by one (breaking mTLS between them mid-run), unless O(new_root).
    type: dict
  new_root:
    description: Go on although hosts trust roots this CA does not hold (a new root on purpose, see O(hosts_trust)).
    type: bool
    default: false
  lock_timeout:
    description:
      - One run at a time in the CA folder - the module holds an exclusive lock (C(.meshwright.lock) in O(path),
        which names the holder - pid, host, command). A second run waits up to this many seconds, then fails
        naming the holder. Check mode takes a shared lock instead - it waits for a writer and changes nothing.
    type: float
    default: 300
extends_documentation_fragment:
  - action_common_attributes
  - meshwright.mesh.vault
attributes:
  check_mode:
    support: full
    details: The same decisions, with nothing written; the result shows what would be.
  diff_mode:
    support: full
    details: Subjects, serials and expiry of the roots and intermediates before and after; never keys.
  platform:
    platforms: posix
author:
  - meshwright maintainers (@meshwright)
"""

EXAMPLES = r"""
- name: Make the mesh CA (once; later runs change nothing)
  meshwright.mesh.mesh_ca:
    path: /srv/meshwright/ca
    trust_domain: cluster.local
    intermediates: [eu-west, us-east]
  run_once: true
  register: mesh_ca_state

- name: Take the company's root and the site intermediate it issued
  meshwright.mesh.mesh_ca:
    path: /srv/meshwright/ca
    import:
      root: {certificate: /secure/root-cert.pem}
      intermediates:
        eu-west: {certificate: /secure/eu-west-cert.pem, private_key: /secure/eu-west-key.pem}
  run_once: true

- name: Keep the CA's keys encrypted with ansible-vault (plaintext keys are encrypted on this run)
  meshwright.mesh.mesh_ca:
    path: /srv/meshwright/ca
    intermediates: [eu-west, us-east]
    vault_password_file: /secure/mesh-ca-vault-password
  run_once: true

- name: Begin a root rotation (every trust bundle then holds the old and the new root)
  meshwright.mesh.mesh_ca:
    path: /srv/meshwright/ca
    rotate: root_begin
  run_once: true

- name: Remove the mesh CA from the controller (uninstall; its keys are gone for good)
  meshwright.mesh.mesh_ca:
    path: /srv/meshwright/ca
    state: absent
  run_once: true
"""

RETURN = r"""
root:
  description: The root CA (subject, issuer, serial, fingerprint, not_before, not_after, certificate PEM).
  returned: success and O(state=present)
  type: dict
next_root:
  description: The next root during a root rotation (between V(root_begin) and V(root_switch)), else null.
  returned: success and O(state=present)
  type: dict
previous_root:
  description: The old root after V(root_switch), until V(root_finish), else null.
  returned: success and O(state=present)
  type: dict
intermediates:
  description: Site name to its intermediate's summary (as RV(root)).
  returned: success and O(state=present)
  type: dict
bundle:
  description: The trust bundle every proxy gets (PEM, each root once, oldest first).
  returned: success and O(state=present)
  type: str
rotation:
  description: C(none), C(root_begun) or C(root_switched).
  returned: success and O(state=present)
  type: str
actions:
  description: What was done (or would be, in check mode), in order.
  returned: O(state=present)
  type: list
  elements: str
  sample: ["encrypt the key of root with ansible-vault", "make intermediate CA 'local'"]
removed:
  description: With O(state=absent), the files the folder held (relative to O(path)) - removed, or to be removed in check mode; empty when there was no folder.
  returned: O(state=absent)
  type: list
  elements: str
  sample: [".meshwright.lock", "intermediates/local/cert.pem", "intermediates/local/key.pem", "root/cert.pem", "root/key.pem"]
"""
