# -*- coding: utf-8 -*-
"""meshwright.mesh.mesh_config_files: list the mesh config's files on the controller, in the
controller's Ansible process (documentation: plugins/modules/mesh_config_files.py)."""

from __future__ import annotations

import os

from ansible_collections.meshwright.mesh.plugins.plugin_utils.controller_action import ControllerAction

try:
    from meshwright.lifecycle.mesh_files import mesh_config_files
except ImportError:
    pass  # ControllerAction names the missing package


class ActionModule(ControllerAction):
    WHAT = "to list the mesh config's files on the controller"
    ARGUMENT_SPEC = dict(
        paths=dict(type="list", elements="path", required=True),
    )

    def work(self, task, task_vars):
        missing = [path for path in task.params["paths"] if not os.path.exists(path)]
        if missing:
            task.fail(f"no such file or folder on the controller: {', '.join(missing)}")
        return dict(changed=False, files=mesh_config_files(task.params["paths"]))
