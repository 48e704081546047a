"""A CA and a serving certificate for 127.0.0.1, as the installer makes for the webhooks (the
API server verifies the webhook against the configuration's caBundle and its IP address)."""

from __future__ import annotations

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _certificate(subject: str, key, issuer: x509.Name, signer, extensions: list[tuple]) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(hours=1)))
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signer, hashes.SHA256())


def write_webhook_certificates(folder, address: str = "127.0.0.1") -> tuple[str, str, bytes]:
    """(certificate file, key file, CA PEM) for a webhook on address."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("webhook test CA", ca_key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webhook test CA")]), ca_key,
                      [(x509.BasicConstraints(ca=True, path_length=0), True)])
    leaf = _certificate("meshwright webhook", key, ca.subject, ca_key,
                        [(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]), False),
                         (x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)])
    cert_file, key_file = folder / "webhook.crt", folder / "webhook.key"
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return str(cert_file), str(key_file), ca.public_bytes(serialization.Encoding.PEM)
