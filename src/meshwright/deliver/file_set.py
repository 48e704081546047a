"""Write a proxy's file set into its config directory, atomically, changing only what differs.

Standard library only: this same file is shipped to proxy hosts as Ansible module_utils
(module_utils/mesh_file_set.py links here), so the CLI and the deploy write files one way.
"""

from __future__ import annotations

import os
import re
import tempfile

# The files a render owns in a config directory; anything else there is left alone.
MANAGED = re.compile(r"^(bootstrap|lds|cds|rds-.+|eds-.+|sds-.+)\.(yaml|json)$")


def _write_order(name: str) -> int:
    """Referenced files first: secrets, endpoints and routes, then clusters, listeners, bootstrap."""
    for rank, prefix in enumerate(("sds-", "eds-", "rds-", "cds.", "lds.", "bootstrap.")):
        if name.startswith(prefix):
            return rank
    return 6


def write_atomic(path: str, content: str, mode: int = 0o644) -> None:
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_files(out_dir: str, files: dict[str, str]) -> list[str]:
    """Write changed files atomically (referenced files first), then remove managed files no
    longer rendered. Returns the names that changed (written or removed)."""
    os.makedirs(out_dir, exist_ok=True)
    to_write, to_remove = plan_files(out_dir, files)
    for name in sorted(to_write, key=lambda n: (_write_order(n), n)):
        write_atomic(os.path.join(out_dir, name), files[name])
    for name in to_remove:
        os.unlink(os.path.join(out_dir, name))
    return sorted(to_write + to_remove)


def plan_files(out_dir: str, files: dict[str, str]) -> tuple[list[str], list[str]]:
    """(names to write because they differ or are missing, managed names to remove)."""
    to_write = []
    for name in sorted(files):
        try:
            with open(os.path.join(out_dir, name), encoding="utf-8") as handle:
                if handle.read() == files[name]:
                    continue
        except (FileNotFoundError, NotADirectoryError):
            pass
        to_write.append(name)
    existing = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
    return to_write, [name for name in existing if MANAGED.match(name) and name not in files]
