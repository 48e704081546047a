"""Write a proxy's file set into its config directory, atomically, changing only what differs.

Standard library only: this same file is shipped to proxy hosts as Ansible module_utils
(module_utils/mesh_file_set.py links here), so the CLI and the deploy write files one way.

A render owns only the files it wrote: their names are kept in a manifest in the directory
(MANIFEST), and a file no longer rendered is removed only when the manifest lists it. Anything
else in the directory (a user's notes, even one named like a config file) is left alone.
"""

from __future__ import annotations

import os
import tempfile

MANIFEST = ".meshwright-files"

# The order of the xDS protocol, so that a half-written set never names what does not exist
# yet: secrets and endpoints, then the clusters that use them, then the routes that name the
# clusters, then the listeners that name routes and secrets; the bootstrap (read only when
# Envoy starts) last.
WRITE_ORDER = ("sds-", "eds-", "cds.", "rds-", "lds.", "bootstrap.")


def _write_order(name: str) -> int:
    for rank, prefix in enumerate(WRITE_ORDER):
        if name.startswith(prefix):
            return rank
    return len(WRITE_ORDER)


def write_atomic(path: str, content: str, mode: int = 0o644, replace=None) -> None:
    """The one way meshwright replaces a file: a temporary file beside it, renamed over it, so a
    reader sees the old or the new content, never a part; the temporary file is removed when
    anything fails. replace(temporary, path) renames: os.replace when None, or in a host module
    Ansible's AnsibleModule.atomic_move (SELinux context; it gives a new file the umask's mode, set back here)."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        if replace is None:
            os.replace(tmp, path)
        else:
            replace(tmp, path)
            os.chmod(path, mode)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _is_plain_name(name: str) -> bool:
    return bool(name) and os.path.basename(name) == name and not name.startswith(".") and "\0" not in name


def read_manifest(out_dir: str) -> list[str]:
    """The names the last render wrote (a name that is not a plain file name is ignored, so an
    edited manifest cannot point outside the directory)."""
    try:
        with open(os.path.join(out_dir, MANIFEST), encoding="utf-8") as handle:
            names = handle.read().splitlines()
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
        return []
    return sorted({name for name in names if _is_plain_name(name)})


def _write_manifest(out_dir: str, names) -> None:
    """Written only when it changes: every rename in the directory wakes Envoy's watch."""
    names = sorted(names)
    if names != read_manifest(out_dir) or not os.path.exists(os.path.join(out_dir, MANIFEST)):
        write_atomic(os.path.join(out_dir, MANIFEST), "".join(f"{name}\n" for name in names))


def write_files(out_dir: str, files: dict[str, str]) -> list[str]:
    """Write changed files atomically (in WRITE_ORDER), then remove the files of the last
    render that are no longer rendered. Returns the names that changed (written or removed).

    The manifest lists every file written before it is written (old and new names while the
    set changes, the new names once it is done), so no file of ours is ever unlisted."""
    os.makedirs(out_dir, exist_ok=True)
    to_write, to_remove = plan_files(out_dir, files)
    _write_manifest(out_dir, set(files) | set(read_manifest(out_dir)))
    for name in sorted(to_write, key=lambda n: (_write_order(n), n)):
        write_atomic(os.path.join(out_dir, name), files[name])
    for name in to_remove:
        os.unlink(os.path.join(out_dir, name))
    _write_manifest(out_dir, files)
    return sorted(to_write + to_remove)


def plan_files(out_dir: str, files: dict[str, str]) -> tuple[list[str], list[str]]:
    """(names to write because they differ or are missing, names of the last render that are
    no longer rendered and still there, to remove)."""
    to_write = []
    for name in sorted(files):
        try:
            with open(os.path.join(out_dir, name), encoding="utf-8") as handle:
                if handle.read() == files[name]:
                    continue
        except (FileNotFoundError, NotADirectoryError):
            pass
        to_write.append(name)
    stale = [name for name in read_manifest(out_dir) if name not in files]
    return to_write, [name for name in stale if os.path.isfile(os.path.join(out_dir, name))]
