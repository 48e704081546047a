# -*- coding: utf-8 -*-
"""meshwright.mesh.mesh_marathon_inject: a Marathon app or pod definition with the mesh's sidecar,
made in the controller's Ansible process (documentation: plugins/modules/mesh_marathon_inject.py)."""

from __future__ import annotations

from ansible_collections.meshwright.mesh.plugins.plugin_utils.controller_action import ControllerAction

try:
    from meshwright import __version__ as meshwright_version
    from meshwright.deliver.marathon_inject import InjectError, SidecarSettings, inject, opted_out
except ImportError:
    pass  # ControllerAction names the missing package


class ActionModule(ControllerAction):
    WHAT = "to inject Marathon definitions on the controller"
    ARGUMENT_SPEC = dict(
        definition=dict(type="dict", required=True),
        xds=dict(type="str", required=True),
        csr=dict(type="str", required=True),
        ca=dict(type="str", default="/etc/meshwright/root-cert.pem"),
        trust_domain=dict(type="str", default="cluster.local"),
        sidecar_image=dict(type="str"),
        sidecar_version=dict(type="str"),
    )

    def work(self, task, task_vars):
        params = task.params
        settings = SidecarSettings(str(params["xds"]), str(params["csr"]), str(params["sidecar_image"]) if params["sidecar_image"] else None,
                                   version=str(params["sidecar_version"] or meshwright_version), ca=str(params["ca"]),
                                   trust_domain=str(params["trust_domain"]))
        definition = plain(params["definition"])
        try:
            injected = inject(definition, settings)
        except InjectError as error:
            task.fail(f"{definition.get('id', '?')}: {error}")
        return dict(changed=False, definition=injected, opted_out=opted_out(definition))


def plain(value):
    """The definition as plain JSON types (Ansible's strings carry tags)."""
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, str):
        return str(value)
    return value
