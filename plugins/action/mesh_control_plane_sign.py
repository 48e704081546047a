# -*- coding: utf-8 -*-
"""meshwright.mesh.mesh_control_plane_sign: the control plane's credentials from the mesh CA, in
the controller's Ansible process (documentation: plugins/modules/mesh_control_plane_sign.py)."""

from __future__ import annotations

from ansible_collections.meshwright.mesh.plugins.plugin_utils.controller_action import ControllerAction, ControllerTask

try:
    from ansible_collections.meshwright.mesh.plugins.plugin_utils.ansible_vault import task_vault
    from meshwright.pki.ca_folder import CaFolder
    from meshwright.pki.info import describe, first_certificate
    from meshwright.pki.spiffe import control_plane_spiffe_id
    from meshwright.pki.workload import sign_csr
except ImportError:
    pass  # ControllerAction names the missing package


def serving_chain(task: ControllerTask, issuer, spiffe: str, now) -> dict:
    """The control plane's serving certificate for its CSR (made on its host), and its summary."""
    chain = sign_csr(task.params["csr"].encode(), spiffe, issuer, now=now)  # CsrRefused: the task fails with why
    info = describe(first_certificate(chain), now)
    return dict(chain=chain.decode(), serial=info.serial, not_after=info.not_after.isoformat())


class ActionModule(ControllerAction):
    WHAT = "to sign the control plane's certificate with the mesh CA on the controller"
    ARGUMENT_SPEC = dict(
        ca_dir=dict(type="path", required=True),
        trust_domain=dict(type="str", required=True),
        intermediate=dict(type="str", default="control-plane"),
        csr=dict(type="str"),
        signing_key=dict(type="bool", default=False),
        vault_password_file=dict(type="path", no_log=False),  # a path, not the secret
        lock_timeout=dict(type="float", default=300.0),
    )

    def work(self, task, task_vars):
        vault = task_vault(task.params["vault_password_file"], self._loader)
        folder = CaFolder(task.params["ca_dir"], check_mode=True, vault=vault)  # read only
        spiffe = control_plane_spiffe_id(task.params["trust_domain"])
        with folder.locked(task.params["lock_timeout"]):
            issuer = folder.intermediate(task.params["intermediate"])  # CaError (no such intermediate, expired...) as it is
            result = dict(changed=False, spiffe_id=spiffe, bundle=folder.bundle().decode(),
                          signing_chain=(issuer.certificate_pem() + issuer.parents_pem()).decode())
            if task.params["csr"]:
                result.update(serving_chain(task, issuer, spiffe, folder.now), changed=True)
            if task.params["signing_key"]:
                result["signing_key"] = issuer.key_pem().decode()
        return result
