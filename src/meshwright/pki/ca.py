"""Certificate authorities of the mesh: one root, and an intermediate per cluster or site
signed by it (Istio's plug-in CA layout). Workload certificates are signed by an intermediate.

Keys are ECDSA P-256. An authority may be limited by name constraints to the SPIFFE IDs of
given trust domains (a URI constraint on the host part: "cluster.local"), so a site's
intermediate cannot issue identities of another trust domain.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT_LIFETIME = datetime.timedelta(days=3650)
INTERMEDIATE_LIFETIME = datetime.timedelta(days=730)
# Certificates start a minute early: a peer whose clock is a little behind still accepts them.
CLOCK_SKEW = datetime.timedelta(minutes=1)


class AuthorityExpired(ValueError):
    """The CA that would sign (or one above it) is expired: nothing it signs would verify."""


@dataclass(frozen=True)
class Authority:
    """A CA: its certificate and key, and the certificates above it (nearest first, ending
    with the root; empty for a root)."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    parents: tuple[x509.Certificate, ...] = ()

    @property
    def root(self) -> x509.Certificate:
        return self.parents[-1] if self.parents else self.certificate

    def chain(self) -> list[x509.Certificate]:
        """The CA certificates a certificate it signs is sent with: itself and any
        intermediates above it, never the root (peers have the root in their trust bundle)."""
        return [self.certificate, *self.parents[:-1]] if self.parents else []

    def expiry(self) -> datetime.datetime:
        """When the first of its chain (itself and the CAs above it) expires: what it signs
        must not outlive that."""
        return min(c.not_valid_after_utc for c in (self.certificate, *self.parents))

    def check_can_sign(self, now: datetime.datetime) -> None:
        """AuthorityExpired naming the expired CA when it or one above it has expired."""
        for certificate in (self.certificate, *self.parents):
            if certificate.not_valid_after_utc <= now:
                what = "it" if certificate is self.certificate else f"the CA above it ({certificate.subject.rfc4514_string()})"
                raise AuthorityExpired(f"the issuing CA {self.certificate.subject.rfc4514_string()} cannot sign: {what} expired on "
                                       f"{certificate.not_valid_after_utc.isoformat()} (renew it: mesh_ca, or rotate_certs.yml)")

    def certificate_pem(self) -> bytes:
        return certificate_pem(self.certificate)

    def key_pem(self) -> bytes:
        return private_key_pem(self.key)

    def parents_pem(self) -> bytes:
        return b"".join(certificate_pem(c) for c in self.parents)


def certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def private_key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def load_authority(certificate: bytes, key: bytes, parents: bytes = b"") -> Authority:
    """An authority from PEM: its certificate, its key and the certificates above it."""
    return Authority(
        x509.load_pem_x509_certificate(certificate),
        serialization.load_pem_private_key(key, password=None),
        tuple(x509.load_pem_x509_certificates(parents)) if parents.strip() else (),
    )


def _name(organization: str, common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization), x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _now(now: datetime.datetime | None) -> datetime.datetime:
    return now or datetime.datetime.now(datetime.timezone.utc)


def _ca_certificate(subject: x509.Name, key, issuer: Authority | None, lifetime: datetime.timedelta, now: datetime.datetime,
                    path_length: int | None, trust_domains: list[str] | None) -> x509.Certificate:
    start = now - CLOCK_SKEW
    end = now + lifetime
    if issuer is not None:
        issuer.check_can_sign(now)
        end = min(end, issuer.expiry())  # never outlive the issuer or the CAs above it
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
    if trust_domains:
        permitted = [x509.UniformResourceIdentifier(domain) for domain in sorted(trust_domains)]
        builder = builder.add_extension(x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None), critical=True)
    return builder.sign(issuer.key if issuer else key, hashes.SHA256())


def make_root(trust_domain: str, common_name: str = "meshwright root CA", lifetime: datetime.timedelta = ROOT_LIFETIME,
              now: datetime.datetime | None = None, name_constraints: bool = False) -> Authority:
    """A self-signed root CA for trust_domain (its organization). With name_constraints, the
    root and everything under it can only name SPIFFE IDs of that trust domain."""
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _ca_certificate(_name(trust_domain, common_name), key, None, lifetime, _now(now), None,
                                  [trust_domain] if name_constraints else None)
    return Authority(certificate, key)


def make_intermediate(parent: Authority, common_name: str, lifetime: datetime.timedelta = INTERMEDIATE_LIFETIME,
                      now: datetime.datetime | None = None, trust_domains: list[str] | None = None) -> Authority:
    """An intermediate CA (one per cluster or site) signed by parent; it signs only leaf
    certificates (path length 0). trust_domains, if given, become URI name constraints."""
    key = ec.generate_private_key(ec.SECP256R1())
    organization = parent.certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    subject = _name(organization[0].value if organization else "meshwright", common_name)
    certificate = _ca_certificate(subject, key, parent, lifetime, _now(now), 0, trust_domains)
    return Authority(certificate, key, (parent.certificate, *parent.parents))
