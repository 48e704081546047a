"""The mesh CA (Istio's Citadel, as meshwright.pki): a root, an intermediate per site,
workload certificates signed only for the workload's own SPIFFE ID, renewal at two thirds of
life, trust bundles for root rotation, and keys that only their owner can read."""

from __future__ import annotations

import datetime
import os
import stat
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from meshwright.pki import bundle, ca, csr, info, store, workload

NOW = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.timezone.utc)
CLIENT_ID = "spiffe://cluster.local/ns/default/sa/client"


@pytest.fixture(scope="module")
def authorities():
    root = ca.make_root("cluster.local", now=NOW)
    intermediate = ca.make_intermediate(root, "site-a", now=NOW)
    return root, intermediate


def sign(issuer, spiffe_id=CLIENT_ID, asked=None, **kwargs):
    key = csr.make_private_key()
    request = csr.make_csr(key, asked or spiffe_id)
    return key, workload.sign_csr(request, spiffe_id, issuer, now=NOW, **kwargs)


def verify(root, chain_pem: bytes, at=NOW):
    leaf, *intermediates = x509.load_pem_x509_certificates(chain_pem)
    verifier = PolicyBuilder().store(Store([root.certificate])).time(at).build_client_verifier()
    return verifier.verify(leaf, intermediates)


def test_workload_chain_verifies_up_to_the_root(authorities):
    """A leaf signed by a site intermediate is sent with that intermediate (not the root) and
    verifies against the root alone, as a peer with only the trust bundle checks it."""
    root, intermediate = authorities
    key, chain = sign(intermediate)
    certificates = x509.load_pem_x509_certificates(chain)
    assert [c.subject for c in certificates[1:]] == [intermediate.certificate.subject]
    verified = verify(root, chain)
    assert x509.UniformResourceIdentifier(CLIENT_ID) in verified.subjects
    assert csr.key_matches_certificate(key, chain)


def test_leaf_is_istios_workload_certificate(authorities):
    """ECDSA P-256, the SPIFFE ID as only (critical) SAN, digitalSignature+keyEncipherment,
    serverAuth+clientAuth, not a CA, 30 days by default."""
    _, intermediate = authorities
    _, chain = sign(intermediate)
    leaf = info.first_certificate(chain)
    public_key = leaf.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.name == "secp256r1"
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical and san.value.get_values_for_type(x509.UniformResourceIdentifier) == [CLIENT_ID] and len(san.value) == 1
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment and not usage.key_cert_sign
    assert list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert info.not_after(leaf) - NOW == datetime.timedelta(days=30)


def test_lifetime_is_configurable_and_never_outlives_the_issuer(authorities):
    _, intermediate = authorities
    _, chain = sign(intermediate, lifetime=datetime.timedelta(hours=24))
    assert info.not_after(info.first_certificate(chain)) - NOW == datetime.timedelta(hours=24)
    _, chain = sign(intermediate, lifetime=datetime.timedelta(days=100000))
    assert info.not_after(info.first_certificate(chain)) == info.not_after(intermediate.certificate)


def test_csr_for_another_identity_is_refused(authorities):
    """A workload may only get its own identity: a CSR asking for another service account
    is refused, and the error names both identities."""
    _, intermediate = authorities
    other = "spiffe://cluster.local/ns/default/sa/admin"
    with pytest.raises(workload.CsrRefused) as refused:
        sign(intermediate, spiffe_id=CLIENT_ID, asked=other)
    assert other in str(refused.value) and CLIENT_ID in str(refused.value)


def test_csr_with_extra_names_or_another_key_type_is_refused(authorities):
    _, intermediate = authorities
    key = serialization.load_pem_private_key(csr.make_private_key(), None)
    extra = (
        x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(CLIENT_ID), x509.DNSName("evil.example.com")]), critical=True)
        .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(workload.CsrRefused, match="exactly one SPIFFE ID"):
        workload.sign_csr(extra, CLIENT_ID, intermediate, now=NOW)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_pem = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(workload.CsrRefused, match="P-256"):
        workload.sign_csr(csr.make_csr(rsa_pem, CLIENT_ID), CLIENT_ID, intermediate, now=NOW)
    with pytest.raises(workload.CsrRefused, match="not a PEM"):
        workload.sign_csr(b"garbage", CLIENT_ID, intermediate, now=NOW)


def test_certificate_from_another_root_does_not_verify(authorities):
    root, _ = authorities
    other_root = ca.make_root("cluster.local", now=NOW)
    _, chain = sign(other_root)
    with pytest.raises(VerificationError):
        verify(root, chain)


def test_name_constraints_keep_an_intermediate_to_its_trust_domain(tmp_path):
    """An intermediate constrained to cluster.local cannot issue an identity of another trust
    domain that verifies (checked by OpenSSL, which enforces URI name constraints)."""
    root = ca.make_root("cluster.local", now=datetime.datetime.now(datetime.timezone.utc))
    site = ca.make_intermediate(root, "site-b", trust_domains=["cluster.local"])
    (tmp_path / "root.pem").write_bytes(root.certificate_pem())

    def openssl_verify(spiffe_id):
        key = csr.make_private_key()
        chain = workload.sign_csr(csr.make_csr(key, spiffe_id), spiffe_id, site)
        leaf, intermediate = x509.load_pem_x509_certificates(chain)
        (tmp_path / "leaf.pem").write_bytes(ca.certificate_pem(leaf))
        (tmp_path / "intermediate.pem").write_bytes(ca.certificate_pem(intermediate))
        return subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "root.pem"), "-untrusted", str(tmp_path / "intermediate.pem"), str(tmp_path / "leaf.pem")],
                              capture_output=True, text=True, timeout=30)

    assert openssl_verify(CLIENT_ID).returncode == 0
    refused = openssl_verify("spiffe://other.domain/ns/default/sa/client")
    assert refused.returncode != 0 and "permitted subtree violation" in refused.stdout + refused.stderr


def test_renewal_is_due_past_two_thirds_of_life(authorities):
    """30 days of life: not due at 19 days 23 hours, due at 20 days, and after expiry."""
    _, intermediate = authorities
    _, chain = sign(intermediate)
    leaf = info.first_certificate(chain)
    start = info.not_before(leaf)  # a minute before NOW (clock skew allowance)
    life = info.not_after(leaf) - start
    assert info.renewal_time(leaf) == start + life * 2 / 3
    assert not info.needs_renewal(leaf, info.renewal_time(leaf) - datetime.timedelta(seconds=1))
    assert info.needs_renewal(leaf, info.renewal_time(leaf))
    assert not info.needs_renewal(leaf, NOW + datetime.timedelta(days=19, hours=23))
    assert info.needs_renewal(leaf, NOW + datetime.timedelta(days=20))
    assert info.needs_renewal(leaf, NOW + datetime.timedelta(days=31))


def test_describe_shows_identity_serial_and_days_left(authorities):
    _, intermediate = authorities
    _, chain = sign(intermediate)
    leaf = info.first_certificate(chain)
    described = info.describe(leaf, NOW + datetime.timedelta(days=10))
    assert described.spiffe_id == CLIENT_ID
    assert described.serial == leaf.serial_number.to_bytes(20, "big").lstrip(b"\0").hex()
    assert described.issuer == intermediate.certificate.subject.rfc4514_string()
    assert described.days_left == 20.0 and not described.needs_renewal
    assert described.as_dict()["not_after"] == (NOW + datetime.timedelta(days=30)).isoformat()


def test_trust_bundle_holds_each_root_once_oldest_first(authorities):
    """During root rotation the bundle has the old and the new root; the same roots always
    make the same bytes and fingerprint, whatever order or duplicates they come in."""
    old, _ = authorities
    new = ca.make_root("cluster.local", now=NOW + datetime.timedelta(days=1))
    forward = bundle.trust_bundle(old.certificate_pem(), new.certificate_pem())
    backward = bundle.trust_bundle(new.certificate_pem(), old.certificate_pem() + old.certificate_pem())
    assert forward == backward
    assert [c.serial_number for c in bundle.certificates_in(forward)] == [old.certificate.serial_number, new.certificate.serial_number]
    assert bundle.bundle_fingerprint(forward) == bundle.bundle_fingerprint(new.certificate_pem() + old.certificate_pem())
    assert bundle.bundle_fingerprint(forward) != bundle.bundle_fingerprint(old.certificate_pem())
    assert bundle.fingerprint(old.certificate) == old.certificate.fingerprint(hashes.SHA256()).hex()


def test_authority_round_trips_through_pem(authorities):
    root, intermediate = authorities
    loaded = ca.load_authority(intermediate.certificate_pem(), intermediate.key_pem(), intermediate.parents_pem())
    assert loaded.root == root.certificate
    _, chain = sign(loaded)
    verify(root, chain)


def test_keys_are_written_for_their_owner_only(authorities, tmp_path):
    """key.pem is 0600 and certificates 0644, whatever the umask."""
    root, intermediate = authorities
    key, chain = sign(intermediate)
    old_umask = os.umask(0o000)
    try:
        store.write_workload_certificates(str(tmp_path / "certs"), key, chain, root.certificate_pem())
    finally:
        os.umask(old_umask)
    names = ("cert-chain.pem", "key.pem", "root-cert.pem")
    modes = {name: stat.S_IMODE(os.stat(tmp_path / "certs" / name).st_mode) for name in names}
    assert modes == {"cert-chain.pem": 0o644, "key.pem": 0o600, "root-cert.pem": 0o644}
    assert (tmp_path / "certs" / "key.pem").read_bytes() == key


def test_certs_directory_is_replaced_in_one_step(authorities, tmp_path):
    """The files are links into the version `..data` names, so a new key and chain appear
    together (one rename); writing the same contents again changes nothing; the previous
    version is removed."""
    root, intermediate = authorities
    certs = tmp_path / "certs"
    key, chain = sign(intermediate)
    assert store.write_workload_certificates(str(certs), key, chain, root.certificate_pem()) is True
    first = store.current_version(str(certs))
    assert {name: os.readlink(certs / name) for name in ("key.pem", "cert-chain.pem", "root-cert.pem")} == {
        "key.pem": "..data/key.pem", "cert-chain.pem": "..data/cert-chain.pem", "root-cert.pem": "..data/root-cert.pem",
    }
    assert store.write_workload_certificates(str(certs), key, chain, root.certificate_pem()) is False
    assert store.current_version(str(certs)) == first
    new_key, new_chain = sign(intermediate)
    assert store.write_workload_certificates(str(certs), new_key, new_chain, root.certificate_pem()) is True
    assert store.current_version(str(certs)) != first
    assert (certs / "key.pem").read_bytes() == new_key and (certs / "cert-chain.pem").read_bytes() == new_chain
    assert sorted(entry for entry in os.listdir(certs) if entry.startswith("..v-")) == [store.current_version(str(certs))]
