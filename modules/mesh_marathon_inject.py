#!/usr/bin/python
# -*- coding: utf-8 -*-
# meshwright (documentation only: the action plugin plugins/action/mesh_marathon_inject.py does the work):
# a Marathon app or pod definition with the mesh's sidecar, made on the controller.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_marathon_inject
short_description: Put the mesh's sidecar into a Marathon app or pod definition, on the controller
description:
  - Returns the definition as C(meshwright marathon-inject) prints it - an app becomes a pod, a pod gains the
    C(meshwright-sidecar) container that runs C(meshwright marathon-sidecar) (its certificate from the control
    plane, Envoy on xDS) - for M(meshwright.mesh.mesh_marathon_app) to deploy.
  - Idempotent; a definition already injected with this O(sidecar_version) comes back unchanged, one with another
    version gets the new sidecar (a new sidecar rolls out as a Marathon deployment). Labels
    C(meshwright.io/inject=false) or C(meshwright.io/mesh=false) leave a definition as it is.
  - Runs in the controller's Ansible process (an action plugin); changes nothing anywhere.
options:
  definition:
    description: The app or pod definition (JSON as a dict).
    type: dict
    required: true
  xds:
    description: C(HOST:PORT) of the control plane's xDS port, as the Mesos agents reach it.
    type: str
    required: true
  csr:
    description: C(HOST:PORT) of its CSR service (mTLS); the first join goes to the port after it.
    type: str
    required: true
  ca:
    description: Path of the mesh's roots on the agents (the sidecar trusts the control plane with them).
    type: str
    default: /etc/meshwright/root-cert.pem
  trust_domain:
    description: The mesh's trust domain (the identity the sidecar asks for; the control plane checks it).
    type: str
    default: cluster.local
  sidecar_image:
    description: A Docker image holding meshwright and Envoy; without it both must be installed on the agents.
    type: str
  sidecar_version:
    description: The version label of the sidecar (C(meshwright.io/injected)); default meshwright's version.
    type: str
extends_documentation_fragment:
  - action_common_attributes
  - meshwright.mesh.attributes
  - meshwright.mesh.attributes.info_module
author:
  - meshwright maintainers (@meshwright)
"""

EXAMPLES = r"""
- name: Inject the sidecar into the payment app
  meshwright.mesh.mesh_marathon_inject:
    definition: "{{ lookup('ansible.builtin.file', 'apps/payment.json') | from_json }}"
    xds: control-plane.example.com:15012
    csr: control-plane.example.com:15016
  register: payment
- name: Deploy it
  meshwright.mesh.mesh_marathon_app:
    marathon_url: [http://marathon-1:8080]
    definition: "{{ payment.definition }}"
"""

RETURN = r"""
definition:
  description: The definition with the sidecar (unchanged when it opts out).
  returned: success
  type: dict
opted_out:
  description: Whether its labels keep it out of the mesh or out of injection.
  returned: success
  type: bool
"""
