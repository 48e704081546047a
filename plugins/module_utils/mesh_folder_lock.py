# Copied from module_utils/mesh_folder_lock.py by tools/sync_collection.py: edit the source, then run it.
"""One run at a time in a folder: the mesh CA's folder on the controller, a proxy's config and
certs folders on its host. Two deploys or rotations at once could otherwise make two roots or
interleave a proxy's files.

An exclusive `flock` on `.meshwright.lock` inside the folder, waited for up to a timeout; the
holder writes who it is (pid, host, command) into the file, so the one that waits too long
says whom it waited for. The kernel drops the lock when its holder dies: a killed run never
leaves a stale lock behind.

Standard library only: host modules ship this very file (module_utils/mesh_folder_lock.py).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import sys
import time

LOCK_FILE = ".meshwright.lock"
DEFAULT_TIMEOUT = 300.0
_POLL = 0.1


class FolderLocked(Exception):
    """Another run held the folder's lock for longer than the timeout (or it cannot be taken)."""


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode("utf-8", "replace").strip()
    return text or "unknown (it wrote nothing)"


def _describe_self() -> str:
    command = " ".join(sys.argv)[:300]
    return f"pid {os.getpid()} on {socket.gethostname()}: {command}"


def _acquire(fd: int, path: str, timeout: float, mode: int) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        if time.monotonic() >= deadline:
            raise FolderLocked(f"{os.path.dirname(path)} is locked by another meshwright run ({_holder(fd)}); waited {timeout:g} s. "
                               f"Let it finish and run again (the lock, {path}, is released when its holder exits)")
        time.sleep(_POLL)


@contextlib.contextmanager
def folder_lock(folder: str, timeout: float = DEFAULT_TIMEOUT, create_mode: int = 0o700):
    """Hold the folder's lock for the block (the folder is made, create_mode, if missing)."""
    path = os.path.join(folder, LOCK_FILE)
    try:
        os.makedirs(folder, mode=create_mode, exist_ok=True)
        # Never through a symbolic link: the lock file is written to.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise FolderLocked(f"cannot take the lock {path}: {error.strerror or error}") from None
    try:
        _acquire(fd, path, timeout, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, _describe_self().encode() + b"\n", 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextlib.contextmanager
def folder_read_lock(folder: str, timeout: float = DEFAULT_TIMEOUT):
    """For a run that only reads (check mode, signing): wait while a writer holds the folder,
    share it with other readers, and change nothing - no folder or lock file is made, and the
    holder's note is left as it is. Nothing to wait for when there is no lock file."""
    path = os.path.join(folder, LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        yield None
        return
    except OSError as error:
        raise FolderLocked(f"cannot take the lock {path}: {error.strerror or error}") from None
    try:
        _acquire(fd, path, timeout, fcntl.LOCK_SH)
        yield path
    finally:
        os.close(fd)
