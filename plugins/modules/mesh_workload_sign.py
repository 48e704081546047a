#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copied from modules/mesh_workload_sign.py by tools/sync_collection.py: edit the source, then run it.
# meshwright (documentation only: the action plugin plugins/action/mesh_workload_sign.py does the work):
# sign proxies' CSRs with the mesh CA, on the controller (a pipe module).

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_workload_sign
short_description: Sign proxies' CSRs with the mesh CA, each only for its own SPIFFE ID
description:
  - A pipe module, like C(x509_certificate_pipe) - CSRs in, certificate chains out; it writes nothing, and reports a
    change when it issues certificates (the hosts get new ones). M(meshwright.mesh.mesh_workload_cert) installs each chain on its host.
  - The identity a proxy may have comes from the mesh config, never from the request - the namespace and service
    account of its WorkloadEntry (or, for a standalone gateway, its Gateway). A CSR asking for any other SPIFFE ID,
    or not signed by its own key, or not ECDSA P-256, fails the task with the reason and signs nothing.
  - With O(plan) (what M(meshwright.mesh.mesh_render) returns as C(identities) when given the inventory's hosts), O(csrs) are keyed
    by inventory host name, and each host is signed only for the proxy and site the plan gives it. A host missing
    from the plan, claiming another proxy or site than the plan's, or sending a CSR for another SPIFFE ID or one
    not signed by its own key is refused, with the host named - whatever facts the host returned.
  - The lifetime is the MeshConfig's C(certificates.workloadCertTtl) (30 days by default), never past the
    intermediate's or the root's expiry; an expired intermediate or root signs nothing (renew it with M(meshwright.mesh.mesh_ca)).
  - Site names must be DNS-1123 labels (a site is a folder of the CA).
  - Holds a shared lock on the CA folder while it reads the CA - it waits while M(meshwright.mesh.mesh_ca) writes, not for other
    readers, and changes nothing (see M(meshwright.mesh.mesh_ca)'s O(meshwright.mesh.mesh_ca#module:lock_timeout)).
  - "An action plugin: it runs in the controller's Ansible process, with the Python that runs ansible-playbook
    (which must have the C(meshwright) package) - no C(delegate_to), no interpreter setting. Use C(run_once: true)."
requirements:
  - meshwright (on the controller)
options:
  ca_dir:
    description: The mesh CA's folder (M(meshwright.mesh.mesh_ca)'s O(meshwright.mesh.mesh_ca#module:path)).
    type: path
    required: true
  mesh:
    description: Mesh config files or folders, as for M(meshwright.mesh.mesh_render).
    type: list
    elements: path
    required: true
  csrs:
    description:
      - Without O(plan) - proxy ID (C(name.namespace)) to its CSR, either the PEM text (signed by O(intermediate))
        or C({csr, intermediate}) to name the site's intermediate per proxy.
      - With O(plan) - inventory host name to its CSR, the PEM text or C({csr, proxy, intermediate}) where
        C(proxy) and C(intermediate) are what the host claims (each must equal the plan's).
      - An entry may carry C(public_key_sha256), M(meshwright.mesh.mesh_workload_csr)'s digest of the key the host holds - a CSR
        for another key is refused.
    type: dict
    required: true
  plan:
    description:
      - Inventory host name to C({proxy, site, spiffe_id}), built on the controller from the inventory and the
        mesh before any host ran a task (M(meshwright.mesh.mesh_render)'s C(identities), registered). The SPIFFE ID must still be
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
- name: Sign the CSRs of every proxy of the batch that made one
  meshwright.mesh.mesh_workload_sign:
    ca_dir: /srv/meshwright/ca
    mesh: ["{{ mesh_config_dir }}"]
    csrs: "{{ dict(ansible_play_hosts | map('extract', hostvars, 'mesh_proxy')
             | zip(ansible_play_hosts | map('extract', hostvars, ['proxy_csr', 'csr']))) }}"
    intermediate: eu-west
  run_once: true
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
