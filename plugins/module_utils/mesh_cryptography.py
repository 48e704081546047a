# Copied from module_utils/mesh_cryptography.py by tools/sync_collection.py: edit the source, then run it.
"""Host modules that need python3-cryptography (certificates, keys, CSRs): the module_utils they
import guard it as community.crypto does (mesh_pki_csr's CRYPTOGRAPHY_IMPORT_ERROR), so that a
host without it gets Ansible's missing-library message instead of a traceback. Standard library and Ansible only."""

from __future__ import annotations

from ansible.module_utils.basic import missing_required_lib


def fail_without_cryptography(module, import_traceback: str) -> None:
    """Fail the module with Ansible's missing-library message (cryptography did not import)."""
    module.fail_json(msg=missing_required_lib("cryptography (Debian and Ubuntu: python3-cryptography)"),
                     exception=import_traceback)
