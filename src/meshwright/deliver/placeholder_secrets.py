"""Stand-in TLS secrets for `envoy --mode validate`.

A proxy's certificate and trust bundle come through SDS from files on its host that may not
exist yet where the config is checked (a new workload gets its certificate after its first
render). Envoy's validate mode needs real PEM to build TLS contexts, so the validation
bootstrap carries these instead: one self-signed ECDSA P-256 certificate whose key is derived
from a fixed public seed and signed deterministically (RFC 6979), so the validation
bootstrap is the same bytes every time. Nothing ever trusts it; it only lets Envoy check the
rest of the TLS configuration.
"""

from __future__ import annotations

import datetime
import functools
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SEED = b"meshwright envoy --mode validate placeholder (public, never trusted)"
# The order of P-256's group: a private key is an integer from 1 to ORDER - 1.
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@functools.lru_cache(maxsize=1)
def placeholder_pem() -> tuple[str, str]:
    """(certificate, private key) PEM of the stand-in."""
    secret = int.from_bytes(hashlib.sha256(SEED).digest(), "big") % (P256_ORDER - 1) + 1
    key = ec.derive_private_key(secret, ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meshwright validation placeholder")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc))
        .not_valid_after(datetime.datetime(2099, 12, 31, tzinfo=datetime.timezone.utc))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return certificate.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def placeholder_secret(name: str, kind: str) -> dict:
    """A static secret named name: a certificate ("tls_certificate") or a trust bundle."""
    certificate, key = placeholder_pem()
    if kind == "tls_certificate":
        return {"name": name, "tls_certificate": {"certificate_chain": {"inline_string": certificate}, "private_key": {"inline_string": key}}}
    return {"name": name, "validation_context": {"trusted_ca": {"inline_string": certificate}}}
