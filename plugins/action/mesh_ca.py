# -*- coding: utf-8 -*-
"""meshwright.mesh.mesh_ca: keep the mesh CA (root, one intermediate per site) on the controller,
in the controller's Ansible process, its keys encrypted by Ansible's own vault when the run has
vault secrets (documentation: plugins/modules/mesh_ca.py)."""

from __future__ import annotations

from ansible_collections.meshwright.mesh.plugins.plugin_utils.controller_action import ControllerAction, ControllerTask

try:
    from ansible_collections.meshwright.mesh.plugins.plugin_utils.ansible_vault import task_vault
    from meshwright.pki.ca_folder import REGENERATE, CaFolder, check_site, remove_ca_folder
except ImportError:
    REGENERATE = ("never", "fail", "partial_idempotence", "always")  # ControllerAction names the missing package


def _read(task: ControllerTask, path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        task.fail(f"cannot read {path}: {error}")


def import_material(task: ControllerTask, folder, changes: list) -> None:
    material = task.params["import"] or {}
    regenerate = task.params["regenerate"]
    root = material.get("root")
    if root:
        key = _read(task, root["private_key"]) if root.get("private_key") else None
        changes.append(folder.import_root(_read(task, root["certificate"]), key, regenerate))
    for name, files in sorted((material.get("intermediates") or {}).items()):
        if not isinstance(files, dict) or not files.get("certificate") or not files.get("private_key"):
            task.fail(f"import.intermediates.{name} needs certificate and private_key (file paths)")
        changes.append(folder.import_intermediate(name, _read(task, files["certificate"]), _read(task, files["private_key"]), regenerate))


def apply(task: ControllerTask, folder) -> list:
    params = task.params
    rotate, names = params["rotate"], params["intermediates"]
    folder.check_hosts_trust({str(host): str(bundle).encode() for host, bundle in (params["hosts_trust"] or {}).items()}, params["new_root"])
    changes = [folder.encrypt_keys()]
    import_material(task, folder, changes)
    # A root switch goes first: an interrupted one leaves no root until it is resumed.
    if rotate == "root_switch":
        changes.append(folder.switch_root(names, params["trust_domain"]))
    changes.append(folder.ensure(params["trust_domain"], names, params["regenerate"]))
    if rotate == "intermediates":
        changes.append(folder.rotate_intermediates(names, params["trust_domain"]))
    elif rotate == "root_begin":
        changes.append(folder.begin_root_rotation(params["trust_domain"]))
    elif rotate == "root_finish":
        changes.append(folder.finish_root_rotation())
    return changes


def diff_view(report: dict) -> dict:
    """The report without PEM: who, which serial, until when."""
    def brief(entry):
        return None if entry is None else {key: entry[key] for key in ("subject", "serial", "not_after")}
    return {
        "root": brief(report["root"]), "next_root": brief(report["next_root"]), "previous_root": brief(report["previous_root"]),
        "intermediates": {name: brief(entry) for name, entry in report["intermediates"].items()},
    }


def remove(task: ControllerTask) -> dict:
    """state=absent: the CA folder removed whole (uninstall), only when it holds nothing but the CA's own."""
    path = task.params["path"]
    removed = remove_ca_folder(path, check_mode=task.check_mode, timeout=task.params["lock_timeout"])
    result = dict(changed=removed is not None, path=path, removed=removed or [])
    if task.diff:
        result["diff"] = {"before": {"path": path, "files": removed or []} if removed is not None else {},
                          "after": {}}
    return result


class ActionModule(ControllerAction):
    WHAT = "to keep the mesh CA on the controller"
    ARGUMENT_SPEC = dict(
        path=dict(type="path", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        trust_domain=dict(type="str", default="cluster.local"),
        intermediates=dict(type="list", elements="str", default=[]),
        regenerate=dict(type="str", choices=list(REGENERATE), default="never"),
        rotate=dict(type="str", choices=["none", "intermediates", "root_begin", "root_switch", "root_finish"], default="none"),
        vault_password_file=dict(type="path", no_log=False),  # a path, not the secret
        lock_timeout=dict(type="float", default=300.0),
        hosts_trust=dict(type="dict"),
        new_root=dict(type="bool", default=False),
        **{"import": dict(type="dict", options=dict(
            root=dict(type="dict", options=dict(certificate=dict(type="path", required=True), private_key=dict(type="path"))),
            intermediates=dict(type="dict"),
        ))},
    )

    def work(self, task, task_vars):
        params = task.params
        if params["state"] == "absent":
            return remove(task)
        # Site names are folders of the CA: checked before the folder is even locked.
        for name in params["intermediates"] + sorted(((params["import"] or {}).get("intermediates") or {})):
            check_site(name)
        vault = task_vault(params["vault_password_file"], self._loader)
        # Reading every certificate and key first: a key the password does not open fails here, before any write.
        folder = CaFolder(params["path"], check_mode=task.check_mode, vault=vault)
        with folder.locked(params["lock_timeout"]):
            before = CaFolder(params["path"], vault=vault).report()
            changes = apply(task, folder)
            report = folder.report()
        for change in changes:
            for warning in change.warnings:
                task.warn(warning)
        actions = [action for change in changes for action in change.actions]
        result = dict(changed=bool(actions), actions=actions, **report)
        if task.diff:
            result["diff"] = {"before": diff_view(before), "after": diff_view(report)}
        return result
