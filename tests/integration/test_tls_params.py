"""Istio's TLS parameters on real Envoy, on the sides mesh mTLS does not cover: a
DestinationRule's TLS origination (Envoy as the client) and a Gateway's TLS server (RSA or
ECDSA certificate). TLS 1.2 only with ECDHE and AES-GCM or ChaCha20: a peer that offers only
a CBC-SHA1 suite, or a suite without forward secrecy (static RSA key exchange, which Envoy
1.40's own defaults still accept), is refused.
"""

from __future__ import annotations

import datetime
import http.server
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tests.harness import free_offset, free_port, request

CBC_SHA1 = {"ecdsa": "ECDHE-ECDSA-AES128-SHA", "rsa": "ECDHE-RSA-AES128-SHA"}
STATIC_RSA = ("AES128-GCM-SHA256", "AES256-GCM-SHA384")  # no ECDHE: no forward secrecy
GCM = {"ecdsa": "ECDHE-ECDSA-AES128-GCM-SHA256", "rsa": "ECDHE-RSA-AES128-GCM-SHA256"}


def self_signed(tmp_path, name: str, kind: str) -> tuple[str, str]:
    """(certificate, key) files for name, with an ECDSA or RSA key."""
    key = ec.generate_private_key(ec.SECP256R1()) if kind == "ecdsa" else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}-{kind}.pem", tmp_path / f"{name}-{kind}-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def tls12_only(context: ssl.SSLContext, cipher: str) -> ssl.SSLContext:
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(cipher + ":@SECLEVEL=0")
    return context


class LegacyTlsServer:
    """An HTTPS server on loopback that speaks TLS 1.2 with one cipher suite only."""

    def __init__(self, cert: str, key: str, cipher: str):
        context = tls12_only(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), cipher)
        context.load_cert_chain(cert, key)
        self.handshakes = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        outer = self

        class Server(http.server.ThreadingHTTPServer):
            def get_request(self):
                sock, address = self.socket.accept()
                try:
                    wrapped = context.wrap_socket(sock, server_side=True)
                except (ssl.SSLError, OSError):
                    sock.close()
                    raise
                outer.handshakes += 1
                return wrapped, address

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


ORIGINATION = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: legacy, namespace: default}}
spec:
  hosts: [legacy.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: legacy, namespace: default}}
spec:
  host: legacy.example.com
  trafficPolicy:
    tls: {{mode: SIMPLE, caCertificates: {ca}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: client, namespace: default, annotations: {{meshwright.io/port-offset: "{offset}"}}}}
spec: {{address: 127.0.0.1, labels: {{app: client}}}}
"""


@pytest.mark.parametrize("kind, cipher, status", [
    ("ecdsa", CBC_SHA1["ecdsa"], 503), ("rsa", CBC_SHA1["rsa"], 503), ("rsa", STATIC_RSA[0], 503), ("rsa", STATIC_RSA[1], 503),
    ("ecdsa", GCM["ecdsa"], 200), ("rsa", GCM["rsa"], 200),
], ids=lambda value: str(value))
def test_tls_origination_refuses_a_weak_server(lab, kind, cipher, status):
    """A DestinationRule tls SIMPLE to a server that speaks only a CBC-SHA1 or a static-RSA
    suite: Envoy's handshake fails (503, the server never completes one); with ECDHE and
    AES-GCM the request passes."""
    cert, key = self_signed(lab.tmp_path, "legacy.example.com", kind)
    server = LegacyTlsServer(cert, key, cipher)
    try:
        offset = free_offset()
        lab.write_mesh(ORIGINATION.format(port=server.port, ca=cert, offset=offset))
        lab.proxy("client.default", 15000 + offset)
        answer, _, _ = request(15001 + offset, "/", host=f"legacy.example.com:{server.port}")
        assert answer == status
        assert server.handshakes == (1 if status == 200 else 0)
    finally:
        server.close()


GATEWAY = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: app, namespace: default}}
spec:
  hosts: [app.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {app}}}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: istio-system, annotations: {{meshwright.io/port-offset: "{offset}"}}}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {https}, name: https, protocol: HTTPS}}
    bind: 127.0.0.1
    hosts: [shop.example.com]
    tls: {{mode: SIMPLE, serverCertificate: {cert}, privateKey: {key}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop, namespace: default}}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/edge]
  http: [{{route: [{{destination: {{host: app.default.svc.cluster.local}}}}]}}]
"""


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
def test_gateway_refuses_a_cbc_sha1_client(lab, kind):
    """A gateway's TLS server (RSA or ECDSA certificate) refuses a TLS 1.2 client that offers
    only a CBC-SHA1 suite or a static-RSA one, and takes one offering ECDHE with AES-GCM."""
    app = lab.backend("app", "app-1")
    cert, key = self_signed(lab.tmp_path, "shop.example.com", kind)
    offset, https = free_offset(), free_port()
    lab.write_mesh(GATEWAY.format(app=app.port, offset=offset, https=https, cert=cert, key=key))
    lab.proxy("edge.istio-system", 15000 + offset)

    def handshake(cipher: str) -> str:
        context = tls12_only(ssl.create_default_context(cafile=cert), cipher)
        with context.wrap_socket(socket.create_connection(("127.0.0.1", https), timeout=10), server_hostname="shop.example.com") as connection:
            return connection.cipher()[0]

    for weak in (CBC_SHA1[kind],) + (STATIC_RSA if kind == "rsa" else ()):
        with pytest.raises(ssl.SSLError):
            handshake(weak)
    assert handshake(GCM[kind]) == GCM[kind]
