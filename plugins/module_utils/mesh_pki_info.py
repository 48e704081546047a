# Copied from module_utils/mesh_pki_info.py by tools/sync_collection.py: edit the source, then run it.
"""What a certificate says (subject, SPIFFE ID, serial, issuer, validity) and when it is due
for renewal: past two thirds of its life, as Istio's agent renews.

Standard library and python3-cryptography (38 or later) only, like csr.py: the host decides
itself whether its certificate needs renewing.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from fractions import Fraction

# Guarded as in csr.py: the module using this file reports a host without python3-cryptography.
try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtensionOID
except ImportError:
    pass

RENEW_AFTER = Fraction(2, 3)  # of the certificate's lifetime


def _utc(certificate: x509.Certificate, field: str) -> datetime.datetime:
    """not_valid_before/after as an aware UTC datetime (the *_utc properties are new in 42)."""
    aware = getattr(certificate, f"{field}_utc", None)
    return aware if aware is not None else getattr(certificate, field).replace(tzinfo=datetime.timezone.utc)


def not_before(certificate: x509.Certificate) -> datetime.datetime:
    return _utc(certificate, "not_valid_before")


def not_after(certificate: x509.Certificate) -> datetime.datetime:
    return _utc(certificate, "not_valid_after")


def uri_sans(certificate: x509.Certificate) -> list[str]:
    try:
        extension = certificate.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    except x509.ExtensionNotFound:
        return []
    return extension.value.get_values_for_type(x509.UniformResourceIdentifier)


def first_certificate(pem: bytes) -> x509.Certificate:
    """The first certificate of a PEM file (a chain starts with the leaf)."""
    return x509.load_pem_x509_certificate(pem)


def certificates_in(pem: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM text, in order (none for empty text)."""
    if not pem.strip():
        return []
    # load_pem_x509_certificates is new in cryptography 39; hosts may have 38.
    marker = b"-----END CERTIFICATE-----"
    return [x509.load_pem_x509_certificate(block + marker) for block in pem.split(marker) if b"-----BEGIN CERTIFICATE-----" in block]


def fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lower-case hex (what `openssl x509 -fingerprint` shows)."""
    return certificate.fingerprint(hashes.SHA256()).hex()


def bundle_fingerprint(pem: bytes) -> str:
    """SHA-256 over the sorted fingerprints of a bundle's certificates: equal for equal sets
    of roots, whatever their order or PEM formatting."""
    return hashlib.sha256("\n".join(sorted(fingerprint(c) for c in certificates_in(pem))).encode()).hexdigest()


def serial_hex(certificate: x509.Certificate) -> str:
    """The serial number as Envoy's admin /certs shows it: lower-case hex of whole bytes."""
    text = format(certificate.serial_number, "x")
    return text if len(text) % 2 == 0 else "0" + text


def renewal_time(certificate: x509.Certificate) -> datetime.datetime:
    """When two thirds of the certificate's life have passed."""
    start, end = not_before(certificate), not_after(certificate)
    return start + (end - start) * RENEW_AFTER.numerator / RENEW_AFTER.denominator


def needs_renewal(certificate: x509.Certificate, now: datetime.datetime) -> bool:
    """True once two thirds of its life have passed (and so also once it has expired)."""
    return now >= renewal_time(certificate)


@dataclass(frozen=True)
class CertificateInfo:
    subject: str
    spiffe_id: str  # "" when it has no spiffe:// URI SAN
    serial: str  # lower-case hex of whole bytes, as Envoy's admin /certs shows it
    issuer: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    days_left: float
    needs_renewal: bool
    renew_after: datetime.datetime

    def as_dict(self) -> dict:
        """JSON-friendly (dates in ISO 8601), for module results and CLI output."""
        return {
            "subject": self.subject, "spiffe_id": self.spiffe_id, "serial": self.serial, "issuer": self.issuer,
            "not_before": self.not_before.isoformat(), "not_after": self.not_after.isoformat(),
            "days_left": self.days_left, "needs_renewal": self.needs_renewal, "renew_after": self.renew_after.isoformat(),
        }


def describe(certificate: x509.Certificate, now: datetime.datetime) -> CertificateInfo:
    spiffe = [uri for uri in uri_sans(certificate) if uri.startswith("spiffe://")]
    return CertificateInfo(
        subject=certificate.subject.rfc4514_string(),
        spiffe_id=spiffe[0] if spiffe else "",
        serial=serial_hex(certificate),
        issuer=certificate.issuer.rfc4514_string(),
        not_before=not_before(certificate),
        not_after=not_after(certificate),
        days_left=round((not_after(certificate) - now).total_seconds() / 86400, 2),
        needs_renewal=needs_renewal(certificate, now),
        renew_after=renewal_time(certificate),
    )


def ca_certificates(chain_pem: bytes | None, roots_pem: bytes | None, now: datetime.datetime) -> list[dict]:
    """The CA certificates a proxy holds: the intermediates of its chain (after the leaf), in
    chain order, then the roots of its trust bundle, in bundle order; each described as a
    workload certificate is, with its `kind` (intermediate, root) and fingerprint."""
    out = []
    for kind, certificates in (("intermediate", certificates_in(chain_pem or b"")[1:]), ("root", certificates_in(roots_pem or b""))):
        for certificate in certificates:
            entry = describe(certificate, now).as_dict()
            del entry["needs_renewal"], entry["renew_after"]  # CA certificates are not renewed by the proxies
            out.append(dict(entry, kind=kind, fingerprint=fingerprint(certificate)))
    return out
