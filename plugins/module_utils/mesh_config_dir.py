# Copied from module_utils/mesh_config_dir.py by tools/sync_collection.py: edit the source, then run it.
"""A proxy's config folder on its host: what a new file set would change, and the diff of it.

Standard library only: shipped to proxy hosts as Ansible module_utils. The writing itself is
mesh_file_set's (the same code the CLI writes with).
"""

from __future__ import annotations

import os

from ansible_collections.meshwright.mesh.plugins.module_utils.mesh_file_set import plan_files, write_files


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return ""


class ConfigDir:
    def __init__(self, path: str, files: dict):
        self.path = path
        self.files = files
        self.to_write, self.to_remove = plan_files(path, files)

    @property
    def changed(self) -> bool:
        return bool(self.to_write or self.to_remove)

    def diffs(self) -> list:
        """One before/after per changed file, named by its path (removed files go to empty)."""
        out = []
        for name in sorted(self.to_write + self.to_remove):
            path = os.path.join(self.path, name)
            exists = os.path.exists(path)
            out.append({
                "before_header": path if exists else "/dev/null",
                "after_header": path if name in self.files else "/dev/null",
                "before": _read(path),
                "after": self.files.get(name, ""),
            })
        return out

    def write(self) -> None:
        write_files(self.path, self.files)
