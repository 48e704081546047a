#!/usr/bin/python
# -*- coding: utf-8 -*-
# meshwright (documentation only: the action plugin plugins/action/mesh_config_files.py does the work):
# list the mesh config's files on the controller, as a copy of them lays them out.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_config_files
short_description: List the mesh config's files on the controller, as a copy of them lays them out
description:
  - Lists the YAML files (C(*.yaml), C(*.yml)) of the mesh config given in O(paths), on the controller - what a
    copy of the mesh config on a host is made of (the control plane's watched folder).
  - A folder's files keep their place below it; a file given alone goes to the top. Hidden files and folders are
    left out. The order is stable (sorted), so a re-run copies the same files to the same places.
  - Never changed. The work is C(meshwright.lifecycle.mesh_files).
  - "An action plugin: it runs in the controller's Ansible process, with the Python that runs ansible-playbook
    (which must have the C(meshwright) package) - no C(delegate_to), no interpreter setting."
requirements:
  - meshwright (on the controller)
options:
  paths:
    description: The mesh config's files and folders on the controller.
    type: list
    elements: path
    required: true
extends_documentation_fragment:
  - action_common_attributes
  - meshwright.mesh.attributes
  - meshwright.mesh.attributes.info_module
author:
  - meshwright maintainers (@meshwright)
"""

EXAMPLES = r"""
- name: List the mesh config's files on the controller
  meshwright.mesh.mesh_config_files:
    paths: "{{ mesh_config_paths }}"
  register: mesh_files

- name: Copy them to the control plane's folder
  ansible.builtin.copy:
    src: "{{ item.src }}"
    dest: "/etc/meshwright/mesh/{{ item.dest }}"
    mode: "0644"
  loop: "{{ mesh_files.files }}"
"""

RETURN = r"""
files:
  description: Each file's path on the controller (C(src)) and its place in a copy (C(dest), relative).
  returned: success
  type: list
  elements: dict
  sample: [{"src": "/srv/mesh/shop/routes.yaml", "dest": "shop/routes.yaml"}, {"src": "/srv/extra.yaml", "dest": "extra.yaml"}]
"""
