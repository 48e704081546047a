"""Gateway servers with several certificates on real Envoy (Istio's RSA and ECDSA pair):
`credentialNames` (folders of the MeshConfig's credentials.dir) and `tlsCertificates` (file
pairs). A client that can only verify RSA gets the RSA certificate, one that can only verify
ECDSA the ECDSA one; MUTUAL by credentialNames checks clients against the first credential's
ca.crt."""

from __future__ import annotations

import datetime
import http.client
import json
import shutil
import socket
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.harness import free_offset, free_port
from tests.integration.conftest import MeshLab
from tests.integration.test_egress_tls import LocalCa
from tests.integration.test_gateway_tls import REFUSED

MESH = """
apiVersion: meshwright.io/v1alpha1
kind: MeshConfig
metadata: {{name: mesh}}
spec:
  credentials: {{dir: {credentials}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: httpbin, namespace: default}}
spec:
  hosts: [httpbin.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8000, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {httpbin}}}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: mygateway
  namespace: istio-system
  annotations: {{meshwright.io/port-offset: "{offset}"}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {https_port}, name: https, protocol: HTTPS}}
    bind: 127.0.0.1
    hosts: [httpbin.example.com]
    tls:
      mode: MUTUAL
      credentialNames: [httpbin-credential-rsa, httpbin-credential-ecdsa]
  - port: {{number: {https_port}, name: https-files, protocol: HTTPS}}
    bind: 127.0.0.1
    hosts: [files.example.com]
    tls:
      mode: SIMPLE
      tlsCertificates:
      - {{serverCertificate: {files_rsa_cert}, privateKey: {files_rsa_key}}}
      - {{serverCertificate: {files_ecdsa_cert}, privateKey: {files_ecdsa_key}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: httpbin, namespace: default}}
spec:
  hosts: [httpbin.example.com, files.example.com]
  gateways: [istio-system/mygateway]
  http:
  - route:
    - destination: {{host: httpbin.default.svc.cluster.local}}
"""

RSA_ONLY, ECDSA_ONLY = "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"


def issue_rsa(ca: LocalCa, label: str, dns_names: list[str]) -> tuple[str, str]:
    """(certificate, key) files of an RSA server certificate signed by ca."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, label)]))
        .issuer_name(ca.name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name) for name in dns_names]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    cert_path, key_path = ca.directory / f"{label}.pem", ca.directory / f"{label}-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def credential(folder, certificate: str, key: str, ca: str | None = None) -> None:
    folder.mkdir(parents=True)
    shutil.copy(certificate, folder / "tls.crt")
    shutil.copy(key, folder / "tls.key")
    if ca:
        shutil.copy(ca, folder / "ca.crt")


class Gateway:
    def __init__(self, tmp_path_factory):
        self.lab = MeshLab(tmp_path_factory.mktemp("several-certificates"))
        try:
            self._start(tmp_path_factory)
        except BaseException:
            self.lab.close()
            raise

    def _start(self, tmp_path_factory) -> None:
        self.server_ca, self.client_ca = LocalCa(tmp_path_factory.mktemp("server-ca")), LocalCa(tmp_path_factory.mktemp("client-ca"))
        httpbin = self.lab.backend("httpbin", "httpbin-1")
        credentials = tmp_path_factory.mktemp("host") / "credentials"
        credential(credentials / "httpbin-credential-rsa", *issue_rsa(self.server_ca, "httpbin-rsa", ["httpbin.example.com"]), self.client_ca.path)
        credential(credentials / "httpbin-credential-ecdsa", *self.server_ca.issue("httpbin-ecdsa", ["httpbin.example.com"]))
        files_rsa = issue_rsa(self.server_ca, "files-rsa", ["files.example.com"])
        files_ecdsa = self.server_ca.issue("files-ecdsa", ["files.example.com"])
        offset, self.https_port = free_offset(), free_port()
        self.lab.write_mesh(MESH.format(credentials=credentials, httpbin=httpbin.port, offset=offset, https_port=self.https_port,
                                        files_rsa_cert=files_rsa[0], files_rsa_key=files_rsa[1],
                                        files_ecdsa_cert=files_ecdsa[0], files_ecdsa_key=files_ecdsa[1]))
        self.lab.proxy("mygateway.istio-system", 15000 + offset)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    running = Gateway(tmp_path_factory)
    yield running
    running.lab.close()


def tls_get(gateway: Gateway, server_name: str, ciphers: str, client: tuple[str, str] | None = None) -> tuple[int, str]:
    """GET / over TLS 1.2 with only these cipher suites -> (status, the certificate's common name)."""
    context = ssl.create_default_context(cafile=gateway.server_ca.path)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    if client:
        context.load_cert_chain(*client)
    connection = http.client.HTTPConnection("127.0.0.1", gateway.https_port, timeout=10)
    try:
        connection.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", gateway.https_port), timeout=10), server_hostname=server_name)
        subject = dict(item[0] for item in connection.sock.getpeercert()["subject"])
        connection.request("GET", "/", headers={"Host": server_name})
        response = connection.getresponse()
        json.loads(response.read())
        return response.status, subject["commonName"]
    finally:
        connection.close()


@pytest.mark.parametrize("ciphers, presented", [(RSA_ONLY, "files-rsa"), (ECDSA_ONLY, "files-ecdsa")])
def test_tls_certificates_present_the_certificate_the_client_can_verify(gateway, ciphers, presented):
    assert tls_get(gateway, "files.example.com", ciphers) == (200, presented)


@pytest.mark.parametrize("ciphers, presented", [(RSA_ONLY, "httpbin-rsa"), (ECDSA_ONLY, "httpbin-ecdsa")])
def test_credential_names_present_each_credential_to_the_client_that_can_verify_it(gateway, ciphers, presented):
    client = gateway.client_ca.issue("client", ["client.example.com"])
    assert tls_get(gateway, "httpbin.example.com", ciphers, client) == (200, presented)


@pytest.mark.parametrize("who", ["no certificate", "another CA"])
def test_credential_names_check_clients_against_the_first_credentials_ca(gateway, who):
    """The client CA is the first credential's ca.crt; a certificate from another CA (here
    the servers') or none is refused."""
    client = None if who == "no certificate" else gateway.server_ca.issue("stranger", ["client.example.com"])
    with pytest.raises(REFUSED):
        tls_get(gateway, "httpbin.example.com", ECDSA_ONLY, client)
