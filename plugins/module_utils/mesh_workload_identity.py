# Copied from module_utils/mesh_workload_identity.py by tools/sync_collection.py: edit the source, then run it.
"""A proxy's identity on its host: its private key, the CSR for it, the certificates Envoy
reads (the certs directory of meshwright.pki.store) and what Envoy says it uses.

The key is made here and never leaves the host. A key made for a renewal waits in
`<certs dir>/..pending/key.pem` (0600) until its certificate comes back, so Envoy keeps
using the current key and chain until the new pair is swapped in all at once.

Standard library and the host's python3-cryptography only (the mesh_pki_* files are the
core's pki modules, shipped as they are).
"""

from __future__ import annotations

import datetime
import json
import os
import pwd
import shutil

from ansible_collections.meshwright.mesh.plugins.module_utils.mesh_folder_lock import FolderLocked, folder_lock, folder_read_lock
from ansible_collections.meshwright.mesh.plugins.module_utils.mesh_pki_csr import key_matches_certificate, make_private_key
from ansible_collections.meshwright.mesh.plugins.module_utils.mesh_pki_info import (
    bundle_fingerprint, certificates_in, describe, fingerprint, first_certificate, serial_hex)
from ansible_collections.meshwright.mesh.plugins.module_utils.mesh_pki_store import CHAIN_FILE, KEY_FILE, ROOTS_FILE, owned_by, write_workload_certificates

# Guarded as in mesh_pki_csr, whose CRYPTOGRAPHY_IMPORT_ERROR the modules using this file check first.
try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec
except ImportError:
    pass

PENDING_DIR = "..pending"


class IdentityError(Exception):
    """Something on the host does not fit (the message says what)."""


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _create_private(path: str, content: bytes) -> None:
    """A new file readable by its owner only, from the moment it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)


def issued_by(certificate, issuer) -> bool:
    """Whether issuer's key signed certificate (cryptography 38 has no verify_directly_issued_by)."""
    if certificate.issuer != issuer.subject:
        return False
    try:
        issuer.public_key().verify(certificate.signature, certificate.tbs_certificate_bytes, ec.ECDSA(certificate.signature_hash_algorithm))
    except (InvalidSignature, TypeError, ValueError):
        return False
    return True


class CertsDir:
    """The certs directory of one proxy, as it is now."""

    def __init__(self, path: str):
        self.path = path
        self.key = _read(os.path.join(path, KEY_FILE))
        self.chain = _read(os.path.join(path, CHAIN_FILE))
        self.roots = _read(os.path.join(path, ROOTS_FILE))
        self.pending_path = os.path.join(path, PENDING_DIR, KEY_FILE)
        self.pending_key = _read(self.pending_path)

    def leaf(self):
        return first_certificate(self.chain) if self.chain and self.chain.strip() else None

    def summary(self, now: datetime.datetime) -> dict | None:
        """Subject, SPIFFE ID, serial, issuer, validity of the installed certificate and the
        fingerprint of the trust bundle (never key material); None when nothing is installed."""
        return certificate_summary(self.chain, self.roots, now)

    def renewal_reason(self, spiffe_id: str, issuer_pem: str | None, bundle_pem: str | None, now: datetime.datetime) -> str | None:
        """Why this proxy needs a new certificate, or None while the one it has is good."""
        leaf = self.leaf()
        if leaf is None or not self.key:
            return "no certificate yet"
        if not key_matches_certificate(self.key, self.chain):
            return "the certificate is not for the installed key"
        info = describe(leaf, now)
        if info.spiffe_id != spiffe_id:
            return f"the certificate is for {info.spiffe_id or 'no SPIFFE ID'}, not {spiffe_id}"
        if issuer_pem and not issued_by(leaf, first_certificate(issuer_pem.encode())):
            return "the certificate was not issued by the current intermediate CA"
        if bundle_pem and not any(issued_by(certificates_in(self.chain)[-1], root) for root in certificates_in(bundle_pem.encode())):
            return "the certificate does not chain to a root of the trust bundle"
        if info.needs_renewal:
            return f"past two thirds of its life (expires {info.not_after.isoformat()})"
        return None

    def key_for_request(self, new_key: bool, check_mode: bool) -> tuple[bytes, bool]:
        """(the key to ask a certificate for, whether a new key was made). A renewal uses a
        key made earlier and not yet installed, else the installed one; a new key when asked
        or when there is none. In check mode a new key is made in memory only."""
        if not new_key and self.pending_key:
            return self.pending_key, False
        if not new_key and self.key:
            return self.key, False
        key = make_private_key()
        if not check_mode:
            pending_dir = os.path.dirname(self.pending_path)
            if os.path.isdir(pending_dir):
                shutil.rmtree(pending_dir)
            os.makedirs(pending_dir, mode=0o700)
            _create_private(self.pending_path, key)
            self.pending_key = key
        return key, True

    def key_for_chain(self, chain: bytes) -> bytes:
        """The key a signed chain was issued for: the pending one or the installed one."""
        for key in (self.pending_key, self.key):
            if key and key_matches_certificate(key, chain):
                return key
        raise IdentityError(f"the certificate {serial_hex(first_certificate(chain))} is for neither the installed key nor a "
                            f"pending one in {self.path}: make a new CSR (mesh_workload_csr) and sign that")

    def install(self, chain: bytes | None, roots: bytes, check_mode: bool, owner: tuple[int, int] | None = None) -> bool:
        """Make key, chain and trust bundle these (chain None: keep the installed chain and key,
        change the bundle only), owned by owner (uid, gid) when given. Returns whether anything
        changes."""
        if chain is None:
            if not self.chain or not self.key:
                raise IdentityError(f"no certificate installed in {self.path} yet: give a chain to install with the trust bundle")
            chain, key = self.chain, self.key
        else:
            try:
                key = self.key_for_chain(chain)
            except IdentityError:
                if check_mode:  # signed for a key check mode made in memory only: it would be installed
                    return True
                raise
        if (key, chain, roots) == (self.key, self.chain, self.roots) and self._links_in_place() and owned_by(os.path.join(self.path, KEY_FILE), owner):
            return False
        if not check_mode:
            write_workload_certificates(self.path, key, chain, roots, owner)
            if os.path.isdir(os.path.dirname(self.pending_path)) and key == self.pending_key:
                shutil.rmtree(os.path.dirname(self.pending_path))
        return True

    def _links_in_place(self) -> bool:
        return all(os.path.islink(os.path.join(self.path, name)) for name in (KEY_FILE, CHAIN_FILE, ROOTS_FILE))


def certificate_summary(chain: bytes | None, roots: bytes | None, now: datetime.datetime) -> dict | None:
    if not chain or not chain.strip():
        return None
    out = describe(first_certificate(chain), now).as_dict()
    out["bundle_fingerprint"] = bundle_fingerprint(roots) if roots else ""
    out["roots"] = [{"subject": root.subject.rfc4514_string(), "serial": serial_hex(root), "fingerprint": fingerprint(root)}
                    for root in certificates_in(roots or b"")]
    return out


def envoy_certificates(admin) -> dict:
    """What Envoy says it uses (admin /certs): the serials of the workload certificates it
    presents (those with a SPIFFE ID: a gateway's own server certificates are left out), of the
    CA certificates it trusts, and the fewest days any of its workload certificates has left."""
    status, body = admin.get("/certs")
    if status != 200:
        raise IdentityError(f"Envoy's admin /certs answered {status}")
    serials, ca_serials, days = set(), set(), []
    for context in json.loads(body).get("certificates", []):
        for certificate in context.get("cert_chain") or []:
            uris = [name.get("uri", "") for name in certificate.get("subject_alt_names") or []]
            if not any(uri.startswith("spiffe://") for uri in uris):
                continue
            serials.add(certificate.get("serial_number", "").lower())
            if certificate.get("days_until_expiration") not in (None, ""):
                days.append(int(certificate["days_until_expiration"]))
        for certificate in context.get("ca_cert") or []:
            ca_serials.add(certificate.get("serial_number", "").lower())
    return {"serials": sorted(serials - {""}), "ca_serials": sorted(ca_serials - {""}), "days_until_expiration": min(days) if days else None}


def identity_drift(certs_dir: str, spiffe_id: str, issuer_pem: str | None, bundle_pem: str, owner: str | None,
                   now: datetime.datetime) -> list[str]:
    """What the role's identity phase would change (mesh_workload_csr's renewal decision, then
    mesh_workload_cert with no new chain: the trust bundle, the links, the owner), or []."""
    certs = CertsDir(certs_dir)
    try:
        reason = certs.renewal_reason(spiffe_id, issuer_pem, bundle_pem, now)
        if reason:
            return [f"certificate in {certs_dir}: {reason}"]
        account = pwd.getpwnam(owner) if owner else None
        if certs.install(None, bundle_pem.encode(), True, (account.pw_uid, account.pw_gid) if account else None):
            return [f"trust bundle, links or owner in {certs_dir} differ"]
    except (IdentityError, KeyError, OSError, ValueError) as error:
        return [f"certificates in {certs_dir}: {error}"]
    return []


def in_locked_certs_dir(module, work) -> None:
    """work(module) with the certs folder (module.params certs_dir, lock_timeout) locked: one run at
    a time there (another deploy or rotation waits, then fails naming the holder); check mode
    waits for a writer but makes and changes nothing."""
    certs_dir, timeout = module.params["certs_dir"], module.params["lock_timeout"]
    try:
        with folder_read_lock(certs_dir, timeout) if module.check_mode else folder_lock(certs_dir, timeout, 0o755):
            work(module)
    except FolderLocked as error:
        module.fail_json(msg=str(error))
