"""Istio's mutual TLS and authorization tasks (Mutual TLS Migration, Authorization for HTTP
traffic), on real Envoy with certificates from meshwright's own mesh CA.

A server sidecar (STRICT PeerAuthentication) fronts an app; two client sidecars (service
accounts `client` and `intruder`) and an ingress gateway (TLS SIMPLE outside, mTLS inside)
call it through auto mTLS. An AuthorizationPolicy lets only `client` and the gateway in.
Every proxy's key and CSR are made as on its host, signed for the identity of its
WorkloadEntry, and written to its certs directory, which Envoy reads through SDS.
"""

from __future__ import annotations

import datetime
import http.client
import json
import os
import socket
import ssl
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from meshwright.deliver.bundle import load_mesh
from meshwright.deliver.file_set import write_atomic
from meshwright.deliver.identity import proxy_spiffe_id, sign_proxy_csr
from meshwright.pki import bundle, ca, csr, info, store
from meshwright.pki.workload import sign_csr
from tests.harness import Backend, Envoy, free_offset, free_port, render, request

MESH = """
apiVersion: meshwright.io/v1alpha1
kind: MeshConfig
metadata: {{name: mesh}}
spec:
  certificates: {{dir: ../certs}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: server, namespace: default}}
spec:
  hosts: [server.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: server}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: server, namespace: default, annotations: {{meshwright.io/port-offset: "{server_offset}"}}}}
spec: {{address: 127.0.0.1, ports: {{http: {inbound}}}, labels: {{app: server}}, serviceAccount: server}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: server, namespace: default}}
spec:
  workloadSelector: {{labels: {{app: server}}}}
  ingress:
  - port: {{number: {inbound}, protocol: HTTP, name: http}}
    bind: 127.0.0.1
    defaultEndpoint: 127.0.0.1:{app}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: client, namespace: default, annotations: {{meshwright.io/port-offset: "{client_offset}"}}}}
spec: {{address: 127.0.0.1, labels: {{app: client}}, serviceAccount: client}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: intruder, namespace: default, annotations: {{meshwright.io/port-offset: "{intruder_offset}"}}}}
spec: {{address: 127.0.0.1, labels: {{app: intruder}}, serviceAccount: intruder}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: default}}
spec:
  mtls: {{mode: {mode}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: server, namespace: default}}
spec:
  selector: {{matchLabels: {{app: server}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{principals: [cluster.local/ns/default/sa/client, cluster.local/ns/istio-system/sa/edge-service-account]}}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: istio-system, annotations: {{meshwright.io/port-offset: "{edge_offset}"}}}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {https}, name: https, protocol: HTTPS}}
    bind: 127.0.0.1
    hosts: [shop.example.com]
    tls: {{mode: SIMPLE, serverCertificate: {edge_cert}, privateKey: {edge_key}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop, namespace: default}}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/edge]
  http:
  - route:
    - destination: {{host: server.default.svc.cluster.local}}
"""

SERVER_ID = "spiffe://cluster.local/ns/default/sa/server"
CLIENT_ID = "spiffe://cluster.local/ns/default/sa/client"
PROXIES = ("server.default", "client.default", "intruder.default", "edge.istio-system")


def distinct_offset(taken: set[int]) -> int:
    """A free port offset whose well-known ports no other proxy of this mesh has taken."""
    while True:
        offset = free_offset()
        ports = {base + offset for base in (15000, 15001, 15006, 15021, 15090)}
        if not ports & taken:
            taken |= ports
            return offset


def distinct_port(taken: set[int]) -> int:
    while True:
        port = free_port()
        if port not in taken:
            taken.add(port)
            return port


class Mesh:
    """The running mesh: its CA, proxies (Envoy by proxy id), ports and the server's app."""

    def __init__(self, root_dir, mode: str = "STRICT", running: tuple[str, ...] = PROXIES):
        """running: the proxies to start (each Envoy takes inotify instances, a per-user
        limit shared with every other Envoy on the machine)."""
        self.root_dir = root_dir
        self.root = ca.make_root("cluster.local")
        self.site = ca.make_intermediate(self.root, "site-a", trust_domains=["cluster.local"])
        self.envoys: dict[str, Envoy] = {}
        self.app = Backend("server", "server-1")
        try:
            self.start(mode, running)
        except BaseException:
            self.close()
            raise

    def start(self, mode: str, running: tuple[str, ...]) -> None:
        taken: set[int] = set()
        self.offsets = {proxy: distinct_offset(taken) for proxy in PROXIES}
        self.inbound, self.https = distinct_port(taken), distinct_port(taken)
        root_dir = self.root_dir
        edge_cert, edge_key = self.edge_certificate()
        mesh_path = os.path.join(root_dir, "mesh.yaml")
        with open(mesh_path, "w") as handle:
            handle.write(MESH.format(
                mode=mode, inbound=self.inbound, app=self.app.port, https=self.https, edge_cert=edge_cert, edge_key=edge_key,
                **{f"{proxy.split('.')[0]}_offset": offset for proxy, offset in self.offsets.items()},
            ))
        self.mesh = load_mesh([mesh_path])
        for proxy in running:
            self.issue(proxy)
            config_dir = os.path.join(root_dir, proxy, "config")
            render(mesh_path, proxy, config_dir)
            self.envoys[proxy] = Envoy(config_dir, 15000 + self.offsets[proxy])

    def certs_dir(self, proxy: str) -> str:
        return os.path.join(self.root_dir, proxy, "certs")

    def issue(self, proxy: str) -> bytes:
        """What the host does (key and CSR) and the controller (signing for the proxy's
        WorkloadEntry identity); the files land in the proxy's certs directory."""
        key = csr.make_private_key()
        request_pem = csr.make_csr(key, proxy_spiffe_id(self.mesh, proxy))
        chain = sign_proxy_csr(self.mesh, proxy, request_pem, self.site)
        store.write_workload_certificates(self.certs_dir(proxy), key, chain, bundle.trust_bundle(self.root.certificate_pem()))
        return chain

    def edge_certificate(self) -> tuple[str, str]:
        """The gateway's own certificate for shop.example.com (not a mesh certificate)."""
        key_pem = csr.make_private_key()
        key = serialization.load_pem_private_key(key_pem, None)
        now = datetime.datetime.now(datetime.timezone.utc)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shop.example.com")])
        certificate = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("shop.example.com")]), critical=False)
            .sign(key, hashes.SHA256())
        )
        cert_path, key_path = os.path.join(self.root_dir, "shop.pem"), os.path.join(self.root_dir, "shop-key.pem")
        write_atomic(cert_path, ca.certificate_pem(certificate).decode())
        write_atomic(key_path, key_pem.decode(), mode=0o600)
        return cert_path, key_path

    def close(self) -> None:
        for envoy in self.envoys.values():
            envoy.stop()
        self.app.close()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    running = Mesh(str(tmp_path_factory.mktemp("mtls")))
    yield running
    running.close()


def outbound_port(mesh, proxy: str) -> int:
    return 15001 + mesh.offsets[proxy]


def call_server(mesh, proxy: str) -> tuple[int, dict, dict]:
    return request(outbound_port(mesh, proxy), "/orders", host="server.default.svc.cluster.local")


def tls_client(mesh, chain: bytes, key: bytes, name: str) -> ssl.SSLContext:
    """A client context with a certificate, trusting the mesh root (the server's identity is
    its URI SAN, checked by the caller, so no hostname check)."""
    directory = os.path.join(mesh.root_dir, "clients", name)
    os.makedirs(directory, exist_ok=True)
    store.write_workload_certificates(directory, key, chain, mesh.root.certificate_pem())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(os.path.join(directory, store.ROOTS_FILE))
    context.load_cert_chain(os.path.join(directory, store.CHAIN_FILE), os.path.join(directory, store.KEY_FILE))
    return context


def mtls_get(port: int, context: ssl.SSLContext, path: str = "/direct") -> tuple[int, str, str]:
    """(status, body, server SPIFFE ID) of one GET over mTLS to 127.0.0.1:port."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))
        peer = dict(connection.sock.getpeercert()["subjectAltName"]).get("URI", "")
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode(), peer
    finally:
        connection.close()


def cluster_stat(envoy: Envoy, cluster: str, suffix: str) -> int:
    """A cluster's stat, whether named by the cluster or by its alt_stat_name (the cluster
    name followed by ';'-separated Istio tags)."""
    return sum(
        value for name, value in envoy.stats().items()
        if (name.startswith(f"cluster.{cluster};") or name.startswith(f"cluster.{cluster}.")) and name.endswith(f".{suffix}")
    )


def wait_for(predicate, timeout: float = 10, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def test_sidecar_to_sidecar_traffic_is_mutual_tls(mesh):
    """Auto mTLS: the client sidecar reaches the STRICT server with its certificate; both
    sides count TLS handshakes, and the app gets the request."""
    server, client = mesh.envoys["server.default"], mesh.envoys["client.default"]
    listener = f"listener.127.0.0.1_{mesh.inbound}"
    cluster = "outbound|80||server.default.svc.cluster.local"
    before = (server.stat(f"{listener}.ssl.handshake"), cluster_stat(client, cluster, "ssl.handshake"), mesh.app.count)
    for _ in range(3):
        status, body, _ = call_server(mesh, "client.default")
        assert (status, body.get("service")) == (200, "server")
    assert server.stat(f"{listener}.ssl.handshake") > before[0]
    assert cluster_stat(client, cluster, "ssl.handshake") > before[1]
    # The endpoint's tlsMode=istio metadata chose the mTLS transport socket.
    assert cluster_stat(client, cluster, "tlsMode-istio.total_match_count") >= 1
    assert cluster_stat(client, cluster, "upstream_cx_total") >= 1
    assert mesh.app.count == before[2] + 3


def test_strict_refuses_a_plaintext_client(mesh):
    """STRICT: a plaintext request straight to the server's inbound port never reaches the app."""
    before = mesh.app.count
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected, OSError)):
        request(mesh.inbound, "/plaintext")
    assert mesh.app.count == before


def test_strict_refuses_a_certificate_from_another_ca(mesh):
    """A client certificate with the right SPIFFE ID but from a CA outside the trust bundle
    fails the handshake; the same client with a mesh certificate gets through (and sees the
    server's SPIFFE ID)."""
    server = mesh.envoys["server.default"]
    listener = f"listener.127.0.0.1_{mesh.inbound}"
    rogue = ca.make_root("cluster.local", common_name="rogue root")
    key = csr.make_private_key()
    rogue_chain = sign_csr(csr.make_csr(key, CLIENT_ID), CLIENT_ID, rogue)
    before, failures = mesh.app.count, server.stat(f"{listener}.ssl.fail_verify_error")
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
        mtls_get(mesh.inbound, tls_client(mesh, rogue_chain, key, "rogue"))
    assert mesh.app.count == before
    assert wait_for(lambda: server.stat(f"{listener}.ssl.fail_verify_error") > failures)

    mesh_chain = sign_csr(csr.make_csr(key, CLIENT_ID), CLIENT_ID, mesh.site)
    status, _, peer = mtls_get(mesh.inbound, tls_client(mesh, mesh_chain, key, "good"))
    assert (status, peer) == (200, SERVER_ID)
    assert mesh.app.count == before + 1


def test_authorization_lets_only_the_allowed_principal_in(mesh):
    """ALLOW principals [client]: the intruder's sidecar, with a valid mesh certificate, gets
    403 from the server's RBAC filter, which counts it; the app never sees it."""
    server = mesh.envoys["server.default"]
    stats = f"http.inbound_{mesh.inbound}.rbac.allow."
    denied, allowed, before = server.stat(stats + "denied"), server.stat(stats + "allowed"), mesh.app.count
    status, _, _ = call_server(mesh, "intruder.default")
    assert status == 403
    assert server.stat(stats + "denied") == denied + 1
    assert mesh.app.count == before
    status, _, _ = call_server(mesh, "client.default")
    assert status == 200
    assert server.stat(stats + "allowed") == allowed + 1


def test_gateway_terminates_tls_and_speaks_mtls_into_the_mesh(mesh):
    """The gateway takes the outside client's TLS (SIMPLE, its own certificate) and calls the
    STRICT server with its mesh certificate; the server allows its principal."""
    edge = mesh.envoys["edge.istio-system"]
    context = ssl.create_default_context(cafile=os.path.join(mesh.root_dir, "shop.pem"))
    connection = http.client.HTTPConnection("127.0.0.1", mesh.https, timeout=10)
    try:
        connection.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", mesh.https), timeout=10), server_hostname="shop.example.com")
        connection.request("GET", "/from-outside", headers={"Host": "shop.example.com"})
        response = connection.getresponse()
        assert (response.status, json.loads(response.read())["service"]) == (200, "server")
    finally:
        connection.close()
    assert cluster_stat(edge, "outbound|80||server.default.svc.cluster.local", "ssl.handshake") >= 1


def _served_serial(envoy: Envoy) -> str:
    """The serial number of the certificate Envoy presents (admin /certs)."""
    certificates = json.loads(envoy.admin("/certs"))["certificates"]
    chains = [chain for entry in certificates for chain in entry.get("cert_chain", [])]
    serials = {chain["serial_number"] for chain in chains if any(san.get("uri") == SERVER_ID for san in chain.get("subject_alt_names", []))}
    assert len(serials) == 1, serials
    return serials.pop()


def test_new_certificate_is_used_without_restart(mesh):
    """A renewed certificate written into the certs directory is picked up through the SDS
    file watch: admin /certs shows the new serial, same process, and new connections get it."""
    server = mesh.envoys["server.default"]
    pid, old_serial = server.process.pid, _served_serial(server)
    chain = mesh.issue("server.default")
    new_serial = info.serial_hex(info.first_certificate(chain))
    assert new_serial != old_serial
    assert wait_for(lambda: _served_serial(server) == new_serial), f"still serving {_served_serial(server)}"
    assert server.process.poll() is None and server.process.pid == pid
    key = csr.make_private_key()
    context = tls_client(mesh, sign_csr(csr.make_csr(key, CLIENT_ID), CLIENT_ID, mesh.site), key, "after-rotation")
    connection = context.wrap_socket(socket.create_connection(("127.0.0.1", mesh.inbound), timeout=10))
    try:
        presented = info.serial_hex(x509.load_der_x509_certificate(connection.getpeercert(binary_form=True)))
    finally:
        connection.close()
    assert presented == new_serial
    status, _, _ = call_server(mesh, "client.default")
    assert status == 200


def test_permissive_takes_plaintext_and_mtls_on_one_port(tmp_path):
    """PERMISSIVE (the migration mode): a plaintext request reaches the server's HTTP filters
    too, where, having no peer identity, the principal-based policy denies it (403, not a
    reset as under STRICT); the client sidecar still comes in with mTLS and gets 200."""
    permissive = Mesh(str(tmp_path), mode="PERMISSIVE", running=("server.default", "client.default"))
    try:
        server = permissive.envoys["server.default"]
        listener = f"listener.127.0.0.1_{permissive.inbound}"
        status, body, _ = request(permissive.inbound, "/plaintext")
        assert (status, body.get("raw")) == (403, "RBAC: access denied")
        handshakes = server.stat(f"{listener}.ssl.handshake")
        status, _, _ = call_server(permissive, "client.default")
        assert status == 200
        assert server.stat(f"{listener}.ssl.handshake") == handshakes + 1
        assert permissive.app.count == 1
    finally:
        permissive.close()


def tls12_client(mesh, cipher: str, name: str, server_hostname_check: bool = False) -> ssl.SSLContext:
    """A mesh client (client's certificate) that offers only TLS 1.2 and one cipher suite."""
    key = csr.make_private_key()
    context = tls_client(mesh, sign_csr(csr.make_csr(key, CLIENT_ID), CLIENT_ID, mesh.site), key, name)
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(cipher + ":@SECLEVEL=0")
    return context


@pytest.mark.parametrize("cipher", ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA"])
def test_tls_refuses_cbc_sha1_suites(mesh, cipher):
    """Istio's TLS parameters on the inbound mTLS listener and the gateway's TLS server: a
    TLS 1.2 client offering only a CBC-SHA1 suite fails the handshake (Envoy's defaults
    accepted it); the same client with ECDHE-ECDSA-AES128-GCM-SHA256 gets through."""
    with pytest.raises(ssl.SSLError):
        mtls_get(mesh.inbound, tls12_client(mesh, cipher, f"cbc-{cipher}"))
    gateway = ssl.create_default_context(cafile=os.path.join(mesh.root_dir, "shop.pem"))
    gateway.minimum_version = gateway.maximum_version = ssl.TLSVersion.TLSv1_2
    gateway.set_ciphers(cipher + ":@SECLEVEL=0")
    with pytest.raises(ssl.SSLError):
        gateway.wrap_socket(socket.create_connection(("127.0.0.1", mesh.https), timeout=10), server_hostname="shop.example.com").close()
    status, _, peer = mtls_get(mesh.inbound, tls12_client(mesh, "ECDHE-ECDSA-AES128-GCM-SHA256", f"gcm-{cipher}"))
    assert (status, peer) == (200, SERVER_ID)


def test_mesh_mtls_negotiates_tls_1_3(mesh):
    """TLS 1.3 is allowed on both sides: a client that asks for it gets it from the server
    sidecar, and the client sidecar (Envoy's clients stop at TLS 1.2 unless told otherwise)
    speaks TLS 1.3 to it."""
    client = mesh.envoys["client.default"]
    cluster = "outbound|80||server.default.svc.cluster.local"
    status, _, _ = call_server(mesh, "client.default")
    assert status == 200
    # Every handshake of the client sidecar with the server (this one or earlier) was TLS 1.3.
    assert cluster_stat(client, cluster, "ssl.versions.TLSv1.3") >= 1
    assert cluster_stat(client, cluster, "ssl.versions.TLSv1.2") == 0
    key = csr.make_private_key()
    context = tls_client(mesh, sign_csr(csr.make_csr(key, CLIENT_ID), CLIENT_ID, mesh.site), key, "tls13")
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    connection = context.wrap_socket(socket.create_connection(("127.0.0.1", mesh.inbound), timeout=10))
    try:
        assert connection.version() == "TLSv1.3"
    finally:
        connection.close()
