"""Egress over TLS on real Envoy, in the shapes of Istio's egress tasks, with local TLS servers
on 127.0.0.1 standing in for the external hosts (certificates from a CA made for the test):

- passthrough: a Sidecar egress listener of protocol TLS hands each connection, untouched, to
  the host its SNI names (ServiceEntry ports of protocol TLS and HTTPS, a wildcard host); the
  client sees that server's own certificate; a name the mesh does not know gets nothing.
- a VirtualService tls route sends one name to another host.
- origination: the app's plain HTTP arrives over TLS at the server (port 80 with targetPort,
  or a route from port 80 to the HTTPS port), with the DestinationRule's sni; a server whose
  certificate does not carry the subjectAltNames is refused; without caCertificates the proxy
  trusts the system's bundle, or the one the MeshConfig names.
"""

from __future__ import annotations

import datetime
import http.client
import http.server
import json
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.harness import free_offset, free_port, request


class LocalCa:
    """A CA made for the test, and certificates it signs."""

    def __init__(self, directory):
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "egress test CA")])
        now = datetime.datetime.now(datetime.timezone.utc)
        certificate = (
            x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.path = str(directory / "ca.pem")
        with open(self.path, "wb") as handle:
            handle.write(certificate.public_bytes(serialization.Encoding.PEM))

    def issue(self, label: str, dns_names: list[str]) -> tuple[str, str]:
        """(certificate, key) files for a server named label, valid for dns_names."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        certificate = (
            x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, label)]))
            .issuer_name(self.name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name) for name in dns_names]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        cert_path, key_path = self.directory / f"{label}.pem", self.directory / f"{label}-key.pem"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        return str(cert_path), str(key_path)


class TlsServer:
    """An HTTPS server on loopback that speaks only TLS: it answers JSON with its label, the
    SNI the client sent and the request's Host, and counts the requests that reached it."""

    def __init__(self, ca: LocalCa, label: str, dns_names: list[str]):
        cert, key = ca.issue(label, dns_names)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.label, self.requests, self.server_names = label, [], []
        outer = self

        def remember_sni(sock, server_name, _context):
            outer.server_names.append(server_name)
            sock.requested_name = server_name

        context.sni_callback = remember_sni

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.headers.get("host"))
                body = json.dumps({"server": outer.label, "sni": getattr(self.connection, "requested_name", None), "host": self.headers.get("host")}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):
                sock, address = self.socket.accept()
                sock.settimeout(10)
                return context.wrap_socket(sock, server_side=True), address

            def handle_error(self, request, client_address):
                pass  # refused handshakes are what some tests are about

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def ca(tmp_path):
    return LocalCa(tmp_path)


@pytest.fixture
def servers():
    started: list[TlsServer] = []
    yield started
    for server in started:
        server.close()


def https_get(port: int, server_name: str, ca_path: str) -> tuple[str, dict]:
    """GET / over TLS to 127.0.0.1:port with SNI server_name, checking the server's certificate
    against the test CA and the name -> (the certificate's common name, the JSON answer)."""
    context = ssl.create_default_context(cafile=ca_path)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as connection:
            subject = dict(item[0] for item in connection.getpeercert()["subject"])
            connection.sendall(f"GET / HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n".encode())
            response = http.client.HTTPResponse(connection)
            response.begin()
            return subject["commonName"], json.loads(response.read())


PASSTHROUGH = """
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: client, namespace: default, annotations: {{meshwright.io/port-offset: "{offset}"}}}}
spec: {{address: 127.0.0.1, labels: {{app: client}}}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: client, namespace: default}}
spec:
  egress:
  - port: {{number: {egress}, protocol: TLS, name: tls}}
    hosts: ["./*"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: default}}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 443, name: tls, protocol: TLS}}]
  endpoints: [{{address: 127.0.0.1, ports: {{tls: {api}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: wikipedia, namespace: default}}
spec:
  hosts: ["*.wikipedia.org"]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 443, name: https, protocol: HTTPS}}]
  endpoints: [{{address: 127.0.0.1, ports: {{https: {wikipedia}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api-canary, namespace: default}}
spec:
  hosts: [api-canary.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 443, name: tls, protocol: TLS}}]
  endpoints: [{{address: 127.0.0.1, ports: {{tls: {canary}}}}}]
"""

TLS_ROUTE = """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com]
  tls:
  - match:
    - port: 443
      sniHosts: [api.example.com]
    route:
    - destination: {host: api-canary.example.com, port: {number: 443}}
"""


def start_passthrough(lab, ca, servers, extra: str = "") -> int:
    """The three external hosts, a client sidecar with a TLS egress listener; its port."""
    servers += [
        TlsServer(ca, "api", ["api.example.com"]),
        TlsServer(ca, "wikipedia", ["*.wikipedia.org"]),
        TlsServer(ca, "canary", ["api-canary.example.com", "api.example.com"]),
    ]
    offset, egress = free_offset(), free_port()
    ports = {server.label: server.port for server in servers}
    lab.write_mesh(PASSTHROUGH.format(offset=offset, egress=egress, api=ports["api"], wikipedia=ports["wikipedia"], canary=ports["canary"]) + extra)
    lab.proxy("client.default", 15000 + offset)
    return egress


def test_passthrough_reaches_the_host_the_sni_names(lab, ca, servers):
    """Each name reaches its own server through the one listener, and the client completes
    TLS with that server (its certificate, its answer): the proxy never terminates it."""
    egress = start_passthrough(lab, ca, servers)
    assert https_get(egress, "api.example.com", ca.path) == ("api", {"server": "api", "sni": "api.example.com", "host": "api.example.com"})
    assert https_get(egress, "en.wikipedia.org", ca.path)[0] == "wikipedia"
    assert https_get(egress, "de.wikipedia.org", ca.path)[1]["sni"] == "de.wikipedia.org"
    assert https_get(egress, "api-canary.example.com", ca.path)[0] == "canary"


def test_passthrough_refuses_a_name_the_mesh_does_not_know(lab, ca, servers):
    egress = start_passthrough(lab, ca, servers)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https_get(egress, "unknown.example.net", ca.path)
    assert all(not server.server_names for server in servers)


def test_tls_route_sends_a_name_to_another_host(lab, ca, servers):
    """A VirtualService tls route for api.example.com sends its connections to the canary
    host, which presents its own certificate (valid for both names); other names are as before."""
    egress = start_passthrough(lab, ca, servers, TLS_ROUTE)
    assert https_get(egress, "api.example.com", ca.path) == ("canary", {"server": "canary", "sni": "api.example.com", "host": "api.example.com"})
    assert https_get(egress, "en.wikipedia.org", ca.path)[0] == "wikipedia"
    api = next(server for server in servers if server.label == "api")
    assert api.requests == []


ORIGINATION = """
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: client, namespace: default, annotations: {{meshwright.io/port-offset: "{offset}"}}}}
spec: {{address: 127.0.0.1, labels: {{app: client}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: news, namespace: default}}
spec:
  hosts: [news.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports:
  - {{number: 80, name: http-port, protocol: HTTP, targetPort: {server}}}
  - {{number: 443, name: https-port, protocol: HTTPS, targetPort: {server}}}
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: news, namespace: default}}
spec:
  host: news.example.com
  trafficPolicy:
    portLevelSettings:
    - port: {{number: {tls_port}}}
      tls: {tls}
"""

ROUTE_TO_HTTPS_PORT = """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: news, namespace: default}
spec:
  hosts: [news.example.com]
  http:
  - route:
    - destination: {host: news.example.com, port: {number: 443}}
"""


def start_origination(lab, server: TlsServer, tls: str, form: str = "targetPort", mesh_config: str = "") -> int:
    """A client sidecar (HTTP outbound listener) and news.example.com at server, originated
    as TLS on port 80 (targetPort form) or on 443 after a route from 80; the listener's port."""
    offset = free_offset()
    tls_port = 80 if form == "targetPort" else 443
    text = ORIGINATION.format(offset=offset, server=server.port, tls_port=tls_port, tls=tls)
    lab.write_mesh(text + (ROUTE_TO_HTTPS_PORT if form == "route" else "") + mesh_config)
    lab.proxy("client.default", 15000 + offset)
    return 15001 + offset


@pytest.mark.parametrize("form", ["targetPort", "route"])
def test_origination_sends_plain_http_over_tls(lab, ca, servers, form):
    """The app speaks plain HTTP to its sidecar; the request reaches the server (which speaks
    only TLS) over TLS, with the DestinationRule's sni."""
    server = TlsServer(ca, "news", ["news.example.com"])
    servers.append(server)
    tls = f"{{mode: SIMPLE, caCertificates: {ca.path}, sni: edge.news.example.com, subjectAltNames: [news.example.com]}}"
    port = start_origination(lab, server, tls, form)
    status, body, _ = request(port, "/", host="news.example.com")
    assert (status, body) == (200, {"server": "news", "sni": "edge.news.example.com", "host": "news.example.com"})


def test_origination_refuses_a_server_without_the_subject_alt_names(lab, ca, servers):
    """The server's certificate is for news.example.com; the DestinationRule accepts only
    partner.example.com: the proxy refuses the server, and no request reaches it."""
    server = TlsServer(ca, "news", ["news.example.com"])
    servers.append(server)
    port = start_origination(lab, server, f"{{mode: SIMPLE, caCertificates: {ca.path}, subjectAltNames: [partner.example.com]}}")
    status, _, _ = request(port, "/", host="news.example.com")
    assert status == 503
    assert server.requests == []


def test_origination_without_ca_certificates_trusts_the_system_bundle(lab, ca, servers):
    """No caCertificates: the proxy checks the server against the system's trust store
    (Debian's bundle), where the test's CA is not: refused, never taken unchecked."""
    server = TlsServer(ca, "news", ["news.example.com"])
    servers.append(server)
    port = start_origination(lab, server, "{mode: SIMPLE}")
    status, _, _ = request(port, "/", host="news.example.com")
    assert status == 503
    assert server.requests == []


def test_origination_trusts_the_bundle_the_mesh_config_names(lab, ca, servers):
    """The MeshConfig's systemCaCertificates names the bundle to trust instead (here one
    holding the test's CA): the same DestinationRule without caCertificates now passes."""
    server = TlsServer(ca, "news", ["news.example.com"])
    servers.append(server)
    mesh_config = f"""
---
apiVersion: meshwright.io/v1alpha1
kind: MeshConfig
metadata: {{name: mesh}}
spec: {{systemCaCertificates: {ca.path}}}
"""
    port = start_origination(lab, server, "{mode: SIMPLE}", mesh_config=mesh_config)
    status, body, _ = request(port, "/", host="news.example.com")
    assert (status, body["server"], body["sni"]) == (200, "news", "news.example.com")
