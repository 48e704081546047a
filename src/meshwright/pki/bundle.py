"""Trust bundles: the root certificates a proxy trusts. During a root rotation the bundle
holds the old and the new root until every workload has a certificate from the new chain.

A bundle is deterministic: each certificate once, oldest first (then by fingerprint), so
the same roots always make the same bytes and the same fingerprint.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization

# Reading bundles is host-side too (info.py ships to hosts); the names stay importable here.
from meshwright.pki.info import bundle_fingerprint, certificates_in, fingerprint, not_before

__all__ = ["bundle_fingerprint", "certificates_in", "fingerprint", "trust_bundle"]


def trust_bundle(*pems: bytes) -> bytes:
    """One PEM bundle of every certificate in the given PEM texts, each once, oldest first."""
    unique = {fingerprint(c): c for pem in pems for c in certificates_in(pem)}
    ordered = sorted(unique.items(), key=lambda item: (not_before(item[1]), item[0]))
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for dummy, c in ordered)
