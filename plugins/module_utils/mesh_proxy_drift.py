# Copied from module_utils/mesh_proxy_drift.py by tools/sync_collection.py: edit the source, then run it.
"""What on a proxy's host differs from what the envoy_proxy role would make it: the role's fast
path (mesh_proxy_drift_info). Each check reads only and decides as the task it stands for does
(the same module_utils where there is one: mesh_config_dir, mesh_envoy_install, the service
managers' plan), so "no drift" means every one of those tasks would report no change.

Standard library only: shipped to hosts as Ansible module_utils (the identity check, which needs
python3-cryptography, is mesh_workload_identity's identity_drift).
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import shutil
import stat
import subprocess

from ansible_collections.meshwright.mesh.plugins.module_utils.mesh_config_dir import ConfigDir
from ansible_collections.meshwright.mesh.plugins.module_utils.mesh_envoy_binary import EnvoyBinaryError
from ansible_collections.meshwright.mesh.plugins.module_utils.mesh_envoy_install import EnvoyInstalls, InstallError, Source, ensure_envoy
from ansible_collections.meshwright.mesh.plugins.module_utils.mesh_service_control import ServiceSpec, wait_for_http
from ansible_collections.meshwright.mesh.plugins.module_utils.mesh_service_manager import ServiceManagerError, service_manager

CHUNK = 1 << 20


def missing_folders(folders: list) -> list[str]:
    """mesh_owned_folders makes a listed folder that is not there."""
    return [f"folder {path} is missing" for path in folders if not os.path.isdir(path)]


def user_drift(user: dict | None) -> list[str]:
    """The proxy's user and group as make_user.yml makes them (uid = gid, home, shell)."""
    if not user:
        return []
    name, uid = user["name"], int(user["uid"])
    try:
        account = pwd.getpwnam(name)
        group = grp.getgrnam(name)
    except KeyError:
        return [f"user or group {name} is missing"]
    if (account.pw_uid, account.pw_gid, group.gr_gid, account.pw_dir, account.pw_shell) != (uid, uid, uid, user["home"], user["shell"]):
        return [f"user {name} is not uid/gid {uid} with home {user['home']} and shell {user['shell']}"]
    return []


def _mode_drift(path: str, status: os.stat_result, mode: str | None) -> list[str]:
    if mode and stat.S_IMODE(status.st_mode) != int(mode, 8):
        return [f"{path} has mode {stat.S_IMODE(status.st_mode):04o}, not {mode}"]
    return []


def _owner_drift(path: str, status: os.stat_result, owner: str | None, group: str | None) -> list[str]:
    try:
        if owner and status.st_uid != pwd.getpwnam(owner).pw_uid:
            return [f"{path} is not owned by {owner}"]
        if group and status.st_gid != grp.getgrnam(group).gr_gid:
            return [f"{path} is not of group {group}"]
    except KeyError:
        return [f"{path}: user or group {owner or group} is missing"]
    return []


def directory_drift(directories: list) -> list[str]:
    """Folders as ansible.builtin.file (state directory) makes them: owner, group, mode."""
    out = []
    for wanted in directories:
        path = wanted["path"]
        try:
            status = os.stat(path)
        except OSError:
            out.append(f"folder {path} is missing")
            continue
        if not stat.S_ISDIR(status.st_mode):
            out.append(f"{path} is not a folder")
            continue
        out += _owner_drift(path, status, wanted.get("owner"), wanted.get("group")) + _mode_drift(path, status, wanted.get("mode"))
    return out


def sha1_of(path: str) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_drift(files: list) -> list[str]:
    """Files as ansible.builtin.copy and template write them: content (SHA-1, as they compare it)
    and mode. `sha1` empty: only that the file is there (a task with `creates`); `if_folder`:
    expected only while its folder exists (logrotate's)."""
    out = []
    for wanted in files:
        path = wanted["path"]
        if wanted.get("if_folder") and not os.path.isdir(os.path.dirname(path)):
            continue
        try:
            status = os.stat(path)
        except OSError:
            out.append(f"{path} is missing")
            continue
        if not stat.S_ISREG(status.st_mode):
            out.append(f"{path} is not a file")
        elif wanted.get("sha1") and sha1_of(path) != wanted["sha1"]:
            out.append(f"{path} differs from what is rendered")
        else:
            out += _mode_drift(path, status, wanted.get("mode"))
    return out


def envoy_drift(envoy: dict | None) -> list[str]:
    """mesh_envoy's decision, in check mode: this version installed from this source, `current` on it."""
    if not envoy:
        return []
    kind, version = envoy["source"], envoy["version"]
    source = Source(kind, envoy[kind], envoy.get("sha256")) if envoy.get(kind) else None
    installs = EnvoyInstalls(envoy["prefix"])
    # Decided without hashing a 100 MB binary where the answer is drift anyway (a first deploy,
    # a binary source changed since the install): mesh_envoy, on the full path, hashes it then.
    if installs.installed_sha256(version) is None:
        return [f"Envoy {version} is not installed"]
    if source and kind == "binary" and installs.recorded_source_sha256(version, source) is None:
        return [f"Envoy {version}: {source} changed since it was installed"]
    try:
        changed, dummy, dummy = ensure_envoy(installs, version, "present", source, check_mode=True)
    except (InstallError, EnvoyBinaryError, OSError) as error:
        return [f"Envoy {version}: {error}"]
    return [f"Envoy {version} is not installed from {source} or not current"] if changed else []


def config_drift(config: dict | None) -> list[str]:
    """mesh_proxy_config's decision: files whose bytes differ, files no longer rendered."""
    if not config:
        return []
    files = {str(name): str(content) for name, content in config["files"].items()}
    folder = ConfigDir(config["config_dir"], files)
    return [f"config file {name} differs" for name in folder.to_write] + [f"config file {name} is no longer rendered" for name in folder.to_remove]


def service_drift(service: dict | None) -> list[str]:
    """mesh_service's plan for `started` (unit or program file, running, enabled) and its ready URL."""
    if not service:
        return []
    spec = ServiceSpec(service["name"], tuple(service["command"]), service.get("user"), None, {}, None, service.get("log_file"))
    try:
        manager = service_manager(spec, service.get("manager") or "auto", None, service.get("supervisor_dir"), None)
        actions = manager.plan("started")
    except (ServiceManagerError, OSError) as error:
        return [f"service {spec.name}: {error}"]
    if actions:
        return [f"service {spec.name} needs: {', '.join(actions)}"]
    if service.get("ready_url") and not wait_for_http(service["ready_url"], 0)[0]:
        return [f"service {spec.name} does not answer 200 on {service['ready_url']}"]
    return []


def unit_drift(units: list) -> list[str]:
    """systemd units that must be active and enabled (ansible.builtin.systemd_service, started and enabled)."""
    systemctl = shutil.which("systemctl") if units else None
    out = []
    for unit in units:
        for question in ("is-active", "is-enabled"):
            if not systemctl or subprocess.run([systemctl, question, "--quiet", unit], check=False).returncode != 0:
                out.append(f"unit {unit} is not {question[3:]}")
    return out


def host_drift(wanted: dict) -> list[str]:
    """Everything that differs, in the order the role's phases would meet it."""
    return (missing_folders(wanted.get("folders") or []) + user_drift(wanted.get("user"))
            + directory_drift(wanted.get("directories") or []) + file_drift(wanted.get("files") or [])
            + envoy_drift(wanted.get("envoy")) + config_drift(wanted.get("config"))
            + service_drift(wanted.get("service")) + unit_drift(wanted.get("units") or []))
