# -*- coding: utf-8 -*-
"""meshwright.mesh.mesh_prometheus_config: Prometheus' configuration and scrape targets for the
mesh, made in the controller's Ansible process (documentation: plugins/modules/mesh_prometheus_config.py)."""

from __future__ import annotations

from ansible_collections.meshwright.mesh.plugins.plugin_utils.controller_action import ControllerAction

try:
    from meshwright.compile.prometheus import prometheus_files, scrape_targets
    from meshwright.compile.proxy import list_proxies
    from meshwright.deliver.bundle import load_mesh
except ImportError:
    pass  # ControllerAction names the missing package


class ActionModule(ControllerAction):
    WHAT = "to make Prometheus' configuration on the controller"
    ARGUMENT_SPEC = dict(
        mesh=dict(type="list", elements="path", required=True),
        scrape_interval=dict(type="str", default="15s"),
        addresses=dict(type="dict", default={}),
        envoy_stats=dict(type="bool", default=False),
        extra_targets=dict(type="list", elements="str", default=[]),
    )

    def work(self, task, task_vars):
        params = task.params
        mesh = load_mesh([str(path) for path in params["mesh"]])
        addresses = {str(proxy): str(host) for proxy, host in params["addresses"].items()}
        known = {proxy.id for proxy in list_proxies(mesh)}
        # Plain str: Ansible's strings carry tags that the YAML writer cannot represent.
        files = prometheus_files(mesh, str(params["scrape_interval"]), bool(params["envoy_stats"]),
                                 tuple(str(target) for target in params["extra_targets"]), addresses)
        groups, unaddressed = scrape_targets(mesh, addresses)
        warnings = [f"addresses.{proxy}: no proxy of that name in the mesh; ignored" for proxy in sorted(set(addresses) - known)]
        warnings += [f"{proxy}: not scraped, its address is not in the mesh (give it in addresses)" for proxy in unaddressed]
        return dict(changed=False, files=files, proxies=len(groups), unaddressed=unaddressed, warnings=warnings)
