"""The mesh config's files as a copy of them lays them out (the control plane's served folder)."""

from __future__ import annotations

import os

MESH_FILE_SUFFIXES = (".yaml", ".yml")


def mesh_config_files(paths: list[str]) -> list[dict[str, str]]:
    """{src, dest} of every mesh config file under paths, in a stable order: a folder's YAML
    files keep their place below it (dest relative to it), a file given alone goes to the
    top (dest its name). Hidden files and folders are left out, as the loader leaves them."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            top = path.rstrip("/")
            for folder, dirs, names in os.walk(top):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    if name.endswith(MESH_FILE_SUFFIXES) and not name.startswith("."):
                        src = os.path.join(folder, name)
                        files.append({"src": src, "dest": os.path.relpath(src, top)})
        else:
            files.append({"src": path, "dest": os.path.basename(path)})
    return files
