"""The admission webhooks' serving certificate that serve issues itself from the mesh CA
(serve/webhook_certificate.py), as istiod does: a client trusting only the mesh's roots accepts
it for the names it was issued for (DNS names and IP addresses), and no other; renewal gives a
new one on the same context; serve's options are checked before it starts."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading

import pytest
from cryptography import x509

from meshwright.pki import ca
from meshwright.serve.webhook_certificate import IssuedWebhookCertificate
from tests.unit.test_serve_certificates import run_cli

ROOT = ca.make_root("cluster.local")
SITE = ca.make_intermediate(ROOT, "site", trust_domains=["cluster.local"])


def served_certificate(issued: IssuedWebhookCertificate, name: str) -> x509.Certificate:
    """The certificate a client trusting only the mesh's root verifies for name."""
    listener = socket.create_server(("127.0.0.1", 0))
    address = listener.getsockname()
    server = issued.context.wrap_socket(listener, server_side=True)

    def accept():
        try:
            connection, dummy = server.accept()
            connection.close()
        except (OSError, ssl.SSLError):
            pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    client = ssl.create_default_context(cadata=ROOT.certificate_pem().decode())
    try:
        with client.wrap_socket(socket.create_connection(address), server_hostname=name) as connection:
            return x509.load_der_x509_certificate(connection.getpeercert(binary_form=True))
    finally:
        thread.join(timeout=5)
        server.close()


def test_the_webhook_certificate_is_the_mesh_cas_for_its_names_only():
    issued = IssuedWebhookCertificate(SITE, ["meshwright-webhook.meshwright-system.svc", "127.0.0.1"], datetime.timedelta(hours=24))

    first = served_certificate(issued, "meshwright-webhook.meshwright-system.svc")
    assert served_certificate(issued, "127.0.0.1").serial_number == first.serial_number
    assert first.issuer == SITE.certificate.subject
    lifetime = first.not_valid_after_utc - first.not_valid_before_utc
    assert datetime.timedelta(hours=24) <= lifetime <= datetime.timedelta(hours=24, minutes=10)
    with pytest.raises(ssl.SSLCertVerificationError, match="match"):
        served_certificate(issued, "other.meshwright-system.svc")
    issued.issue()  # what the renewal does at two thirds of its life
    assert served_certificate(issued, "127.0.0.1").serial_number != first.serial_number


def test_serve_says_what_the_webhook_needs(tmp_path):
    code, dummy, err = run_cli(["serve", "--mesh", str(tmp_path), "--plaintext-loopback", "--webhook-listen", "127.0.0.1:1"])
    assert code == 2 and "--webhook-listen needs a certificate: --signing-cert and --signing-key" in err
    code, dummy, err = run_cli(["serve", "--mesh", str(tmp_path), "--plaintext-loopback", "--webhook-listen", "127.0.0.1:1",
                                "--webhook-cert", "x.pem"])
    assert code == 2 and "give --webhook-cert and --webhook-key together" in err
    (tmp_path / "site.pem").write_bytes(SITE.certificate_pem() + SITE.parents_pem())
    (tmp_path / "site.key").write_bytes(SITE.key_pem())
    (tmp_path / "root.pem").write_bytes(ROOT.certificate_pem())
    signing = ["--tls-cert", str(tmp_path / "site.pem"), "--tls-key", str(tmp_path / "site.key"), "--ca", str(tmp_path / "root.pem"),
               "--signing-cert", str(tmp_path / "site.pem"), "--signing-key", str(tmp_path / "site.key")]
    code, dummy, err = run_cli(["serve", "--mesh", str(tmp_path), *signing, "--webhook-listen", "0.0.0.0:1"])
    assert code == 2 and "--webhook-listen 0.0.0.0:1 listens on every address: give --webhook-name" in err
    code, dummy, err = run_cli(["serve", "--mesh", str(tmp_path), *signing, "--webhook-listen", "0.0.0.0:1", "--webhook-name", "Bad_Name"])
    assert code == 2 and "--webhook-name 'Bad_Name': expected an IP address or a DNS-1123 name" in err

