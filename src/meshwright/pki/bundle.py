"""Trust bundles: the root certificates a proxy trusts. During a root rotation the bundle
holds the old and the new root until every workload has a certificate from the new chain.

A bundle is deterministic: each certificate once, oldest first (then by fingerprint), so
the same roots always make the same bytes and the same fingerprint.
"""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from meshwright.pki.info import not_before


def certificates_in(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem) if pem.strip() else []


def fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lower-case hex (what `openssl x509 -fingerprint` shows)."""
    return certificate.fingerprint(hashes.SHA256()).hex()


def trust_bundle(*pems: bytes) -> bytes:
    """One PEM bundle of every certificate in the given PEM texts, each once, oldest first."""
    unique = {fingerprint(c): c for pem in pems for c in certificates_in(pem)}
    ordered = sorted(unique.items(), key=lambda item: (not_before(item[1]), item[0]))
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for _, c in ordered)


def bundle_fingerprint(pem: bytes) -> str:
    """SHA-256 over the sorted fingerprints of a bundle's certificates: equal for equal sets
    of roots, whatever their order or PEM formatting."""
    return hashlib.sha256("\n".join(sorted(fingerprint(c) for c in certificates_in(pem))).encode()).hexdigest()
