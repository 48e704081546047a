# Copied from module_utils/mesh_pki_csr.py by tools/sync_collection.py: edit the source, then run it.
"""A workload's private key and certificate signing request, made on the workload's host:
the private key never leaves it; only the CSR goes to the controller to be signed.

Standard library and the host's python3-cryptography only (Debian 12 ships 38.0), and no
import of the rest of meshwright, so Ansible module_utils can ship this very file.
"""

from __future__ import annotations

import hashlib
import traceback

# Guarded as community.crypto guards it: on a host without python3-cryptography this file still
# imports, and the module using it fails with Ansible's missing-library message (mesh_cryptography).
try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
except ImportError:
    CRYPTOGRAPHY_IMPORT_ERROR: str | None = traceback.format_exc()
else:
    CRYPTOGRAPHY_IMPORT_ERROR = None


def _curve():
    """Istio's workload keys: ECDSA on P-256, signed with SHA-256."""
    return ec.SECP256R1()


def make_private_key() -> bytes:
    """A new ECDSA P-256 private key, PEM (PKCS#8, unencrypted: Envoy reads it as a file)."""
    key = ec.generate_private_key(_curve())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def make_csr(key_pem: bytes, spiffe_id: str) -> bytes:
    """A CSR for spiffe_id (its only subject alternative name, a URI), signed by the key."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)


def key_matches_certificate(key_pem: bytes, certificate_pem: bytes) -> bool:
    """Whether the certificate (the first in a chain) was issued for this private key."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_key().public_bytes(serialization.Encoding.DER, public) == certificate.public_key().public_bytes(serialization.Encoding.DER, public)


def public_key_sha256(public_key) -> str:
    """SHA-256 of a public key's DER SubjectPublicKeyInfo, lower-case hex: what a host says its
    key is, and what the controller compares with the key in the CSR."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def key_pem_public_sha256(key_pem: bytes) -> str:
    return public_key_sha256(serialization.load_pem_private_key(key_pem, password=None).public_key())
