"""TLS at an ingress gateway on real Envoy, in the shapes of Istio's tasks "Secure Gateways",
"Mutual TLS at the gateway" and "Ingress Gateway without TLS Termination", with certificates
from CAs made for the test and local TLS servers on 127.0.0.1 as the backends:

- PASSTHROUGH: the SNI picks the backend (VirtualService tls routes bound to the gateway), the
  client completes TLS with that backend's own certificate; an unknown name gets nothing;
- MUTUAL refuses a client without a certificate, with one from another CA, with one whose
  name is not among subjectAltNames, or with one caCrl revokes; it accepts one signed by its CA;
- OPTIONAL_MUTUAL takes a client without a certificate, and refuses a wrong one;
- minProtocolVersion TLSV1_3 refuses a TLS 1.2 client;
- a server of protocol TLS terminates TLS and forwards the bytes by a tcp route;
- an HTTP server with httpsRedirect answers 301 to the https URL;
- ISTIO_MUTUAL presents the gateway's certificate from the mesh CA and takes the client
  mesh identity subjectAltNames names, nothing else.
The first six share one port where they are TLS, told apart by SNI.
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

from meshwright.deliver.bundle import load_mesh
from meshwright.deliver.identity import sign_proxy_csr
from meshwright.pki import bundle, ca, csr, store
from meshwright.pki.workload import sign_csr
from tests.harness import free_offset, free_port, request
from tests.integration.conftest import MeshLab
from tests.integration.test_egress_tls import LocalCa, TlsServer

MESH = """
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
kind: ServiceEntry
metadata: {{name: nginx, namespace: default}}
spec:
  hosts: [my-nginx.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 443, name: https, protocol: HTTPS}}]
  endpoints: [{{address: 127.0.0.1, ports: {{https: {nginx}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: legacy, namespace: default}}
spec:
  hosts: [legacy.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8443, name: tls, protocol: TLS}}]
  endpoints: [{{address: 127.0.0.1, ports: {{tls: {legacy}}}}}]
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
    hosts: [httpbin.example.com]
    tls: {{httpsRedirect: true}}
  - port: {{number: {https_port}, name: https-passthrough, protocol: HTTPS}}
    bind: 127.0.0.1
    hosts: [nginx.example.com, legacy.example.com]
    tls: {{mode: PASSTHROUGH}}
  - port: {{number: {https_port}, name: https-modern, protocol: HTTPS}}
    bind: 127.0.0.1
    hosts: [modern.example.com]
    tls: {{mode: SIMPLE, serverCertificate: {modern_cert}, privateKey: {modern_key}, minProtocolVersion: TLSV1_3}}
  - port: {{number: {https_port}, name: https-partners, protocol: HTTPS}}
    bind: 127.0.0.1
    hosts: [partners.example.com]
    tls:
      mode: MUTUAL
      serverCertificate: {partners_cert}
      privateKey: {partners_key}
      caCertificates: {client_ca}
      caCrl: {client_crl}
      subjectAltNames: [client.partners.example.com]
  - port: {{number: {https_port}, name: https-public, protocol: HTTPS}}
    bind: 127.0.0.1
    hosts: [public.example.com]
    tls: {{mode: OPTIONAL_MUTUAL, serverCertificate: {public_cert}, privateKey: {public_key}, caCertificates: {client_ca}}}
  - port: {{number: {tls_port}, name: tls-httpbin, protocol: TLS}}
    bind: 127.0.0.1
    hosts: ["*"]
    tls: {{mode: SIMPLE, serverCertificate: {db_cert}, privateKey: {db_key}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: httpbin, namespace: default}}
spec:
  hosts: [httpbin.example.com, modern.example.com, partners.example.com, public.example.com]
  gateways: [istio-system/edge]
  http:
  - route:
    - destination: {{host: httpbin.default.svc.cluster.local}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: nginx, namespace: default}}
spec:
  hosts: [nginx.example.com]
  gateways: [istio-system/edge]
  tls:
  - match:
    - port: {https_port}
      sniHosts: [nginx.example.com]
    route:
    - destination: {{host: my-nginx.default.svc.cluster.local, port: {{number: 443}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: legacy, namespace: default}}
spec:
  hosts: [legacy.example.com]
  gateways: [istio-system/edge]
  tls:
  - match:
    - sniHosts: [legacy.example.com]
    route:
    - destination: {{host: legacy.default.svc.cluster.local}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: raw-httpbin, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [istio-system/edge]
  tcp:
  - match: [{{port: {tls_port}}}]
    route:
    - destination: {{host: httpbin.default.svc.cluster.local}}
"""

# Whatever way Envoy refuses a handshake (an alert, or closing the connection).
REFUSED = (ssl.SSLError, ConnectionError)


def revocation_list(ca: LocalCa, certificate_path: str, path) -> str:
    """A CRL of ca revoking the certificate in certificate_path; its file."""
    with open(certificate_path, "rb") as handle:
        revoked = x509.load_pem_x509_certificate(handle.read())
    now = datetime.datetime.now(datetime.timezone.utc)
    entry = x509.RevokedCertificateBuilder().serial_number(revoked.serial_number).revocation_date(now - datetime.timedelta(minutes=1)).build()
    crl = (
        x509.CertificateRevocationListBuilder().issuer_name(ca.name).last_update(now - datetime.timedelta(minutes=1))
        .next_update(now + datetime.timedelta(hours=1)).add_revoked_certificate(entry).sign(ca.key, hashes.SHA256())
    )
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return str(path)


class Edge:
    """The running gateway: its ports, the CAs, the backends."""

    def __init__(self, tmp_path_factory):
        self.lab = MeshLab(tmp_path_factory.mktemp("gateway-tls"))
        self.servers: list[TlsServer] = []
        try:
            self._start(tmp_path_factory)
        except BaseException:
            self.close()
            raise

    def _start(self, tmp_path_factory) -> None:
        self.server_ca = LocalCa(tmp_path_factory.mktemp("server-ca"))
        self.client_ca = LocalCa(tmp_path_factory.mktemp("client-ca"))
        self.stranger_ca = LocalCa(tmp_path_factory.mktemp("stranger-ca"))
        self.httpbin = self.lab.backend("httpbin", "httpbin-1")
        self.nginx = TlsServer(self.server_ca, "nginx", ["nginx.example.com"])
        self.legacy = TlsServer(self.server_ca, "legacy", ["legacy.example.com"])
        self.servers += [self.nginx, self.legacy]
        certificates = {}
        for label in ("modern", "partners", "public", "db"):
            certificates[f"{label}_cert"], certificates[f"{label}_key"] = self.server_ca.issue(label, [f"{label}.example.com"])
        self.revoked_client = self.client_ca.issue("client-revoked", ["client.partners.example.com"])
        client_crl = revocation_list(self.client_ca, self.revoked_client[0], tmp_path_factory.mktemp("crl") / "client-crl.pem")
        offset = free_offset()
        self.http_port, self.https_port, self.tls_port = free_port(), free_port(), free_port()
        self.lab.write_mesh(MESH.format(
            httpbin=self.httpbin.port, nginx=self.nginx.port, legacy=self.legacy.port, offset=offset,
            http_port=self.http_port, https_port=self.https_port, tls_port=self.tls_port, client_ca=self.client_ca.path,
            client_crl=client_crl, **certificates,
        ))
        self.envoy = self.lab.proxy("edge.istio-system", 15000 + offset)

    def close(self) -> None:
        self.lab.close()
        for server in self.servers:
            server.close()


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    running = Edge(tmp_path_factory)
    yield running
    running.close()


def tls_get(port: int, server_name: str, ca_path: str, client: tuple[str, str] | None = None, max_version=None) -> tuple[int, dict, str, str]:
    """GET / over TLS to 127.0.0.1:port with SNI server_name, checking the server against
    ca_path and the name; client: a certificate and key to present -> (status, the JSON
    answer, the server certificate's common name, the TLS version)."""
    context = ssl.create_default_context(cafile=ca_path)
    if client:
        context.load_cert_chain(*client)
    if max_version:
        context.maximum_version = max_version
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname=server_name)
        subject = dict(item[0] for item in connection.sock.getpeercert()["subject"])
        version = connection.sock.version()
        connection.request("GET", "/", headers={"Host": server_name})
        response = connection.getresponse()
        return response.status, json.loads(response.read()), subject["commonName"], version
    finally:
        connection.close()


def test_passthrough_hands_each_name_to_its_backend_untouched(edge):
    """The client completes TLS with the backend the SNI names: its certificate, its answer,
    the name it was asked for; the gateway holds no certificate for these names."""
    status, body, common_name, _ = tls_get(edge.https_port, "nginx.example.com", edge.server_ca.path)
    assert (status, body, common_name) == (200, {"server": "nginx", "sni": "nginx.example.com", "host": "nginx.example.com"}, "nginx")
    status, body, common_name, _ = tls_get(edge.https_port, "legacy.example.com", edge.server_ca.path)
    assert (status, body["server"], common_name) == (200, "legacy", "legacy")


def test_passthrough_gives_nothing_to_a_name_no_server_serves(edge):
    seen = len(edge.nginx.server_names) + len(edge.legacy.server_names)
    with pytest.raises(REFUSED):
        tls_get(edge.https_port, "unknown.example.com", edge.server_ca.path)
    assert len(edge.nginx.server_names) + len(edge.legacy.server_names) == seen


def test_mutual_accepts_a_client_certificate_signed_by_its_ca(edge):
    client = edge.client_ca.issue("client-good", ["client.partners.example.com"])
    status, body, common_name, _ = tls_get(edge.https_port, "partners.example.com", edge.server_ca.path, client)
    assert (status, body["service"], common_name) == (200, "httpbin", "partners")


@pytest.mark.parametrize("who", ["no certificate", "another CA", "another name", "revoked"])
def test_mutual_refuses_a_client_without_the_right_certificate(edge, who):
    """No certificate, one from a CA the server does not trust, one from its CA whose name is
    not among subjectAltNames, or one caCrl revokes: the handshake fails and no request
    reaches httpbin."""
    client = {
        "no certificate": None,
        "revoked": edge.revoked_client,
        "another CA": edge.stranger_ca.issue("client-stranger", ["client.partners.example.com"]),
        "another name": edge.client_ca.issue("client-other", ["other.partners.example.com"]),
    }[who]
    before = edge.httpbin.count
    with pytest.raises(REFUSED):
        tls_get(edge.https_port, "partners.example.com", edge.server_ca.path, client)
    assert edge.httpbin.count == before


def test_optional_mutual_takes_clients_without_a_certificate_and_refuses_wrong_ones(edge):
    status, body, common_name, _ = tls_get(edge.https_port, "public.example.com", edge.server_ca.path)
    assert (status, body["service"], common_name) == (200, "httpbin", "public")
    good = edge.client_ca.issue("client-public", ["anyone.example.com"])
    assert tls_get(edge.https_port, "public.example.com", edge.server_ca.path, good)[0] == 200
    with pytest.raises(REFUSED):
        tls_get(edge.https_port, "public.example.com", edge.server_ca.path, edge.stranger_ca.issue("client-wrong", ["anyone.example.com"]))


def test_min_protocol_version_refuses_older_clients(edge):
    status, _, common_name, version = tls_get(edge.https_port, "modern.example.com", edge.server_ca.path)
    assert (status, common_name, version) == (200, "modern", "TLSv1.3")
    with pytest.raises(REFUSED):
        tls_get(edge.https_port, "modern.example.com", edge.server_ca.path, max_version=ssl.TLSVersion.TLSv1_2)
    # The other servers of the port keep the default floor, TLS 1.2.
    assert tls_get(edge.https_port, "public.example.com", edge.server_ca.path, max_version=ssl.TLSVersion.TLSv1_2)[3] == "TLSv1.2"


def test_tls_server_terminates_and_forwards_the_bytes(edge):
    """Protocol TLS, mode SIMPLE: the gateway presents its certificate and hands the
    plaintext to the tcp route's service (here an HTTP app, which answers the request)."""
    status, body, common_name, _ = tls_get(edge.tls_port, "db.example.com", edge.server_ca.path)
    assert (status, body["service"], common_name) == (200, "httpbin", "db")


def test_https_redirect_answers_301_with_the_https_url(edge):
    before = edge.httpbin.count
    status, _, headers = request(edge.http_port, "/status/200?x=1", host="httpbin.example.com")
    assert (status, headers["location"]) == (301, "https://httpbin.example.com/status/200?x=1")
    assert edge.httpbin.count == before


MESH_IDENTITY = """
apiVersion: meshwright.io/v1alpha1
kind: MeshConfig
metadata: {{name: mesh}}
spec:
  certificates: {{dir: ../certs}}
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
  name: internal
  namespace: istio-system
  annotations: {{meshwright.io/port-offset: "{offset}"}}
spec:
  selector: {{istio: internalgateway}}
  servers:
  - port: {{number: {https_port}, name: https, protocol: HTTPS}}
    bind: 127.0.0.1
    hosts: [internal.example.com]
    tls: {{mode: ISTIO_MUTUAL, subjectAltNames: ["{frontend}"]}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: httpbin, namespace: default}}
spec:
  hosts: [internal.example.com]
  gateways: [istio-system/internal]
  http:
  - route:
    - destination: {{host: httpbin.default.svc.cluster.local}}
"""
FRONTEND_ID = "spiffe://cluster.local/ns/shop/sa/frontend"
# A standalone gateway's identity: its namespace and the service account Istio's install gives it.
GATEWAY_ID = "spiffe://cluster.local/ns/istio-system/sa/internal-service-account"


@pytest.fixture
def istio_mutual(lab, tmp_path):
    """A gateway whose ISTIO_MUTUAL server presents its certificate from the mesh CA and
    takes only the frontend's; returns (its port, the mesh CA's site, the roots' file)."""
    root = ca.make_root("cluster.local")
    site = ca.make_intermediate(root, "site-a", trust_domains=["cluster.local"])
    httpbin = lab.backend("httpbin", "httpbin-1")
    offset, https_port = free_offset(), free_port()
    lab.write_mesh(MESH_IDENTITY.format(httpbin=httpbin.port, offset=offset, https_port=https_port, frontend=FRONTEND_ID))
    key = csr.make_private_key()
    chain = sign_proxy_csr(load_mesh([lab.mesh_path]), "internal.istio-system", csr.make_csr(key, GATEWAY_ID), site)
    store.write_workload_certificates(str(tmp_path / "certs"), key, chain, bundle.trust_bundle(root.certificate_pem()))
    lab.proxy("internal.istio-system", 15000 + offset)
    roots = tmp_path / "roots.pem"
    roots.write_bytes(root.certificate_pem())
    return https_port, site, str(roots)


def mesh_client(tmp_path, site, spiffe_id: str) -> tuple[str, str]:
    """A certificate for spiffe_id from the mesh CA, and its key: (certificate chain, key) files."""
    key = csr.make_private_key()
    chain = sign_csr(csr.make_csr(key, spiffe_id), spiffe_id, site)
    name = spiffe_id.rsplit("/", 1)[-1]
    chain_path, key_path = tmp_path / f"{name}-chain.pem", tmp_path / f"{name}-key.pem"
    chain_path.write_bytes(chain)
    key_path.write_bytes(key)
    return str(chain_path), str(key_path)


def mesh_get(port: int, roots: str, client: tuple[str, str] | None) -> tuple[int, str]:
    """GET / to internal.example.com over mTLS -> (status, the gateway certificate's URI SAN)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # a mesh certificate names a SPIFFE ID, checked by the caller
    context.load_verify_locations(roots)
    if client:
        context.load_cert_chain(*client)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="internal.example.com")
        peer = dict(connection.sock.getpeercert()["subjectAltName"]).get("URI", "")
        connection.request("GET", "/", headers={"Host": "internal.example.com"})
        response = connection.getresponse()
        response.read()
        return response.status, peer
    finally:
        connection.close()


def test_istio_mutual_takes_the_mesh_identity_it_names(istio_mutual, tmp_path):
    """The gateway presents its own mesh certificate (its SPIFFE ID); the frontend's mesh
    certificate gets in; another workload's, no certificate, or the right name from a CA
    outside the mesh are refused."""
    port, site, roots = istio_mutual
    assert mesh_get(port, roots, mesh_client(tmp_path, site, FRONTEND_ID)) == (200, GATEWAY_ID)
    with pytest.raises(REFUSED):
        mesh_get(port, roots, mesh_client(tmp_path, site, "spiffe://cluster.local/ns/shop/sa/intruder"))
    with pytest.raises(REFUSED):
        mesh_get(port, roots, None)
    rogue = ca.make_root("cluster.local", common_name="rogue root")
    with pytest.raises(REFUSED):
        mesh_get(port, roots, mesh_client(tmp_path, rogue, FRONTEND_ID))
