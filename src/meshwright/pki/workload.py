"""Signing a workload's CSR, on the controller: only for the identity the mesh gives that
workload (the SPIFFE ID of its WorkloadEntry's namespace and service account); any other
request is refused.

The leaf is Istio's workload certificate: ECDSA P-256, an empty subject, the SPIFFE ID as its
only (critical) subject alternative name, for TLS server and client authentication.
"""

from __future__ import annotations

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from meshwright.pki.ca import CLOCK_SKEW, Authority, certificate_pem

DEFAULT_LIFETIME = datetime.timedelta(days=30)
MIN_RSA_BITS = 2048


class CsrRefused(ValueError):
    """The CSR does not ask for what this workload may have."""


def csr_spiffe_id(csr: x509.CertificateSigningRequest) -> str:
    """The one identity a workload CSR asks for: its only subject alternative name, a URI."""
    try:
        names = list(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        raise CsrRefused("the CSR has no subject alternative name: it must ask for one SPIFFE ID as a URI SAN") from None
    uris = [name.value for name in names if isinstance(name, x509.UniformResourceIdentifier)]
    if len(names) != 1 or len(uris) != 1:
        found = ", ".join(f"{type(name).__name__}:{name.value}" for name in names)
        raise CsrRefused(f"the CSR must ask for exactly one SPIFFE ID as its only SAN, it asks for: {found}")
    return uris[0]


def check_key(key, allow_rsa: bool) -> None:
    """CsrRefused unless the key is ECDSA P-256 (or, with allow_rsa, RSA of 2048 bits or more)."""
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1":
        return
    if allow_rsa and isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS:
        return
    if allow_rsa:
        what = f"RSA {key.key_size} bits" if isinstance(key, rsa.RSAPublicKey) else type(key).__name__.lstrip("_")
        raise CsrRefused(f"workload keys must be ECDSA P-256 (secp256r1) or RSA of {MIN_RSA_BITS} bits or more, not {what}")
    raise CsrRefused("workload keys must be ECDSA P-256 (secp256r1)")


def check_csr(csr_pem: bytes, expected_spiffe_id: str, allow_rsa: bool = False) -> x509.CertificateSigningRequest:
    """The parsed CSR when it is signed by its own key, ECDSA P-256 (or with allow_rsa RSA
    >= 2048) and asks for exactly expected_spiffe_id; CsrRefused saying why otherwise."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as error:
        raise CsrRefused(f"not a PEM certificate signing request: {error}") from None
    if not csr.is_signature_valid:
        raise CsrRefused("the CSR's signature does not verify with its own public key")
    check_key(csr.public_key(), allow_rsa)
    asked = csr_spiffe_id(csr)
    if asked != expected_spiffe_id:
        raise CsrRefused(f"the CSR asks for {asked}, but this workload's identity is {expected_spiffe_id} (from its WorkloadEntry's namespace and "
                         "serviceAccount)")
    return csr


def sign_csr(csr_pem: bytes, expected_spiffe_id: str, issuer: Authority, lifetime: datetime.timedelta = DEFAULT_LIFETIME,
             now: datetime.datetime | None = None, allow_rsa: bool = False) -> bytes:
    """The workload's certificate chain (PEM: the leaf, then the issuer's CA certificates up
    to but not including the root). Raises CsrRefused when the CSR is not for expected_spiffe_id,
    AuthorityExpired when the issuer or a CA above it has expired."""
    csr = check_csr(csr_pem, expected_spiffe_id, allow_rsa)
    return _signed_chain(csr.public_key(), [x509.UniformResourceIdentifier(expected_spiffe_id)], issuer, lifetime, now)


def sign_serving_certificate(public_key, names: list[str], issuer: Authority, lifetime: datetime.timedelta,
                             now: datetime.datetime | None = None) -> bytes:
    """A TLS server's certificate chain for DNS names and IP addresses (the admission webhook's,
    as istiod issues its own from its CA): the same leaf as a workload's, with those names."""
    alternative_names = []
    for name in names:
        try:
            alternative_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternative_names.append(x509.DNSName(name))
    return _signed_chain(public_key, alternative_names, issuer, lifetime, now)


def _signed_chain(public_key, alternative_names: list, issuer: Authority, lifetime: datetime.timedelta,
                  now: datetime.datetime | None) -> bytes:
    now = now or datetime.datetime.now(datetime.timezone.utc)
    issuer.check_can_sign(now)  # AuthorityExpired: what it signed would not verify
    not_after = min(now + lifetime, issuer.expiry())  # never past the intermediate's or the root's expiry
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer.certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=True, data_encipherment=False,
            key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
        # An empty subject makes the SAN the whole name, so it must be critical (RFC 5280).
        .add_extension(x509.SubjectAlternativeName(alternative_names), critical=True)
        .sign(issuer.key, hashes.SHA256())
    )
    return b"".join(certificate_pem(c) for c in [leaf, *issuer.chain()])
