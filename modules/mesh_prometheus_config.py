#!/usr/bin/python
# -*- coding: utf-8 -*-
# meshwright (documentation only: the action plugin plugins/action/mesh_prometheus_config.py does the work):
# Prometheus' configuration and scrape targets for the mesh, made on the controller.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_prometheus_config
short_description: Make Prometheus' configuration and scrape targets for the mesh, on the controller
description:
  - Validates the mesh config in O(mesh) and makes what a Prometheus needs to scrape it - C(prometheus.yml) (whose
    scrape turns Envoy's labelled stats into Istio's standard metrics) and C(targets/meshwright-proxies.json) (one
    target group per proxy with metrics, read by file-based service discovery, so proxies can come and go without
    a reload). The same texts as C(meshwright prometheus) writes.
  - Returns the texts; a task such as M(ansible.builtin.copy) puts them on the monitoring host. Never changed.
  - "An action plugin: it runs in the controller's Ansible process, with the Python that runs ansible-playbook
    (which must have the C(meshwright) package) - no C(delegate_to), no interpreter setting."
requirements:
  - meshwright (on the controller)
options:
  mesh:
    description: The mesh config's files and folders on the controller.
    type: list
    elements: path
    required: true
  scrape_interval:
    description: How often each proxy is scraped (a Prometheus duration).
    type: str
    default: 15s
  addresses:
    description: Proxy (C(name.namespace)) to the host its stats port is reached at, where the mesh does not say.
    type: dict
    default: {}
  envoy_stats:
    description: Also keep all of Envoy's own stats (a second job; many more series).
    type: bool
    default: false
  extra_targets:
    description: Other C(HOST:PORT) /metrics endpoints to scrape, such as the control plane.
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - action_common_attributes
  - meshwright.mesh.attributes
  - meshwright.mesh.attributes.info_module
author:
  - meshwright maintainers (@meshwright)
"""

EXAMPLES = r"""
- name: Make Prometheus' configuration from the mesh
  meshwright.mesh.mesh_prometheus_config:
    mesh: "{{ mesh_config_paths }}"
    scrape_interval: 15s
  register: prometheus_config

- name: Write its scrape targets
  ansible.builtin.copy:
    content: "{{ prometheus_config.files['targets/meshwright-proxies.json'] }}"
    dest: /etc/meshwright/prometheus/targets/meshwright-proxies.json
    mode: "0644"
"""

RETURN = r"""
files:
  description: The files' texts by path relative to Prometheus' configuration folder.
  returned: success
  type: dict
  sample: {"prometheus.yml": "global: ...", "targets/meshwright-proxies.json": "[...]"}
proxies:
  description: How many proxies are scraped.
  returned: success
  type: int
unaddressed:
  description: Proxies not scraped because their address is neither in the mesh nor in O(addresses).
  returned: success
  type: list
  elements: str
"""
