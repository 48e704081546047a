#!/usr/bin/python
# -*- coding: utf-8 -*-
# meshwright: create, update or delete a Marathon app or pod, and see its deployment through.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_marathon_app
short_description: Create, update or delete a Marathon app or pod and wait for its deployment
description:
  - Puts an app or pod definition (as written, or as C(meshwright marathon-inject) prints it) into Marathon
    when Marathon's differs, and waits until the deployment has finished and every instance runs and passes
    its health checks.
  - Idempotent by meaning. Only the fields the definition gives are compared with what Marathon holds
    (Marathon's defaults and its own fields such as C(version) and C(tasks) are ignored; a service port of
    V(0) matches the one Marathon assigned).
  - A deployment that does not finish healthy within O(wait_timeout) is rolled back to the definition
    Marathon held before (O(rollback)), and the task fails naming the app.
  - An app locked by another deployment (HTTP 409) is waited for (O(on_locked=wait)) or fails at once.
  - Talks to Marathon's REST API; runs wherever Marathon is reachable (usually the controller); needs only
    the Python standard library.
options:
  marathon_url:
    description: Marathon's URL; several for the instances of an HA Marathon (the first that answers is used).
    type: list
    elements: str
    required: true
  marathon_user:
    description: User for Marathon's HTTP basic auth.
    type: str
  marathon_password:
    description: Password for Marathon's HTTP basic auth.
    type: str
  marathon_token:
    description: A token, sent in the C(Authorization) header as C(token=...) (DC/OS); instead of user and password.
    type: str
  definition:
    description: The app or pod definition (a pod has C(containers)); its C(id) names it.
    type: dict
    required: true
  state:
    description: V(present) creates or updates it, V(absent) deletes it.
    type: str
    choices: [present, absent]
    default: present
  force:
    description: Send C(force=true), overriding a deployment that holds the app.
    type: bool
    default: false
  on_locked:
    description: When the app is locked by another deployment (HTTP 409), V(wait) for it to end and try again,
      or V(fail) at once.
    type: str
    choices: [wait, fail]
    default: wait
  wait:
    description: Wait for the deployment to finish and every instance to be healthy.
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait for a deployment (and for a lock to clear).
    type: float
    default: 600
  rollback:
    description: When the deployment does not finish healthy, put the previous definition back (and fail).
    type: bool
    default: true
extends_documentation_fragment:
  - action_common_attributes
  - meshwright.mesh.attributes
attributes:
  check_mode:
    support: full
    details: Compares and reports what it would change; sends nothing.
  diff_mode:
    support: full
    details: The definition Marathon holds (without its own fields) and the one given.
author:
  - meshwright maintainers (@meshwright)
"""

EXAMPLES = r"""
- name: Inject the sidecar into the payment app
  ansible.builtin.command:
    cmd: meshwright marathon-inject -f apps/payment.json --xds cp.example.com:15012 --csr cp.example.com:15016
  register: injected
  changed_when: false

- name: Deploy it, waiting for every instance to be healthy; roll back if they are not
  meshwright.mesh.mesh_marathon_app:
    marathon_url: [http://marathon-1:8080, http://marathon-2:8080]
    marathon_user: mesh
    marathon_password: "{{ vault_marathon_password }}"
    definition: "{{ injected.stdout | from_json }}"
    wait_timeout: 300

- name: Remove an app
  meshwright.mesh.mesh_marathon_app:
    marathon_url: [http://marathon-1:8080]
    definition: {id: /shop/legacy-cart}
    state: absent
"""

RETURN = r"""
id:
  description: The app's or pod's id.
  returned: always
  type: str
  sample: /shop/payment
kind:
  description: V(app) or V(pod).
  returned: always
  type: str
  sample: pod
deployment_id:
  description: The deployment Marathon started; null when nothing changed or in check mode.
  returned: always
  type: str
  sample: 5ed4c0c5-9ff8-4a6f-a0cd-f57f59a34b43
diff:
  description: The definition Marathon held (without its own fields) and the one wanted; null for none.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.mesh_marathon import Marathon, MarathonError, RunSpecs, ensure


def main():
    module = AnsibleModule(
        argument_spec=dict(
            marathon_url=dict(type="list", elements="str", required=True),
            marathon_user=dict(type="str"),
            marathon_password=dict(type="str", no_log=True),
            marathon_token=dict(type="str", no_log=True),
            definition=dict(type="dict", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            force=dict(type="bool", default=False),
            on_locked=dict(type="str", choices=["wait", "fail"], default="wait"),
            wait=dict(type="bool", default=True),
            wait_timeout=dict(type="float", default=600),
            rollback=dict(type="bool", default=True),
        ),
        mutually_exclusive=[("marathon_token", "marathon_user")],
        required_together=[("marathon_user", "marathon_password")],
        supports_check_mode=True,
    )
    params = module.params
    marathon = Marathon(params["marathon_url"], params["marathon_user"], params["marathon_password"], params["marathon_token"])
    specs = RunSpecs(marathon, params["wait_timeout"], params["on_locked"])
    try:
        result = ensure(specs, params["definition"], params["state"], params["force"], params["wait"], params["rollback"], module.check_mode)
    except MarathonError as error:
        module.fail_json(msg=str(error), id=params["definition"].get("id"))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
