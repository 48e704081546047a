# Copied from module_utils/mesh_cryptography.py by tools/sync_collection.py: edit the source, then run it.
"""Host modules that need python3-cryptography (certificates, keys, CSRs): their imports of it
are guarded as community.crypto guards them, so that a host without it gets Ansible's
missing-library message instead of a traceback. Standard library and Ansible only."""

from __future__ import annotations

import traceback

from ansible.module_utils.basic import missing_required_lib


def cryptography_import_traceback(error: ImportError) -> str:
    """The traceback of a failed import of cryptography; any other import error is a bug and is raised."""
    if (error.name or "").split(".")[0] != "cryptography":
        raise error
    return traceback.format_exc()


def fail_without_cryptography(module, import_traceback: str) -> None:
    """Fail the module with Ansible's missing-library message (cryptography did not import)."""
    module.fail_json(msg=missing_required_lib("cryptography (Debian and Ubuntu: python3-cryptography)"),
                     exception=import_traceback)
