# Copied from module_utils/mesh_service_manager.py by tools/sync_collection.py: edit the source, then run it.
"""Which service manager runs a service on this host: systemd where PID 1 is systemd, else this
host's own supervisord (mesh_service, and the envoy_proxy role's fast path, mesh_proxy_drift).

Standard library only: shipped to hosts as Ansible module_utils.
"""

from __future__ import annotations

import os
import shutil
import sys

from ansible_collections.meshwright.mesh.plugins.module_utils.mesh_supervisor import SupervisorProgram
from ansible_collections.meshwright.mesh.plugins.module_utils.mesh_systemd import SystemdUnit, systemd_usable


class ServiceManagerError(Exception):
    """The arguments do not name a usable manager (the message says why)."""

    def __init__(self, message: str, manager: str):
        self.manager = manager
        super().__init__(message)


def service_manager(spec, manager: str, enabled: bool | None, supervisor_dir: str | None, supervisord: str | None):
    """The SystemdUnit or SupervisorProgram for spec; `auto` picks systemd when the host runs it.
    supervisord defaults to the one beside the Python that runs this, else the one on PATH."""
    if manager == "auto":
        manager = "systemd" if systemd_usable() else "supervisord"
    if manager == "systemd":
        return SystemdUnit(spec, enabled)
    if not supervisor_dir:
        raise ServiceManagerError("supervisor_dir is required when supervisord manages the service (this host has no systemd)", manager)
    if any(char.isspace() for char in supervisor_dir):
        raise ServiceManagerError("supervisor_dir cannot hold spaces (supervisord's include list is space-separated)", manager)
    supervisord = supervisord or os.path.join(os.path.dirname(sys.executable), "supervisord")
    if not os.access(supervisord, os.X_OK):
        supervisord = shutil.which("supervisord") or supervisord
    return SupervisorProgram(spec, supervisor_dir, supervisord)
