"""Istio's ingress-gateway tasks (Ingress Gateways, Secure Gateways), on real Envoy with real
traffic.

A Gateway whose selector matches no WorkloadEntry is a standalone gateway proxy
(`edge.istio-system`). VirtualServices bound to it route by host and by path prefix to two
mesh services; its HTTPS servers terminate TLS (mode SIMPLE) with a certificate chosen by SNI.
"""

from __future__ import annotations

import datetime
import http.client
import json
import socket
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.harness import free_offset, free_port, request

MESH = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: productpage, namespace: default}}
spec:
  hosts: [productpage.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {productpage}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {reviews}}}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: edge
  namespace: istio-system
  annotations: {{meshwright.io/port-offset: "{offset}"}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {http_port}, name: http, protocol: HTTP}}
    bind: 127.0.0.1
    hosts: [bookinfo.example.com, reviews.example.com]
  - port: {{number: {https_port}, name: https-bookinfo, protocol: HTTPS}}
    bind: 127.0.0.1
    hosts: [bookinfo.example.com]
    tls: {{mode: SIMPLE, serverCertificate: {bookinfo_cert}, privateKey: {bookinfo_key}}}
  - port: {{number: {https_port}, name: https-reviews, protocol: HTTPS}}
    bind: 127.0.0.1
    hosts: [reviews.example.com]
    tls: {{mode: SIMPLE, serverCertificate: {reviews_cert}, privateKey: {reviews_key}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bookinfo, namespace: default}}
spec:
  hosts: [bookinfo.example.com]
  gateways: [istio-system/edge]
  http:
  - match:
    - uri: {{prefix: /reviews}}
    route:
    - destination: {{host: reviews, port: {{number: 9080}}}}
  - match:
    - uri: {{exact: /productpage}}
    - uri: {{prefix: /static}}
    route:
    - destination: {{host: productpage, port: {{number: 9080}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews-api, namespace: default}}
spec:
  hosts: [reviews.example.com]
  gateways: [istio-system/edge]
  http:
  - route:
    - destination: {{host: reviews}}
"""


def self_signed(tmp_path, hostname: str) -> tuple[str, str]:
    """A self-signed ECDSA certificate for `hostname`; (certificate path, key path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{hostname}.crt", tmp_path / f"{hostname}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def start(lab, tmp_path):
    productpage = lab.backend("productpage", "productpage-1")
    reviews = lab.backend("reviews", "reviews-1")
    bookinfo_cert, bookinfo_key = self_signed(tmp_path, "bookinfo.example.com")
    reviews_cert, reviews_key = self_signed(tmp_path, "reviews.example.com")
    ports = {"http_port": free_port(), "https_port": free_port()}
    offset = free_offset(taken=tuple(ports.values()))  # a server's port must not be one of the proxy's own
    lab.write_mesh(MESH.format(
        productpage=productpage.port, reviews=reviews.port, offset=offset, **ports,
        bookinfo_cert=bookinfo_cert, bookinfo_key=bookinfo_key, reviews_cert=reviews_cert, reviews_key=reviews_key,
    ))
    lab.proxy("edge.istio-system", 15000 + offset)
    return ports["http_port"], ports["https_port"], {"bookinfo.example.com": bookinfo_cert, "reviews.example.com": reviews_cert}


def https_request(port: int, sni: str, trusted_cert: str, path: str) -> tuple[int, dict, dict]:
    """GET over TLS to 127.0.0.1:port with SNI `sni`, trusting only `trusted_cert` (so the
    handshake proves which certificate the gateway chose)."""
    context = ssl.create_default_context(cafile=trusted_cert)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname=sni)
        connection.request("GET", path, headers={"Host": sni})
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else {}, {"peer_cn": connection.sock.getpeercert()["subject"][0][0][1]}
    finally:
        connection.close()


def test_gateway_routes_by_host_and_path_prefix(lab, tmp_path):
    """Host bookinfo.example.com: /reviews... goes to reviews, /productpage and /static...
    to productpage; host reviews.example.com: everything to reviews."""
    http_port, _, _ = start(lab, tmp_path)

    expected = [
        ("bookinfo.example.com", "/productpage", "productpage"),
        ("bookinfo.example.com", "/static/style.css", "productpage"),
        ("bookinfo.example.com", "/reviews/1", "reviews"),
        ("reviews.example.com", "/productpage", "reviews"),
        ("reviews.example.com", "/", "reviews"),
        (f"bookinfo.example.com:{http_port}", "/productpage", "productpage"),
    ]
    for host, path, service in expected:
        status, body, _ = request(http_port, path, host=host)
        assert (status, body.get("service"), body.get("path")) == (200, service, path), (host, path)


def test_gateway_answers_404_for_unknown_hosts_and_unrouted_paths(lab, tmp_path):
    """A host no VirtualService names, and a path no route of the host matches, get 404
    from the gateway itself; no backend sees them."""
    http_port, _, _ = start(lab, tmp_path)

    for host, path in [("unknown.example.com", "/productpage"), ("bookinfo.example.com", "/admin")]:
        status, _, headers = request(http_port, path, host=host)
        assert status == 404, (host, path)
        assert headers.get("server") == "envoy"
    assert all(backend.count == 0 for backend in lab.backends)


def test_https_servers_terminate_tls_with_the_certificate_the_sni_names(lab, tmp_path):
    """Two SIMPLE TLS servers share one port: the SNI picks the server, hence its
    certificate (the client trusts only that one) and its routes."""
    _, https_port, certificates = start(lab, tmp_path)

    status, body, peer = https_request(https_port, "bookinfo.example.com", certificates["bookinfo.example.com"], "/productpage")
    assert (status, body["service"], peer["peer_cn"]) == (200, "productpage", "bookinfo.example.com")
    status, body, _ = https_request(https_port, "bookinfo.example.com", certificates["bookinfo.example.com"], "/reviews/2")
    assert (status, body["service"]) == (200, "reviews")
    status, body, peer = https_request(https_port, "reviews.example.com", certificates["reviews.example.com"], "/productpage")
    assert (status, body["service"], peer["peer_cn"]) == (200, "reviews", "reviews.example.com")
    # The bookinfo certificate is not what the gateway shows for reviews.example.com.
    with pytest.raises(ssl.SSLCertVerificationError):
        https_request(https_port, "reviews.example.com", certificates["bookinfo.example.com"], "/")
