# -*- coding: utf-8 -*-
"""meshwright.mesh.mesh_upgrade_plan: cut an Envoy upgrade into batches, in the controller's
Ansible process (documentation: plugins/modules/mesh_upgrade_plan.py)."""

from __future__ import annotations

from ansible_collections.meshwright.mesh.plugins.plugin_utils.controller_action import ControllerAction

try:
    from meshwright.lifecycle.upgrade_plan import plan_upgrade
except ImportError:
    pass  # ControllerAction names the missing package


class ActionModule(ControllerAction):
    WHAT = "to plan the upgrade on the controller"
    ARGUMENT_SPEC = dict(
        version=dict(type="str", required=True),
        sites=dict(type="list", elements="str", required=True),
        groups=dict(type="dict", required=True),
        hosts=dict(type="list", elements="str", required=True),
        running=dict(type="dict", default={}),
        canary=dict(type="raw", default=1),
        serial=dict(type="raw", default="25%"),
    )

    def work(self, task, task_vars):
        params = task.params
        unknown = [site for site in params["sites"] if site not in params["groups"]]
        if unknown:
            task.fail(f"upgrade_sites names {', '.join(unknown)}, which the inventory has no group of "
                      f"(groups: {', '.join(sorted(params['groups']))})")
        sites = [(site, [str(host) for host in params["groups"][site]]) for site in params["sites"]]
        plan = plan_upgrade(params["version"], sites, params["hosts"], params["running"], params["canary"], params["serial"])
        return dict(changed=False, **plan.as_dict())
