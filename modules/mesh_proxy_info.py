#!/usr/bin/python
# -*- coding: utf-8 -*-
# meshwright: read a running proxy's state from its Envoy admin interface.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_proxy_info
short_description: Read a running proxy's readiness, version, cluster health, rejected updates and request success
description:
  - Reads the Envoy admin interface of a proxy on the host (C(/ready), C(/server_info),
    C(/clusters?format=json), C(/stats)) and returns what a health gate needs.
  - With O(window), it also counts the requests the proxy completes over that many seconds, and the 5xx among
    them (its C(downstream_rq_completed) and C(downstream_rq_5xx) stats), for an upgrade's health gate.
  - After a hot restart the new Envoy takes the admin port over from the old one; O(wait_version) and
    O(wait_restart_epoch) wait until the Envoy that answers is the new one.
  - Read-only; it never changes anything. When nothing answers, it returns RV(ready=false) rather than failing,
    so that a play can decide (C(assert), C(until)).
  - Runs on the host; needs only the Python standard library.
options:
  admin_port:
    description: The proxy's admin port (15000 plus the proxy's port offset).
    type: int
    required: true
  wait_timeout:
    description: Seconds to wait for the proxy to become ready; V(0) reads once without waiting.
    type: float
    default: 0
  wait_version:
    description: With O(wait_timeout), also wait until the Envoy that answers runs this version (and is C(LIVE)).
    type: str
  wait_restart_epoch:
    description: With O(wait_timeout), also wait until the Envoy that answers has at least this restart epoch.
    type: int
  window:
    description: Seconds over which to count requests and failed (5xx) requests; V(0) counts none.
    type: float
    default: 0
extends_documentation_fragment:
  - action_common_attributes
  - meshwright.mesh.attributes
  - meshwright.mesh.attributes.info_module
  - meshwright.mesh.envoy_admin
author:
  - meshwright maintainers (@meshwright)
"""

EXAMPLES = r"""
- name: Read the proxy's state, waiting up to 30 s for it to be ready
  meshwright.mesh.mesh_proxy_info:
    admin_port: "{{ mesh_rendered.proxies[mesh_proxy].ports.admin }}"
    wait_timeout: 30
  register: proxy_info

- name: Gate the batch on a ready proxy whose clusters all have a healthy endpoint
  ansible.builtin.assert:
    that:
      - proxy_info.ready
      - proxy_info.unhealthy | length == 0
      - proxy_info.rejected_updates == 0

- name: After a hot restart to 1.40.0, wait for the new Envoy and watch its requests for 10 s
  meshwright.mesh.mesh_proxy_info:
    admin_port: "{{ mesh_rendered.proxies[mesh_proxy].ports.admin }}"
    wait_timeout: 60
    wait_version: "1.40.0"
    window: 10
  register: proxy_info
"""

RETURN = r"""
ready:
  description: Whether the admin C(/ready) endpoint says C(LIVE).
  returned: always
  type: bool
  sample: true
version:
  description: The Envoy version from C(/server_info), or null when nothing answers.
  returned: always
  type: str
  sample: "1.40.0"
restart_epoch:
  description: The hot restart epoch of the Envoy that answers (0 for a fresh start), or null when nothing answers.
  returned: always
  type: int
  sample: 1
hot_restart_version:
  description: The running Envoy's hot restart version (only Envoys with equal ones can hot restart into each other), or null.
  returned: always
  type: str
  sample: "11.104"
state:
  description: The server state from C(/server_info) (C(LIVE), C(DRAINING), C(PRE_INITIALIZING), C(INITIALIZING)), or null.
  returned: always
  type: str
  sample: LIVE
uptime:
  description: Seconds since this Envoy process started, or null when nothing answers.
  returned: always
  type: int
  sample: 42
clusters:
  description: Per cluster, how many of its endpoints are healthy and how many it has.
  returned: always
  type: dict
  sample: {"outbound|9080||reviews.default.svc.cluster.local": {"healthy": 2, "total": 2}}
unhealthy:
  description: Names of clusters that have endpoints but none of them healthy.
  returned: always
  type: list
  elements: str
  sample: []
rejected_updates:
  description: Config updates Envoy rejected since it started (sum of the C(*.update_rejected) stats), or null.
  returned: always
  type: int
  sample: 0
requests:
  description:
    - With O(window), the requests completed in the window (C(total)), the 5xx among them (C(failed)) and
      C(success_rate) (1 - failed/total; null when no request came). Null without a window.
  returned: always
  type: dict
  sample: {"seconds": 10, "total": 480, "failed": 0, "success_rate": 1.0}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.mesh_envoy_admin import EnvoyAdmin, proxy_info


def main():
    module = AnsibleModule(
        argument_spec=dict(
            admin_port=dict(type="int", required=True),
            admin_address=dict(type="str", default="127.0.0.1"),
            wait_timeout=dict(type="float", default=0),
            wait_version=dict(type="str"),
            wait_restart_epoch=dict(type="int"),
            window=dict(type="float", default=0),
        ),
        supports_check_mode=True,
    )
    admin = EnvoyAdmin(module.params["admin_address"], module.params["admin_port"])
    try:
        info = proxy_info(admin, module.params["wait_timeout"], module.params["wait_version"],
                          module.params["wait_restart_epoch"], module.params["window"])
    except (OSError, ValueError) as error:
        module.fail_json(msg=f"cannot read the Envoy admin interface at {admin.base}: {error}")
    module.exit_json(changed=False, **info)


if __name__ == "__main__":
    main()
