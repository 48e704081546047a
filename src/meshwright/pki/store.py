"""A workload's certs directory, as Envoy reads it through SDS: key.pem, cert-chain.pem and
root-cert.pem (Istio's names), replaced all at once.

The files are links into a versioned directory that the link `..data` names (the layout
Kubernetes uses for secret volumes, and Envoy's documented way to rotate a key and its
certificate atomically): a new version is written in full into a new directory, then
`..data` is swapped by one rename. Envoy watches the certs directory, sees that rename and
reads a key and chain that belong together; replacing the files one by one would let it
read a new key with the old chain, reject the pair and, at times, miss the next change.

Private keys are created 0600 and never exist with wider permissions. Standard library only,
like csr.py, so the host-side module can ship this file as is.
"""

from __future__ import annotations

import hashlib
import os
import shutil

KEY_FILE, CHAIN_FILE, ROOTS_FILE = "key.pem", "cert-chain.pem", "root-cert.pem"
KEY_MODE, CERTIFICATE_MODE = 0o600, 0o644
DATA_LINK = "..data"
VERSION_PREFIX = "..v-"


def _create(path: str, content: bytes, mode: int, owner: tuple[int, int] | None = None) -> None:
    """A new file with exactly this mode and owner (O_EXCL: never an existing file), synced to disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        if owner is not None:
            os.fchown(fd, *owner)  # before the content: the key is never readable by another user
        os.fchmod(fd, mode)  # the umask may have narrowed it
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_link(path: str, target: str) -> None:
    """Point the link at path to target, by rename (a reader sees the old or the new link)."""
    if os.path.islink(path) and os.readlink(path) == target:
        return
    temporary = path + ".tmp"
    if os.path.lexists(temporary):
        os.unlink(temporary)
    os.symlink(target, temporary)
    os.replace(temporary, path)


def current_version(certs_dir: str) -> str:
    """The versioned directory `..data` names ("" before the first write)."""
    link = os.path.join(certs_dir, DATA_LINK)
    return os.readlink(link) if os.path.islink(link) else ""


def owned_by(path: str, owner: tuple[int, int] | None) -> bool:
    """Whether path belongs to owner (uid, gid); None: any owner will do."""
    if owner is None:
        return True
    status = os.stat(path)
    return (status.st_uid, status.st_gid) == owner


def write_workload_certificates(certs_dir: str, key_pem: bytes, chain_pem: bytes, roots_pem: bytes,
                                owner: tuple[int, int] | None = None) -> bool:
    """Make key.pem, cert-chain.pem and root-cert.pem these contents, all in one step, owned by
    owner (uid, gid; None: the writing user), the proxy's user that reads them.
    Returns False when they already were (nothing is touched then)."""
    contents = {KEY_FILE: (key_pem, KEY_MODE), CHAIN_FILE: (chain_pem, CERTIFICATE_MODE), ROOTS_FILE: (roots_pem, CERTIFICATE_MODE)}
    digest = hashlib.sha256(b"\0".join(content for content, mode in contents.values())).hexdigest()[:16]
    version = VERSION_PREFIX + digest
    os.makedirs(certs_dir, mode=0o755, exist_ok=True)
    links_ok = all(os.path.islink(os.path.join(certs_dir, name))
                   and os.readlink(os.path.join(certs_dir, name)) == os.path.join(DATA_LINK, name) for name in contents)
    if current_version(certs_dir) == version and links_ok:
        files = [os.path.join(certs_dir, version, name) for name in contents]
        if all(owned_by(path, owner) for path in files):
            return False
        for path in files:  # the same contents for another user: give them over in place
            os.chown(path, *owner)
        return True
    version_dir = os.path.join(certs_dir, version)
    if os.path.lexists(version_dir):
        shutil.rmtree(version_dir)  # an older write of the same contents, not current
    os.mkdir(version_dir, 0o755)
    for name, (content, mode) in contents.items():
        _create(os.path.join(version_dir, name), content, mode, owner)
    _replace_link(os.path.join(certs_dir, DATA_LINK), version)
    for name in contents:
        _replace_link(os.path.join(certs_dir, name), os.path.join(DATA_LINK, name))
    for entry in os.listdir(certs_dir):
        if entry.startswith(VERSION_PREFIX) and entry != version:
            shutil.rmtree(os.path.join(certs_dir, entry))
    return True
