#!/usr/bin/python
# -*- coding: utf-8 -*-
# meshwright (documentation only: the action plugin plugins/action/mesh_cert_report.py does the work): the certificate report, written on the controller.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_cert_report
short_description: Write the proxies' certificate report on the controller, as JSON and as Prometheus metrics
description:
  - Writes M(meshwright.mesh.mesh_cert_info) results of every proxy on the controller - as JSON (O(json_path), proxy ID to
    its result) and as Prometheus metrics in the text format a node exporter's textfile collector reads
    (O(prom_path), the metrics M(meshwright.mesh.mesh_cert_metrics) writes on a host).
  - Only absolute times are written, so unchanged certificates give the same bytes and the files are left alone
    (changed=false). Each file is replaced by rename from a temporary file in the same folder; its folder is made
    when missing.
  - "An action plugin: it runs in the controller's Ansible process - no C(delegate_to). Use C(run_once: true)."
options:
  proxies:
    description:
      - Proxy ID to its M(meshwright.mesh.mesh_cert_info) result. Results without C(certificate) (a skipped task, for a
        proxy without identity) are kept in the JSON and left out of the metrics.
    type: dict
    required: true
  json_path:
    description: The JSON report to write on the controller.
    type: path
  prom_path:
    description: The Prometheus text file to write on the controller (its name should end in C(.prom)).
    type: path
  mode:
    description: The files' permissions (octal, as a string).
    type: str
    default: "0644"
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details: Says whether the files would change; writes nothing.
  diff_mode:
    support: full
    details: The files' text before and after (certificates are public; no secret is in it).
  platform:
    platforms: posix
author:
  - meshwright maintainers (@meshwright)
"""

EXAMPLES = r"""
- name: Write the report of every proxy on the controller
  meshwright.mesh.mesh_cert_report:
    proxies: "{{ dict(ansible_play_hosts | map('extract', hostvars, 'mesh_proxy') | zip(ansible_play_hosts | map('extract', hostvars, 'cert_info'))) }}"
    json_path: /srv/reports/certs.json
    prom_path: /var/lib/prometheus/node-exporter/meshwright-certs.prom
  run_once: true
"""

RETURN = r"""
paths:
  description: The files written (or that would be), JSON first.
  returned: success
  type: list
  elements: str
"""
