#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copied from modules/mesh_upgrade_plan.py by tools/sync_collection.py: edit the source, then run it.
# meshwright (documentation only: the action plugin plugins/action/mesh_upgrade_plan.py does the work):
# cut an Envoy upgrade of the estate into batches, on the controller.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_upgrade_plan
short_description: Plan an Envoy upgrade of the estate - a canary, then site by site in batches
description:
  - Checks that meshwright supports the target Envoy O(version) (the release lines its compiled config is made
    and tested for) and fails with the supported range otherwise, before any host is touched.
  - Cuts the proxies to upgrade into batches - a canary batch from the first site, then each site of O(sites)
    in order, in batches of O(serial). Proxies that already run O(version) are left out, so a run that stopped
    can be run again and goes on where it stopped.
  - A pipe module - content in, content out; never changed. The work is C(meshwright.lifecycle.upgrade_plan).
  - "An action plugin: it runs in the controller's Ansible process, with the Python that runs ansible-playbook
    (which must have the C(meshwright) package) - no C(delegate_to), no interpreter setting. Use C(run_once: true)."
requirements:
  - meshwright (on the controller)
options:
  version:
    description: The target Envoy version, for example C(1.40.0).
    type: str
    required: true
  sites:
    description: The sites in upgrade order - names of inventory groups.
    type: list
    elements: str
    required: true
  groups:
    description: Inventory group name to its hosts in inventory order (Ansible's C(groups)).
    type: dict
    required: true
  hosts:
    description: Every host whose proxy is upgraded; each must be in one of O(sites).
    type: list
    elements: str
    required: true
  running:
    description: Host to the Envoy version its proxy runs now (null when unknown).
    type: dict
    default: {}
  canary:
    description: Proxies upgraded alone first, from the first site - a count (V(1)) or a share of all proxies to
      upgrade (V(10%), rounded up); V(0) for no canary.
    type: raw
    default: 1
  serial:
    description: Batch size within a site - a count or a share of the site's proxies (V(25%), rounded up).
    type: raw
    default: 25%
extends_documentation_fragment:
  - action_common_attributes
  - meshwright.mesh.attributes
  - meshwright.mesh.attributes.info_module
author:
  - meshwright maintainers (@meshwright)
"""

EXAMPLES = r"""
- name: Plan the upgrade (refuses an unsupported version before anything is touched)
  meshwright.mesh.mesh_upgrade_plan:
    version: "{{ envoy_version }}"
    sites: [eu_west, us_east]
    groups: "{{ groups }}"
    hosts: "{{ ansible_play_hosts_all }}"
    canary: "10%"
    serial: 5
  run_once: true
  register: upgrade_plan
"""

RETURN = r"""
version:
  description: The target version.
  returned: success
  type: str
  sample: "1.40.0"
batches:
  description: The batches in order, each with C(name), C(site) and C(hosts).
  returned: success
  type: list
  elements: dict
  sample: [{"name": "canary", "site": "eu", "hosts": ["eu-1"]}, {"name": "eu 1/2", "site": "eu", "hosts": ["eu-2", "eu-3"]}]
hosts:
  description: Every host to upgrade, in batch order.
  returned: success
  type: list
  elements: str
up_to_date:
  description: Hosts left out because their proxy already runs the target version.
  returned: success
  type: list
  elements: str
"""
