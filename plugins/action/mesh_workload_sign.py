# -*- coding: utf-8 -*-
"""meshwright.mesh.mesh_workload_sign: sign proxies' CSRs with the mesh CA, in the controller's
Ansible process (documentation: plugins/modules/mesh_workload_sign.py). Issuing certificates is
a change (changed=true), though nothing is written on the controller."""

from __future__ import annotations

from ansible_collections.meshwright.mesh.plugins.plugin_utils.controller_action import ControllerAction, ControllerTask

try:
    from ansible_collections.meshwright.mesh.plugins.plugin_utils.ansible_vault import task_vault
    from meshwright.deliver.bundle import load_mesh
    from meshwright.deliver.identity import check_request, planned_requests, proxy_requests, sign_proxy_csr
    from meshwright.pki.ca_folder import CaError, CaFolder, check_site
    from meshwright.pki.info import describe, first_certificate
    from meshwright.pki.workload import CsrRefused
except ImportError:
    pass  # ControllerAction names the missing package


def requests(task: ControllerTask) -> list:
    """The requests to sign: keyed by inventory host against the plan when there is one."""
    try:
        if task.params["plan"] is not None:
            return planned_requests(task.params["csrs"], task.params["plan"])
        return proxy_requests(task.params["csrs"], task.params["intermediate"])
    except CsrRefused as error:
        task.fail(str(error), host=getattr(error, "host", None))


def sign_all(task: ControllerTask, folder, mesh, wanted: list) -> dict:
    """Request key -> its chain and summary; fails naming the first request refused."""
    chains = {}
    for request in wanted:
        try:
            check_site(request.site)
        except CaError as error:
            task.fail(f"refused to sign the CSR of {request.who}: {error}", proxy=request.proxy, host=request.key)
        issuer = folder.intermediate(request.site)  # CaError (no such site, no key, expired...) as it is
        try:
            check_request(mesh, request)
            chain = sign_proxy_csr(mesh, request.proxy, request.csr.encode(), issuer, folder.now)
        except CsrRefused as error:
            task.fail(f"refused to sign the CSR of {request.who}: {error}", proxy=request.proxy, host=request.key)
        info = describe(first_certificate(chain), folder.now)
        chains[request.key] = dict(chain=chain.decode(), spiffe_id=info.spiffe_id, serial=info.serial,
                                   not_after=info.not_after.isoformat(), intermediate=request.site, proxy=request.proxy)
    return chains


class ActionModule(ControllerAction):
    WHAT = "to sign with the mesh CA on the controller"
    ARGUMENT_SPEC = dict(
        ca_dir=dict(type="path", required=True),
        mesh=dict(type="list", elements="path", required=True),
        csrs=dict(type="dict", required=True),
        intermediate=dict(type="str", default="default"),
        vault_password_file=dict(type="path", no_log=False),  # a path, not the secret
        plan=dict(type="dict"),
        lock_timeout=dict(type="float", default=300.0),
    )

    def work(self, task, task_vars):
        wanted = requests(task)
        vault = task_vault(task.params["vault_password_file"], self._loader)
        # It only reads the CA (check mode for the folder: nothing is ever made, not even a missing folder).
        folder = CaFolder(task.params["ca_dir"], check_mode=True, vault=vault)
        mesh = load_mesh(task.params["mesh"]) if wanted else None
        with folder.locked(task.params["lock_timeout"]):
            chains = sign_all(task, folder, mesh, wanted)
            bundle = folder.bundle().decode()
        # New certificates are a change for the hosts they are for, though none is written here.
        return dict(changed=bool(chains), chains=chains, bundle=bundle)
