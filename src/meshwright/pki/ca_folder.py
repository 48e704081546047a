"""The mesh CA on the controller: its root and one intermediate per site, kept in a folder.

```
<ca>/root/cert.pem, key.pem            the root that signs the intermediates (the key may be
                                       absent for an imported root kept offline)
<ca>/root-next/                        a new root during a root rotation, trusted, not yet signing
<ca>/root-previous/                    the old root after the switch, trusted until every proxy
                                       holds a certificate from the new chain
<ca>/intermediates/<site>/cert.pem, key.pem
```

Keys are 0600 in 0700 folders and never leave this module except as objects to sign with.
With a vault (a `KeyVault`: the Ansible collection passes Ansible's own, with the run's vault
secrets), every key file is ansible-vault encrypted at rest and decrypted in memory only;
plaintext keys found then are encrypted in place. The core never imports Ansible: it only knows
the vault format's header, to tell an encrypted key file from a PEM.
A root or intermediate is written, key and certificate, into a new folder that then replaces
the old one by rename (the old one waits aside as `.<name>.replaced` until then, and is what is
read should a run stop between the two renames): an interruption leaves the old pair or the
new pair, never a key without its certificate. `locked()` keeps other runs out meanwhile.
Site names are DNS-1123 labels (`check_site`): a site is a folder here, and '../root' is not one.

Intermediates are limited by a URI name constraint to the trust domain's SPIFFE IDs and renewed
at two thirds of their life (or once expired), whatever the regenerate policy; an expired
intermediate or root signs nothing.

What to do with material that exists already is the caller's choice (`Regenerate`), careful
by default: a root is never replaced by accident. A root rotation is three steps that can each
be run again after an interruption: begin (make root-next: every bundle trusts both), switch
(root-next becomes the root, the old root becomes root-previous, intermediates are reissued)
and finish (root-previous is dropped once no proxy uses the old chain).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meshwright.pki.bundle import trust_bundle
from meshwright.pki.folder_lock import DEFAULT_TIMEOUT, LOCK_FILE, FolderLocked, folder_lock, folder_read_lock
from meshwright.pki.ca import Authority, AuthorityExpired, certificate_pem, make_intermediate, make_root, private_key_pem
from meshwright.pki.info import certificates_in, fingerprint, needs_renewal, not_after, not_before, renewal_time, serial_hex
from meshwright.names import LABEL_HELP, is_label

ROOT, NEXT_ROOT, PREVIOUS_ROOT, INTERMEDIATES = "root", "root-next", "root-previous", "intermediates"
CERT_FILE, KEY_FILE = "cert.pem", "key.pem"
REGENERATE = ("never", "fail", "partial_idempotence", "always")


VAULT_HEADER = b"$ANSIBLE_VAULT"


class CaError(Exception):
    """The CA folder cannot do what was asked (the message says why and what to do)."""


class KeyVault(Protocol):
    """Encrypts the CA's key files at rest (ansible-vault's format)."""

    def encrypt(self, plaintext: bytes) -> bytes: ...

    def decrypt(self, data: bytes, what: str) -> bytes:
        """The plaintext; CaError naming `what` (the file) when it cannot."""


def is_encrypted(data: bytes) -> bool:
    return data.lstrip().startswith(VAULT_HEADER)


def check_site(name: object) -> str:
    """A site (intermediate) name, which becomes a folder under intermediates/: a DNS-1123
    label, so that '../root' or 'a/b' can never name another folder."""
    if not is_label(name):
        raise CaError(f"site {name!r}: a site (intermediate) name must be {LABEL_HELP}")
    return name


@dataclass
class Changes:
    """What a call did (or, in check mode, would do), in order."""

    actions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.actions)


def _now(now: datetime.datetime | None) -> datetime.datetime:
    return now or datetime.datetime.now(datetime.timezone.utc)


def _public_der(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_matches(certificate: x509.Certificate, key) -> bool:
    return _public_der(certificate.public_key()) == _public_der(key.public_key())


def issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether issuer's key signed certificate (and the names agree)."""
    if certificate.issuer != issuer.subject:
        return False
    try:
        issuer.public_key().verify(certificate.signature, certificate.tbs_certificate_bytes, ec.ECDSA(certificate.signature_hash_algorithm))
    except (InvalidSignature, TypeError, ValueError):
        return False
    return True


def _organization(certificate: x509.Certificate) -> str:
    values = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return values[0].value if values else ""


def permitted_trust_domains(certificate: x509.Certificate) -> list[str]:
    """The URI hosts (trust domains) a CA's name constraints permit, [] without constraints."""
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return []
    return sorted(name.value for name in constraints.permitted_subtrees or [] if isinstance(name, x509.UniformResourceIdentifier))


def _common_name(certificate: x509.Certificate) -> str:
    values = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return values[0].value if values else ""


def summary(certificate: x509.Certificate) -> dict:
    """What a certificate is, for module results and diffs (public: no key material)."""
    return {
        "subject": certificate.subject.rfc4514_string(),
        "issuer": certificate.issuer.rfc4514_string(),
        "serial": serial_hex(certificate),
        "fingerprint": fingerprint(certificate),
        "not_before": not_before(certificate).isoformat(),
        "not_after": not_after(certificate).isoformat(),
        "certificate": certificate_pem(certificate).decode(),
    }


def _load_key(pem: bytes, what: str):
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as error:
        raise CaError(f"{what}: not an unencrypted PEM private key ({error})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CaError(f"{what}: the mesh CA's keys are ECDSA")
    return key


def _load_certificate(pem: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as error:
        raise CaError(f"{what}: not a PEM certificate ({error})") from None


def _write_file(path: str, content: bytes, mode: int) -> None:
    """Replace path by rename; the temporary file has the final mode from its creation."""
    directory = os.path.dirname(path)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        os.fchmod(fd, mode)
        os.write(fd, content)
        os.fsync(fd)
        os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _aside(folder: str) -> str:
    """Where a folder's old content waits while a new one is renamed into its place."""
    return os.path.join(os.path.dirname(folder), f".{os.path.basename(folder)}.replaced")


def _fsync_folder(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ca_folder_entries(path: str) -> list[str]:
    """The files under a mesh CA folder (relative, sorted; [] when it is not there); CaError when
    it holds anything the CA does not make: such a folder is not removed (uninstall)."""
    if not os.path.lexists(path):
        return []
    if not os.path.isdir(path) or os.path.islink(path):
        raise CaError(f"{path} is not a mesh CA folder (not a folder): nothing removed")
    made = {ROOT, NEXT_ROOT, PREVIOUS_ROOT, INTERMEDIATES, LOCK_FILE}
    strangers = sorted(name for name in os.listdir(path) if name not in made and not is_interrupted_write(name))
    if strangers:
        raise CaError(f"{path} is not a mesh CA folder (it holds {', '.join(strangers[:5])}, which the mesh CA does not make): nothing removed")
    return sorted(os.path.relpath(os.path.join(folder, name), path) for folder, dummy, names in os.walk(path) for name in names)


def is_interrupted_write(name: str) -> bool:
    """A folder or file an interrupted write of the CA leaves beside its own (renamed aside, staged, temporary)."""
    return name.startswith((".new-", ".tmp-")) or (name.startswith(".") and name.endswith(".replaced"))


def remove_ca_folder(path: str, check_mode: bool = False, timeout: float = DEFAULT_TIMEOUT) -> list[str] | None:
    """Remove a mesh CA folder once no other run holds its lock: the files it held (what was or,
    in check mode, would be removed), None when there was no folder."""
    entries = ca_folder_entries(path)
    if not os.path.isdir(path):
        return None
    if not check_mode:
        try:
            with folder_lock(path, timeout):
                shutil.rmtree(path)
        except FolderLocked as error:
            raise CaError(f"the mesh CA: {error}") from None
    return entries


class CaFolder:
    def __init__(self, path: str, check_mode: bool = False, now: datetime.datetime | None = None, vault: KeyVault | None = None):
        self.path = path
        self.check_mode = check_mode
        self.now = _now(now)
        self.vault = vault  # keys are encrypted at rest with it when set
        # In check mode nothing is written: what would be written is kept here instead, so
        # later steps of the same call see it.
        self._pending: dict[str, tuple[x509.Certificate, object] | None] = {}

    @contextlib.contextmanager
    def locked(self, timeout: float = DEFAULT_TIMEOUT):
        """Hold the CA folder's lock (one writer at a time); CaError naming the holder when
        another run keeps it past timeout. In check mode (and for signing, which only reads) a
        shared lock that changes nothing: it waits for a writer, not for other readers."""
        try:
            with (folder_read_lock(self.path, timeout) if self.check_mode else folder_lock(self.path, timeout)):
                yield
        except FolderLocked as error:
            raise CaError(f"the mesh CA: {error}") from None

    # --- reading -------------------------------------------------------------------------

    def _folder(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _on_disk(self, name: str) -> str:
        """The folder that holds name's pair: its own, or the old one set aside by a
        replacement that stopped between its two renames."""
        folder = self._folder(name)
        if not os.path.isdir(folder) and os.path.isdir(_aside(folder)):
            return _aside(folder)
        return folder

    def _read(self, name: str) -> tuple[x509.Certificate, object] | None:
        """(certificate, key or None) stored under name, None when there is no certificate."""
        if name in self._pending:
            return self._pending[name]
        folder = self._on_disk(name)
        try:
            with open(os.path.join(folder, CERT_FILE), "rb") as handle:
                certificate = _load_certificate(handle.read(), os.path.join(folder, CERT_FILE))
        except FileNotFoundError:
            return None
        try:
            with open(os.path.join(folder, KEY_FILE), "rb") as handle:
                key = self._open_key(handle.read(), os.path.join(folder, KEY_FILE))
        except FileNotFoundError:
            key = None
        if key is not None and not key_matches(certificate, key):
            raise CaError(f"{folder}: {KEY_FILE} is not the key of {CERT_FILE} (an interrupted write?): restore both from a backup or import them")
        return certificate, key

    def _open_key(self, data: bytes, what: str):
        """A private key from PEM, decrypted in memory when it is vault-encrypted."""
        if is_encrypted(data):
            if self.vault is None:
                raise CaError(f"{what} is encrypted with ansible-vault: give its vault password (--ask-vault-pass, --vault-id, "
                              "ANSIBLE_VAULT_PASSWORD_FILE, or mesh_ca_vault_password_file)")
            data = self.vault.decrypt(data, what)
        return _load_key(data, what)

    def _key_bytes(self, key) -> bytes:
        """What a key file holds: the PEM, vault-encrypted when there is a vault."""
        pem = private_key_pem(key)
        return self.vault.encrypt(pem) if self.vault is not None else pem

    def root(self) -> Authority | None:
        stored = self._read(ROOT)
        return Authority(*stored) if stored else None

    def next_root(self) -> x509.Certificate | None:
        stored = self._read(NEXT_ROOT)
        return stored[0] if stored else None

    def previous_root(self) -> x509.Certificate | None:
        stored = self._read(PREVIOUS_ROOT)
        return stored[0] if stored else None

    def intermediate_names(self) -> list[str]:
        folder = self._folder(INTERMEDIATES)
        entries = os.listdir(folder) if os.path.isdir(folder) else []
        # Sites are DNS-1123 labels; ".<site>.replaced" is one whose replacement was interrupted.
        on_disk = [entry[1:-len(".replaced")] if entry.startswith(".") and entry.endswith(".replaced") else entry for entry in entries]
        on_disk = [entry for entry in on_disk if is_label(entry)]
        pending = [name.split("/", 1)[1] for name in self._pending if name.startswith(INTERMEDIATES + "/")]
        return sorted({*on_disk, *pending})

    def intermediate(self, name: str) -> Authority:
        """The site's intermediate, with the root above it, ready to sign."""
        check_site(name)
        stored = self._read(f"{INTERMEDIATES}/{name}")
        root = self.root()
        if stored is None:
            known = ", ".join(self.intermediate_names()) or "none"
            raise CaError(f"the mesh CA at {self.path} has no intermediate {name!r} (known: {known}): run mesh_ca with it in intermediates")
        certificate, key = stored
        if key is None:
            raise CaError(f"intermediate {name!r} at {self.path} has no private key: it cannot sign")
        if root is None or not issued_by(certificate, root.certificate):
            raise CaError(f"intermediate {name!r} at {self.path} was not issued by the current root: reissue it (mesh_ca regenerate: partial_idempotence)")
        authority = Authority(certificate, key, (root.certificate,))
        try:
            authority.check_can_sign(self.now)
        except AuthorityExpired as error:
            raise CaError(f"intermediate {name!r} at {self.path}: {error}") from None
        return authority

    def bundle(self) -> bytes:
        """The roots every proxy trusts now: the root, and root-next or root-previous during a rotation."""
        roots = [self.root(), self.next_root(), self.previous_root()]
        certificates = [r.certificate if isinstance(r, Authority) else r for r in roots if r is not None]
        return trust_bundle(*(certificate_pem(c) for c in certificates))

    def rotation(self) -> str:
        """none, root_begun (root-next exists) or root_switched (root-previous exists)."""
        if self.next_root() is not None:
            return "root_begun"
        if self.previous_root() is not None:
            return "root_switched"
        return "none"

    # --- writing -------------------------------------------------------------------------

    def _store(self, name: str, certificate: x509.Certificate, key) -> None:
        """Key and certificate into a new folder, which then replaces name's by rename: an
        interruption leaves the old pair or the new pair, never a key without its certificate."""
        if self.check_mode:
            self._pending[name] = (certificate, key)
            return
        target = self._folder(name)
        parent = os.path.dirname(target)
        os.makedirs(parent, mode=0o700, exist_ok=True)
        os.chmod(self.path, 0o700)
        os.chmod(parent, 0o700)  # makedirs gives only the last folder its mode
        staging = tempfile.mkdtemp(dir=parent, prefix=f".new-{os.path.basename(target)}-")  # 0700
        try:
            if key is not None:
                _write_file(os.path.join(staging, KEY_FILE), self._key_bytes(key), 0o600)
            _write_file(os.path.join(staging, CERT_FILE), certificate_pem(certificate), 0o644)
            _fsync_folder(staging)
            self._swap_in(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _swap_in(self, staging: str, target: str) -> None:
        """Rename staging to target; the old target waits aside (and is read, should this stop
        halfway) until the new one is in place."""
        aside = _aside(target)
        if os.path.isdir(target):
            if os.path.isdir(aside):
                shutil.rmtree(aside)
            os.replace(target, aside)
        os.replace(staging, target)
        _fsync_folder(os.path.dirname(target))
        if os.path.isdir(aside):
            shutil.rmtree(aside)

    def _move(self, source: str, target: str) -> None:
        if self.check_mode:
            self._pending[target] = self._read(source)
            self._pending[source] = None
            return
        if os.path.exists(self._folder(target)):
            shutil.rmtree(self._folder(target))
        os.replace(self._on_disk(source), self._folder(target))

    def _remove(self, name: str) -> None:
        if self.check_mode:
            self._pending[name] = None
        elif os.path.exists(self._folder(name)):
            shutil.rmtree(self._folder(name))

    # --- what exists vs what is asked ------------------------------------------------------

    def _root_problems(self, root: Authority, trust_domain: str) -> list[str]:
        problems = []
        if _organization(root.certificate) != trust_domain:
            problems.append(f"it is for trust domain {_organization(root.certificate)!r}, not {trust_domain!r}")
        if not_after(root.certificate) <= self.now:
            problems.append(f"it expired on {not_after(root.certificate).isoformat()}")
        return problems

    def _intermediate_problems(self, name: str, stored, root: Authority) -> list[str]:
        certificate, key = stored
        problems = []
        if key is None:
            problems.append("it has no private key")
        if not issued_by(certificate, root.certificate):
            problems.append("it was not issued by the current root")
        if _common_name(certificate) != name:
            problems.append(f"its common name is {_common_name(certificate)!r}, not {name!r}")
        return problems

    def _intermediate_renewal(self, certificate: x509.Certificate, trust_domain: str) -> str | None:
        """Why an intermediate is renewed whatever the regenerate policy (as workload
        certificates are): expired, past two thirds of its life, or not yet limited by name
        constraints to the mesh's trust domain. None when it is fine."""
        if not_after(certificate) <= self.now:
            return f"it expired on {not_after(certificate).isoformat()}"
        if needs_renewal(certificate, self.now):
            return f"past two thirds of its life ({renewal_time(certificate).isoformat()})"
        if permitted_trust_domains(certificate) != [trust_domain]:
            return f"it is not limited to trust domain {trust_domain!r} by name constraints"
        return None

    def _decide(self, what: str, exists: bool, problems: list[str], regenerate: str, changes: Changes) -> bool:
        """Whether to (re)make `what`, by the regenerate policy; CaError for `fail`."""
        if not exists or regenerate == "always":
            return True
        if not problems:
            return False
        reason = f"{what} at {self.path} does not match: {'; '.join(problems)}"
        if regenerate == "fail":
            raise CaError(f"{reason} (regenerate: fail; partial_idempotence replaces it)")
        if regenerate == "never":
            changes.warnings.append(f"{reason}; kept as it is (regenerate: never)")
            return False
        return True

    # --- what the hosts trust already ------------------------------------------------------

    def _held_root_fingerprints(self) -> set[str]:
        held = [self.root(), self.next_root(), self.previous_root()]
        return {fingerprint(r.certificate if isinstance(r, Authority) else r) for r in held if r is not None}

    def check_hosts_trust(self, bundles: dict[str, bytes], new_root: bool = False) -> None:
        """CaError when a host already trusts roots of which this folder holds none: the CA
        folder was lost (or is another mesh's), and going on would make a new root and move
        hosts to it one by one, breaking mTLS between them. new_root: the user asks for that."""
        held = self._held_root_fingerprints()
        strangers = {}
        for host, bundle in sorted(bundles.items()):
            try:
                roots = {fingerprint(c) for c in certificates_in(bundle)}
            except ValueError:
                roots = {"(unreadable bundle)"}
            if roots and not roots & held:
                strangers[host] = sorted(roots)
        if not strangers or new_root:
            return
        named = "; ".join(f"{host} trusts {', '.join(root[:16] for root in roots)}" for host, roots in list(strangers.items())[:5])
        more = f" and {len(strangers) - 5} more" if len(strangers) > 5 else ""
        state = "has no root CA" if not held else "holds none of the roots they trust"
        raise CaError(f"the mesh CA at {self.path} {state}, but hosts already hold certificates from a mesh CA ({named}{more}): "
                      "the CA folder looks lost (or belongs to another mesh). Restore it from its backup and run again; to move every "
                      "proxy to a new root on purpose (mTLS between proxies that have it and those that do not yet fails until the run "
                      "ends), run with -e mesh_ca_new_root=true (mesh_ca new_root: true)")

    # --- operations ----------------------------------------------------------------------

    def ensure(self, trust_domain: str, intermediates: list[str], regenerate: str = "never") -> Changes:
        """A root for trust_domain and an intermediate for each site, made when missing and
        otherwise handled by the regenerate policy."""
        if regenerate not in REGENERATE:
            raise CaError(f"regenerate must be one of {', '.join(REGENERATE)}")
        for name in intermediates:
            check_site(name)
        changes = Changes()
        root = self.root()
        if self._decide("the root CA", root is not None, self._root_problems(root, trust_domain) if root else [], regenerate, changes):
            if self.rotation() != "none":
                raise CaError(f"a root rotation is in progress at {self.path}: finish it (rotate_certs.yml -e rotate=root) before replacing the root")
            replacing = root is not None
            root = make_root(trust_domain, now=self.now)
            self._store(ROOT, root.certificate, root.key)
            changes.actions.append(f"make root CA ({'replacing the old one: every proxy needs new certificates' if replacing else 'new'})")
        if root is not None and needs_renewal(root.certificate, self.now) and not_after(root.certificate) > self.now:
            changes.warnings.append(f"the root CA at {self.path} is past two thirds of its life (it expires on {not_after(root.certificate).isoformat()}): "
                                    "rotate it (rotate_certs.yml -e rotate=root)")
        for name in intermediates:
            self._ensure_intermediate(name, root, trust_domain, regenerate, changes)
        return changes

    def _ensure_intermediate(self, name: str, root: Authority, trust_domain: str, regenerate: str, changes: Changes) -> None:
        stored = self._read(f"{INTERMEDIATES}/{name}")
        problems = self._intermediate_problems(name, stored, root) if stored else []
        if regenerate == "never" and "it was not issued by the current root" in problems:
            # An intermediate of another root breaks every chain it signs: never kept silently.
            raise CaError(f"intermediate {name!r} at {self.path} was not issued by the current root; "
                          "regenerate: partial_idempotence reissues it (its workloads then need new certificates)")
        if self._decide(f"intermediate {name!r}", stored is not None, problems, regenerate, changes):
            self._make_intermediate(name, root, trust_domain)
            changes.actions.append(f"make intermediate CA {name!r}")
            return
        if stored is not None:
            self._renew_intermediate(name, stored[0], root, trust_domain, changes)

    def _renew_intermediate(self, name: str, certificate: x509.Certificate, root: Authority, trust_domain: str, changes: Changes) -> None:
        reason = self._intermediate_renewal(certificate, trust_domain)
        if reason is None:
            return
        if root.key is None:
            changes.warnings.append(f"intermediate {name!r} at {self.path} needs renewing ({reason}), but the root's key is not here: "
                                    "import a new intermediate signed by the root")
            return
        self._make_intermediate(name, root, trust_domain)
        changes.actions.append(f"renew intermediate CA {name!r} ({reason}; its workloads renew their certificates)")

    def _make_intermediate(self, name: str, root: Authority, trust_domain: str | None) -> None:
        """A new intermediate for site name, limited by name constraints to the SPIFFE IDs of
        trust_domain (the root's organization when None)."""
        if root.key is None:
            raise CaError(f"the root CA at {self.path} has no private key here (imported without it): import intermediate {name!r} signed by it")
        try:
            intermediate = make_intermediate(root, name, now=self.now, trust_domains=[trust_domain or _organization(root.certificate)])
        except AuthorityExpired as error:
            raise CaError(f"the root CA at {self.path}: {error}") from None
        self._store(f"{INTERMEDIATES}/{name}", intermediate.certificate, intermediate.key)

    def import_root(self, certificate_pem_: bytes, key_pem: bytes | None, regenerate: str = "never") -> Changes:
        """Take an existing root (key optional: without it the CA signs only with imported
        intermediates). The same root again changes nothing; another root replaces the current
        one only with regenerate partial_idempotence or always."""
        changes = Changes()
        certificate = _load_certificate(certificate_pem_, "root certificate")
        key = self._open_key(key_pem, "root key") if key_pem else None
        if key is not None and not key_matches(certificate, key):
            raise CaError("the root key is not the key of the root certificate")
        if not issued_by(certificate, certificate):
            raise CaError("the root certificate is not self-signed")
        current = self.root()
        if current is not None and fingerprint(current.certificate) == fingerprint(certificate):
            if key is not None and current.key is None:
                self._store(ROOT, certificate, key)
                changes.actions.append("add the root CA's key")
            return changes
        if current is not None and regenerate in ("never", "fail"):
            raise CaError(f"another root CA exists at {self.path} ({current.certificate.subject.rfc4514_string()}, serial "
                          f"{serial_hex(current.certificate)}): it is not replaced by accident (regenerate: partial_idempotence "
                          "replaces it; every proxy then needs new certificates; rotate_certs.yml -e rotate=root rotates without downtime)")
        if self.rotation() != "none":
            raise CaError(f"a root rotation is in progress at {self.path}: finish it before importing a root")
        self._store(ROOT, certificate, key)
        changes.actions.append("import root CA")
        return changes

    def import_intermediate(self, name: str, certificate_pem_: bytes, key_pem: bytes, regenerate: str = "never") -> Changes:
        """Take an existing intermediate for a site; it must be issued by the current root."""
        check_site(name)
        changes = Changes()
        certificate = _load_certificate(certificate_pem_, f"intermediate {name!r} certificate")
        key = self._open_key(key_pem, f"intermediate {name!r} key")
        if not key_matches(certificate, key):
            raise CaError(f"the key of intermediate {name!r} is not the key of its certificate")
        root = self.root()
        if root is None or not issued_by(certificate, root.certificate):
            raise CaError(f"intermediate {name!r} was not issued by the mesh's root CA: import its root first")
        stored = self._read(f"{INTERMEDIATES}/{name}")
        if stored is not None and fingerprint(stored[0]) == fingerprint(certificate):
            return changes
        if stored is not None and regenerate in ("never", "fail"):
            raise CaError(f"another intermediate {name!r} exists at {self.path}: it is not replaced by accident (regenerate: partial_idempotence replaces it)")
        self._store(f"{INTERMEDIATES}/{name}", certificate, key)
        changes.actions.append(f"import intermediate CA {name!r}")
        return changes

    def encrypt_keys(self) -> Changes:
        """With a vault, encrypt every key still stored in plaintext, in place (the same key:
        nothing else changes). Every key is read, and so checked, before this runs."""
        changes = Changes()
        if self.vault is None:
            return changes
        names = [ROOT, NEXT_ROOT, PREVIOUS_ROOT] + [f"{INTERMEDIATES}/{name}" for name in self.intermediate_names()]
        for name in names:
            path = os.path.join(self._folder(name), KEY_FILE)
            if name in self._pending or not os.path.exists(path):
                continue  # written in this call (already encrypted), or no key here
            with open(path, "rb") as handle:
                data = handle.read()
            if is_encrypted(data):
                continue
            key = self._open_key(data, path)
            if not self.check_mode:
                _write_file(path, self._key_bytes(key), 0o600)
            changes.actions.append(f"encrypt the key of {name} with ansible-vault")
        return changes

    def rotate_intermediates(self, names: list[str], trust_domain: str | None = None) -> Changes:
        """A new intermediate for each site, from the current root (its workloads need new
        certificates; the old ones stay valid until they expire, the root being the same)."""
        for name in names:
            check_site(name)
        changes = Changes()
        root = self._require_root()
        for name in names:
            self._make_intermediate(name, root, trust_domain)
            changes.actions.append(f"make intermediate CA {name!r} (rotation)")
        return changes

    def _require_root(self) -> Authority:
        root = self.root()
        if root is None:
            raise CaError(f"no root CA at {self.path}: run mesh_ca first")
        return root

    def begin_root_rotation(self, trust_domain: str) -> Changes:
        """Step 1: make root-next (every bundle then trusts the old and the new root). Nothing
        happens when a rotation is already under way (an interrupted run goes on)."""
        changes = Changes()
        self._require_root()
        if self.rotation() == "none":
            root = make_root(trust_domain, now=self.now)
            self._store(NEXT_ROOT, root.certificate, root.key)
            changes.actions.append("make the next root CA (trusted beside the current one)")
        return changes

    def switch_root(self, intermediates: list[str], trust_domain: str | None = None) -> Changes:
        """Step 2: root-next becomes the root, the old root stays trusted as root-previous, and
        every intermediate is reissued from the new root. Run again, it reissues only
        intermediates still from the old root."""
        for name in intermediates:
            check_site(name)
        changes = Changes()
        if self.next_root() is not None:
            if self.root() is not None:
                self._move(ROOT, PREVIOUS_ROOT)
            self._move(NEXT_ROOT, ROOT)
            changes.actions.append("switch to the next root CA (the old one stays trusted)")
        elif self.previous_root() is None:
            raise CaError(f"no root rotation is under way at {self.path}: begin it first (rotate: root_begin)")
        root = self._require_root()
        for name in sorted(set(intermediates) | set(self.intermediate_names())):
            stored = self._read(f"{INTERMEDIATES}/{name}")
            if stored is None or not issued_by(stored[0], root.certificate):
                self._make_intermediate(name, root, trust_domain)
                changes.actions.append(f"make intermediate CA {name!r} from the new root")
        return changes

    def finish_root_rotation(self) -> Changes:
        """Step 3: stop trusting the old root (once every proxy holds a chain from the new one)."""
        changes = Changes()
        if self.next_root() is not None:
            raise CaError(f"the root rotation at {self.path} has not switched to the new root yet (rotate: root_switch)")
        if self.previous_root() is not None:
            self._remove(PREVIOUS_ROOT)
            changes.actions.append("drop the previous root CA from the trust bundle")
        return changes

    def report(self) -> dict:
        """Summaries of the roots and intermediates (certificates only), and the bundle."""
        root, next_root, previous_root = self.root(), self.next_root(), self.previous_root()
        intermediates = {}
        for name in self.intermediate_names():
            stored = self._read(f"{INTERMEDIATES}/{name}")
            if stored is not None:
                intermediates[name] = summary(stored[0])
        bundle = self.bundle()
        return {
            "root": summary(root.certificate) if root else None,
            "next_root": summary(next_root) if next_root else None,
            "previous_root": summary(previous_root) if previous_root else None,
            "intermediates": intermediates,
            "bundle": bundle.decode(),
            "rotation": self.rotation(),
        }
