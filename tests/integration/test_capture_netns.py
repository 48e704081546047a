"""iptables capture (interceptionMode REDIRECT) on real Envoy, without Docker: two network
namespaces stand for two hosts, joined by a veth pair on 10.77.0.0/24 (nothing leaves the
machine).

- order host (10.77.0.1): order-1's sidecar; its "app" is a process (uid 0) that calls the
  payment service by name, as an app of a captured host does.
- payment host (10.77.0.2): payment-1's sidecar, its app on 127.0.0.1:9080 only (reachable
  through the sidecar alone), a plain HTTP server on 0.0.0.0:8000 (no mesh port), an HTTPS
  server on 0.0.0.0:443 standing in for external hosts *.wiki.test (a certificate from a CA
  made for the test), and an SSH-like banner on 0.0.0.0:22; over IPv6 (fd77::2, the order host is fd77::1), the plain
  server on [fd77::2]:8000 and the banner on [fd77::2]:22.

Each host gets what the envoy_proxy role ships: the nat rules rendered by Ansible's own
templating from roles/envoy_proxy/templates/capture.rules.j2 with the role's vars, the
names block from tasks/capture.yml, applied by roles/envoy_proxy/files/meshwright_capture.sh;
the proxy's files from the same bundle mesh_render returns, certificates from the mesh CA,
and Envoy runs as uid 1337 (setpriv, no passwd entry needed).

Needs root (network namespaces, iptables); skipped otherwise.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meshwright.deliver.bundle import bundle_mesh, load_mesh
from meshwright.deliver.file_set import write_atomic
from meshwright.deliver.identity import proxy_spiffe_id, sign_proxy_csr
from meshwright.pki import bundle, ca, csr, store
from tests.harness import Envoy

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("iptables-restore") or not shutil.which("setpriv"),
                                reason="needs root, iptables and setpriv (network namespaces)")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROLE = os.path.join(REPO, "roles", "envoy_proxy")
PROXY_UID = 1337
ORDER_ADDRESS, PAYMENT_ADDRESS = "10.77.0.1", "10.77.0.2"
ORDER_ADDRESS6, PAYMENT_ADDRESS6 = "fd77::1", "fd77::2"
PAYMENT = "payment-service.default.svc.cluster.local"
PAYMENT_CLUSTER = f"outbound|80||{PAYMENT}"
LEGACY_CLUSTER = "outbound|2222||legacy.example.com"

MESH = """
apiVersion: meshwright.io/v1alpha1
kind: MeshConfig
metadata: {{name: mesh}}
spec:
  certificates: {{dir: ../certs}}
  outboundTrafficPolicy: {{mode: {policy}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: payment-service, namespace: default}}
spec:
  hosts: [payment-service.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: payment}}}}
---
# A legacy TCP service (its app speaks HTTP, carried as TCP) known by its addresses only (a CIDR range, as Istio's external MongoDB
# example): a connection to any address of 10.77.0.0/24 on 2222 is its.
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: legacy-banner, namespace: default}}
spec:
  hosts: [legacy.example.com]
  addresses: [10.77.0.0/24]
  location: MESH_EXTERNAL
  resolution: NONE
  ports: [{{number: 2222, name: tcp-legacy, protocol: tcp}}]
---
# No Sidecar: payment-1's inbound port (9080) comes from the service's port named http.
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: payment-1
  namespace: default
  annotations: {{sidecar.istio.io/interceptionMode: REDIRECT}}
spec: {{address: 10.77.0.2, ports: {{http: 9080}}, labels: {{app: payment}}, serviceAccount: payment}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: order-1
  namespace: default
  annotations: {{sidecar.istio.io/interceptionMode: REDIRECT}}
spec: {{address: 10.77.0.1, labels: {{app: order}}, serviceAccount: order}}
---
# Istio's wildcard egress: any *.wiki.test name over TLS, to the address the app connected to.
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: wiki, namespace: default}}
spec:
  hosts: ["*.wiki.test"]
  location: MESH_EXTERNAL
  resolution: NONE
  ports: [{{number: 443, name: https, protocol: HTTPS}}]
---
# Port 9080 takes mTLS only: a plaintext caller is turned away; other ports pass through.
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: payment, namespace: default}}
spec:
  selector: {{matchLabels: {{app: payment}}}}
  mtls: {{mode: PERMISSIVE}}
  portLevelMtls: {{9080: {{mode: STRICT}}}}
"""

# The payment host's processes: "http:NAME:HOST:PORT" answers JSON naming itself and the
# peer it saw; "banner:NAME:HOST:PORT" writes one SSH-like line with the peer.
APPS = r"""
import http.server, json, os, socket, socketserver, ssl, sys, threading

class Http(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"app": self.server.name, "peer": self.client_address[0],
                           "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

class Banner(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(f"SSH-2.0-{self.server.name} {self.client_address[0]}\r\n".encode())

class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = daemon_threads = True

class TlsServer(Server):
    def get_request(self):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(os.environ["TLS_CERT"], os.environ["TLS_KEY"])
        sock, address = self.socket.accept()
        sock.settimeout(5)
        return context.wrap_socket(sock, server_side=True), address

class Server6(Server):
    address_family = socket.AF_INET6

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()

for spec in sys.argv[1:]:
    kind, name, address = spec.split(":", 2)
    host, port = address.rsplit(":", 1)
    server_class = Server6 if ":" in host else TlsServer if kind == "https" else Server
    server = server_class((host, int(port)), Banner if kind == "banner" else Http)
    server.name = name
    threading.Thread(target=server.serve_forever, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

# An app of the order host: one HTTP GET (no proxy from the environment), one banner read, or
# a TLS handshake (SNI and CA file after the target) that reports the server's certificate.
CLIENT = r"""
import json, socket, ssl, sys, urllib.error, urllib.request
kind, target = sys.argv[1:3]
try:
    if kind == "tls":
        host, port = target.rsplit(":", 1)
        context = ssl.create_default_context(cafile=sys.argv[4])
        with context.wrap_socket(socket.create_connection((host, int(port)), timeout=5), server_hostname=sys.argv[3]) as sock:
            out = {"certificate": dict(item[0] for item in sock.getpeercert()["subject"])["commonName"]}
    elif kind == "http":
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(target, timeout=5) as response:
            out = {"status": response.status, "body": json.loads(response.read())}
    else:
        host, port = target.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            out = {"banner": sock.recv(200).decode().strip()}
except urllib.error.HTTPError as error:
    out = {"status": error.code}
except (OSError, ssl.SSLError) as error:
    out = {"error": repr(error)}
print(json.dumps(out))
"""

CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def in_netns(name: str):
    """This thread in network namespace `name` (sockets made inside stay in it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/thread-self/ns/net") as here, open(f"/run/netns/{name}") as there:
        if libc.setns(there.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
        try:
            yield
        finally:
            libc.setns(here.fileno(), CLONE_NEWNET)


class NetnsEnvoy(Envoy):
    """Envoy as the proxy's user inside a host's namespace; its admin port is that host's."""

    def __init__(self, config_dir: str, netns: str):
        self.netns = netns
        wrapper = ("ip", "netns", "exec", netns, "setpriv", f"--reuid={PROXY_UID}", f"--regid={PROXY_UID}", "--clear-groups")
        super().__init__(config_dir, 15000, wrapper)

    def admin(self, path: str) -> str:
        with in_netns(self.netns):
            return super().admin(path)


def run(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)


# Run in a process of its own: importing Ansible's controller side into the test process would
# make the module tests' warnings print instead of landing in their results.
ROLE_FILES = r"""
import json, os, sys
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

role, proxy, settings = sys.argv[1], sys.argv[2], json.load(sys.stdin)
loader = DataLoader()
variables = {
    **loader.load_from_file(os.path.join(role, "defaults", "main.yml"), trusted_as_template=True),
    **loader.load_from_file(os.path.join(role, "vars", "main.yml"), trusted_as_template=True),
    "ansible_managed": "Ansible managed", "envoy_proxy_name": proxy, "envoy_proxy_bundle": {"capture": settings},
}
templar = Templar(loader=loader, variables=variables)
with open(os.path.join(role, "templates", "capture.rules.j2")) as handle:
    rules = templar.template(trust_as_template(handle.read()))
with open(os.path.join(role, "templates", "capture.ip6tables.rules.j2")) as handle:
    rules6 = templar.template(trust_as_template(handle.read()))
tasks = loader.load_from_file(os.path.join(role, "tasks", "capture.yml"), trusted_as_template=True)
hosts_task = next(task for task in tasks if task["name"] == "Write the service names and their VIPs")
json.dump([rules, rules6, templar.template(hosts_task["ansible.builtin.copy"]["content"])], sys.stdout)
"""


def role_files(settings: dict, proxy: str) -> tuple[str, str, str]:
    """(iptables.rules, ip6tables.rules, hosts) as the envoy_proxy role writes them for this
    bundle's capture settings: its templates and its task's content, rendered by Ansible with
    the role's vars."""
    rendered = run(sys.executable, "-c", ROLE_FILES, ROLE, proxy, input=json.dumps(settings))
    rules, rules6, hosts = json.loads(rendered.stdout)
    return rules, rules6, hosts


def external_tls_files(directory: str) -> tuple[str, str, str]:
    """(CA, certificate, key) files for the *.wiki.test server, from a CA made for the test."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "external test CA")])

    def signed(subject, public_key, extension, critical):
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name).public_key(public_key)
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
                .not_valid_after(now + datetime.timedelta(hours=1)).add_extension(extension, critical=critical).sign(ca_key, hashes.SHA256()))

    ca_cert = signed(ca_name, ca_key.public_key(), x509.BasicConstraints(ca=True, path_length=None), True)
    cert = signed(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wiki-server")]), key.public_key(), x509.SubjectAlternativeName([x509.DNSName("*.wiki.test")]), False)
    paths = [os.path.join(directory, name) for name in ("wiki-ca.pem", "wiki.pem", "wiki-key.pem")]
    for path, content in zip(paths, (ca_cert.public_bytes(serialization.Encoding.PEM), cert.public_bytes(serialization.Encoding.PEM),
                                     key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))):
        with open(path, "wb") as handle:
            handle.write(content)
    return paths[0], paths[1], paths[2]


class Hosts:
    """The two hosts: namespaces, capture, certificates, apps and sidecars."""

    def __init__(self):
        self.tag = str(os.getpid())[-6:]
        self.order_ns, self.payment_ns = f"mw-order-{self.tag}", f"mw-payment-{self.tag}"
        self.root = tempfile.mkdtemp(prefix="meshwright-capture-")
        os.chmod(self.root, 0o755)  # the proxy's user reads its files below
        self.mesh_path = os.path.join(self.root, "mesh.yaml")
        self.envoys: dict[str, NetnsEnvoy] = {}
        self.apps: subprocess.Popen | None = None

    def start(self) -> None:
        self.network(self.tag)
        self.write_mesh("ALLOW_ANY")
        self.bundles = self.render()
        root = ca.make_root("cluster.local")
        authority = ca.make_intermediate(root, "site-a", trust_domains=["cluster.local"])
        mesh = load_mesh([self.mesh_path])
        for proxy, netns in (("order-1.default", self.order_ns), ("payment-1.default", self.payment_ns)):
            self.capture(proxy, netns)
            key = csr.make_private_key()
            chain = sign_proxy_csr(mesh, proxy, csr.make_csr(key, proxy_spiffe_id(mesh, proxy)), authority)
            store.write_workload_certificates(os.path.join(self.root, proxy, "certs"), key, chain,
                                              bundle.trust_bundle(root.certificate_pem()), owner=(PROXY_UID, PROXY_UID))
        self.start_apps()
        for proxy, netns in (("payment-1.default", self.payment_ns), ("order-1.default", self.order_ns)):
            self.envoys[proxy] = NetnsEnvoy(self.config_dir(proxy), netns)

    def network(self, tag: str) -> None:
        for netns in (self.order_ns, self.payment_ns):
            run("ip", "netns", "add", netns)
            run("ip", "-n", netns, "link", "set", "lo", "up")
            # `ip netns exec` mounts /etc/netns/NAME/* on /etc/*: each host's own names, and
            # DNS on its own loopback (nothing answers: an unknown name fails at once).
            os.makedirs(f"/etc/netns/{netns}", exist_ok=True)
            for name, content in (("hosts", "127.0.0.1 localhost\n"), ("resolv.conf", "nameserver 127.0.0.1\n")):
                with open(f"/etc/netns/{netns}/{name}", "w") as handle:
                    handle.write(content)
        run("ip", "link", "add", f"mwo{tag}", "netns", self.order_ns, "type", "veth", "peer", "name", f"mwp{tag}", "netns", self.payment_ns)
        for netns, device, address, address6 in ((self.order_ns, f"mwo{tag}", ORDER_ADDRESS, ORDER_ADDRESS6),
                                                 (self.payment_ns, f"mwp{tag}", PAYMENT_ADDRESS, PAYMENT_ADDRESS6)):
            run("ip", "-n", netns, "addr", "add", f"{address}/24", "dev", device)
            run("ip", "-n", netns, "addr", "add", f"{address6}/64", "dev", device, "nodad")
            run("ip", "-n", netns, "link", "set", device, "up")
            # A host's default route: a VIP must have some route for connect() to reach the
            # nat OUTPUT chain, which sends it to 15001 before it leaves (the link is the
            # veth pair; nothing is beyond it).
            run("ip", "-n", netns, "route", "add", "default", "dev", device)

    def config_dir(self, proxy: str) -> str:
        return os.path.join(self.root, proxy, "config")

    def write_mesh(self, policy: str, extra: str = "") -> None:
        """The mesh with the MeshConfig's outboundTrafficPolicy, and extra documents."""
        with open(self.mesh_path, "w") as handle:
            handle.write(MESH.format(policy=policy) + extra)

    def render(self, proxies: tuple[str, ...] = ("order-1.default", "payment-1.default")) -> dict:
        """The bundles mesh_render ships, written where each proxy's Envoy watches them."""
        bundles = bundle_mesh([self.mesh_path], {proxy: self.config_dir(proxy) for proxy in proxies})
        for proxy, proxy_bundle in bundles.items():
            os.makedirs(self.config_dir(proxy), mode=0o755, exist_ok=True)
            os.chown(self.config_dir(proxy), PROXY_UID, PROXY_UID)  # Envoy writes its base ID there
            os.chmod(os.path.dirname(self.config_dir(proxy)), 0o755)
            for name, content in sorted(proxy_bundle.files.items()):
                write_atomic(os.path.join(self.config_dir(proxy), name), content)
        return bundles

    def capture(self, proxy: str, netns: str) -> None:
        """What meshwright-capture.service does at boot, with the role's files."""
        capture_dir = os.path.join(self.root, proxy, "capture")
        os.makedirs(capture_dir)
        rules, rules6, hosts = role_files(self.bundles[proxy].capture, proxy)
        for name, content in (("iptables.rules", rules), ("ip6tables.rules", rules6), ("hosts", hosts)):
            with open(os.path.join(capture_dir, name), "w") as handle:
                handle.write(content)
        run("ip", "netns", "exec", netns, "sh", os.path.join(ROLE, "files", "meshwright_capture.sh"), "start",
            env={**os.environ, "MESHWRIGHT_CAPTURE_DIR": capture_dir})

    def start_apps(self) -> None:
        self.tls_ca, cert, key = external_tls_files(self.root)
        self.apps = subprocess.Popen(
            ["ip", "netns", "exec", self.payment_ns, sys.executable, "-c", APPS,
             "http:payment-app:127.0.0.1:9080", "http:plain-web:0.0.0.0:8000", "banner:ssh:0.0.0.0:22", "http:legacy:0.0.0.0:2222",
             "https:wiki:0.0.0.0:443", f"http:plain-web6:{PAYMENT_ADDRESS6}:8000", f"banner:ssh6:{PAYMENT_ADDRESS6}:22"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "TLS_CERT": cert, "TLS_KEY": key})
        line = self.apps.stdout.readline()
        assert line.strip() == "ready", line + self.apps.stdout.read()

    def call(self, kind: str, target: str, *args: str, uid: int = 0) -> dict:
        """One call from an app (uid 0, or another) on the order host."""
        as_user = ("setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups") if uid else ()
        done = run("ip", "netns", "exec", self.order_ns, *as_user, sys.executable, "-I", "-c", CLIENT, kind, target, *args)
        return json.loads(done.stdout)

    def iptables(self, netns: str) -> str:
        return run("ip", "netns", "exec", netns, "iptables-save", "-t", "nat").stdout

    def ip6tables(self, netns: str, *args: str) -> str:
        return run("ip", "netns", "exec", netns, "ip6tables", *args).stdout

    def ipv6_rejected(self, netns: str, chain: str) -> int:
        """Packets the host's IPv6 rules have refused in this chain (its REJECT rule's count)."""
        for line in self.ip6tables(netns, "-n", "-v", "-x", "-L", chain).splitlines():
            if "REJECT" in line:
                return int(line.split()[0])
        raise AssertionError(f"no REJECT rule in {chain} of {netns}")

    def close(self) -> None:
        for envoy in self.envoys.values():
            envoy.stop()
        if self.apps:
            self.apps.kill()
            self.apps.wait()
        for netns in (self.order_ns, self.payment_ns):
            subprocess.run(["ip", "netns", "del", netns], capture_output=True)  # takes the veth pair along
            shutil.rmtree(f"/etc/netns/{netns}", ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def hosts():
    started = Hosts()
    try:
        started.start()
        yield started
    finally:
        started.close()


def counters(envoy: NetnsEnvoy, *names: str) -> dict[str, int]:
    """Envoy counters by name; a cluster's by "cluster:<name>:<stat>" (its labelled stat name)."""
    out = {}
    for name in names:
        if name.startswith("cluster:"):
            _, cluster, stat = name.split(":", 2)
            out[name] = envoy.cluster_stat(cluster, stat)
        else:
            out[name] = envoy.stat(name)
    return out


def grown(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before[name] for name in before}


def test_an_app_calls_a_service_by_name_through_both_sidecars_over_mtls(hosts):
    order, payment = hosts.envoys["order-1.default"], hosts.envoys["payment-1.default"]
    order_stats = ("listener.0.0.0.0_80.downstream_cx_total", "http.outbound_0.0.0.0_80.downstream_rq_total", f"cluster:{PAYMENT_CLUSTER}:upstream_rq_total", f"cluster:{PAYMENT_CLUSTER}:ssl.handshake")
    payment_stats = ("listener.0.0.0.0_15006.downstream_cx_total", "listener.0.0.0.0_15006.ssl.handshake", "cluster:inbound|9080||:upstream_rq_total")
    before = counters(order, *order_stats), counters(payment, *payment_stats)

    answer = hosts.call("http", f"http://{PAYMENT}/pay")

    # The name is in the host's /etc/hosts block at the service's VIP; the app listens on the
    # payment host's loopback only, so only that host's sidecar can have handed it over.
    vip = hosts.bundles["order-1.default"].capture["hosts"][PAYMENT]
    assert vip.startswith("240.240.")
    assert answer["status"] == 200, answer
    assert answer["body"]["app"] == "payment-app" and answer["body"]["peer"] == "127.0.0.1"
    assert "x-request-id" in answer["body"]["headers"]
    # One connection into the order host's 15001, handed to listener 0.0.0.0_80 (which binds
    # no socket of its own) and routed to the service; Envoy's own upstream connection
    # (uid 1337) was not captured again, else the call would loop.
    assert grown(before[0], counters(order, *order_stats)) == dict.fromkeys(order_stats, 1)
    # Into the payment host's 15006 by the original port 9080, which takes mTLS only (STRICT):
    # the order sidecar's auto mTLS knew the port from the service alone (no Sidecar ingress).
    assert grown(before[1], counters(payment, *payment_stats)) == dict.fromkeys(payment_stats, 1)


def test_apps_in_the_services_namespace_call_it_by_its_short_names(hosts):
    for name in ("payment-service", "payment-service.default", "payment-service.default.svc"):
        answer = hosts.call("http", f"http://{name}/pay")
        assert answer["status"] == 200 and answer["body"]["app"] == "payment-app", (name, answer)


def test_other_destinations_pass_through_both_sidecars(hosts):
    order, payment = hosts.envoys["order-1.default"], hosts.envoys["payment-1.default"]
    before = counters(order, "cluster:PassthroughCluster:upstream_cx_total"), counters(payment, "cluster:InboundPassthroughCluster:upstream_cx_total")

    answer = hosts.call("http", f"http://{PAYMENT_ADDRESS}:8000/")

    assert answer["status"] == 200, answer
    # The payment host's sidecar passed it on from 127.0.0.6, Istio's passthrough source.
    assert answer["body"]["app"] == "plain-web" and answer["body"]["peer"] == "127.0.0.6"
    assert grown(before[0], counters(order, "cluster:PassthroughCluster:upstream_cx_total")) == {"cluster:PassthroughCluster:upstream_cx_total": 1}
    assert grown(before[1], counters(payment, "cluster:InboundPassthroughCluster:upstream_cx_total")) == {"cluster:InboundPassthroughCluster:upstream_cx_total": 1}


def test_a_service_picked_by_its_cidr_range_carries_tcp_to_an_address_in_it(hosts):
    """legacy.example.com has no VIP and no name on the host: an app connects to an address
    of its range (10.77.0.0/24) on its port, and the order sidecar takes it as that service's
    (its cluster, not PassthroughCluster), on to the address the app chose."""
    order = hosts.envoys["order-1.default"]
    stats = (f"cluster:{LEGACY_CLUSTER}:upstream_cx_total", "cluster:PassthroughCluster:upstream_cx_total")
    before = counters(order, *stats)

    answer = hosts.call("http", f"http://{PAYMENT_ADDRESS}:2222/")

    # The payment host's sidecar passed it on to the app from 127.0.0.6 (no mesh port there).
    # (Client-first: a server-first protocol would wait on the PERMISSIVE TLS detection, as in Istio.)
    assert answer["status"] == 200 and answer["body"]["app"] == "legacy" and answer["body"]["peer"] == "127.0.0.6", answer
    assert "legacy.example.com" not in hosts.bundles["order-1.default"].capture["hosts"]
    assert grown(before, counters(order, *stats)) == {stats[0]: 1, stats[1]: 0}


def test_ssh_stays_uncaptured_on_the_host_it_reaches(hosts):
    payment = hosts.envoys["payment-1.default"]
    before = payment.stat("listener.0.0.0.0_15006.downstream_cx_total")

    answer = hosts.call("banner", f"{PAYMENT_ADDRESS}:22")

    # The listener on 22 saw the order host itself (not 127.0.0.6) and 15006 saw nothing.
    assert answer == {"banner": f"SSH-2.0-ssh {ORDER_ADDRESS}"}
    assert payment.stat("listener.0.0.0.0_15006.downstream_cx_total") == before


def test_a_direct_connection_to_15001_goes_to_the_black_hole_not_round_in_a_loop(hosts):
    """An app connects to the order sidecar's 15001 itself (loopback is not redirected): the
    original destination is 15001, and passed through it would come back to 15001 (the proxy's
    own connections are never redirected), again and again. Istio's virtualOutbound-blackhole
    chain ends it: one connection into 15001, none out but to the black hole."""
    order = hosts.envoys["order-1.default"]
    stats = ("listener.0.0.0.0_15001.downstream_cx_total", "cluster:PassthroughCluster:upstream_cx_total")
    before, black_hole = counters(order, *stats), order.cluster_stat("BlackHoleCluster", "upstream_cx_none_healthy")

    answer = hosts.call("banner", "127.0.0.1:15001")

    assert answer in ({"banner": ""}, {"error": answer.get("error")}), answer
    time.sleep(1)  # a loop would go on growing the count
    assert grown(before, counters(order, *stats)) == {stats[0]: 1, stats[1]: 0}
    assert order.cluster_stat("BlackHoleCluster", "upstream_cx_none_healthy") == black_hole + 1


def test_a_direct_connection_to_15006_goes_to_the_black_hole_not_round_in_a_loop(hosts):
    """A client connects to the payment host's 15006 itself (the proxy's own ports are not
    redirected inbound; here a process of the order host's proxy user, which its capture leaves
    alone, as a peer proxy's connection would be): passed through from 127.0.0.6 it would come
    back to 15006, again and again. Istio's virtualInbound-blackhole chain ends it at once."""
    payment = hosts.envoys["payment-1.default"]
    stats = ("listener.0.0.0.0_15006.downstream_cx_total", "cluster:InboundPassthroughCluster:upstream_cx_total")
    before, black_hole = counters(payment, *stats), payment.cluster_stat("BlackHoleCluster", "upstream_cx_none_healthy")

    answer = hosts.call("http", f"http://{PAYMENT_ADDRESS}:15006/", uid=PROXY_UID)

    assert "error" in answer and "timed out" not in answer["error"], answer
    time.sleep(1)
    assert grown(before, counters(payment, *stats)) == {stats[0]: 1, stats[1]: 0}
    assert payment.cluster_stat("BlackHoleCluster", "upstream_cx_none_healthy") == black_hole + 1


def test_tcp_over_ipv6_is_refused_rather_than_let_around_the_mesh(hosts):
    """The sidecars capture IPv4 only: an app's TCP over IPv6 is refused on its own host (a
    reset: no timeout), instead of reaching the payment host's server unseen by either proxy."""
    order = hosts.envoys["order-1.default"]
    before, listened = hosts.ipv6_rejected(hosts.order_ns, "MESHWRIGHT_IPV6_OUTPUT"), order.stat("listener.0.0.0.0_15001.downstream_cx_total")
    started = time.monotonic()

    answer = hosts.call("http", f"http://[{PAYMENT_ADDRESS6}]:8000/")

    assert "ConnectionRefused" in answer.get("error", ""), answer
    assert time.monotonic() - started < 4
    assert hosts.ipv6_rejected(hosts.order_ns, "MESHWRIGHT_IPV6_OUTPUT") > before
    assert order.stat("listener.0.0.0.0_15001.downstream_cx_total") == listened


def test_a_captured_host_refuses_tcp_over_ipv6_but_to_ssh(hosts):
    """From a client without the rules (the order host's IPv6 rules stood aside for this test),
    the payment host refuses IPv6 TCP to its apps' ports, and still answers SSH over IPv6."""
    hosts.ip6tables(hosts.order_ns, "-I", "MESHWRIGHT_IPV6_OUTPUT", "1", "-j", "RETURN")
    try:
        before = hosts.ipv6_rejected(hosts.payment_ns, "MESHWRIGHT_IPV6_INPUT")
        answer = hosts.call("http", f"http://[{PAYMENT_ADDRESS6}]:8000/")
        assert "ConnectionRefused" in answer.get("error", ""), answer
        assert hosts.ipv6_rejected(hosts.payment_ns, "MESHWRIGHT_IPV6_INPUT") > before
        assert hosts.call("banner", f"{PAYMENT_ADDRESS6}:22") == {"banner": f"SSH-2.0-ssh6 {ORDER_ADDRESS6}"}
    finally:
        hosts.ip6tables(hosts.order_ns, "-D", "MESHWRIGHT_IPV6_OUTPUT", "1")


def test_tls_to_a_wildcard_host_passes_through_by_sni(hosts):
    """Istio's "Egress using Wildcard Hosts" under capture: the app connects to an external
    server's address (as its own DNS gave it) with a *.wiki.test name. The order sidecar hands
    the connection to 0.0.0.0_443, picks the wildcard's chain by SNI and passes it, untouched,
    to that address: the app does TLS with the server itself and sees its certificate. A name
    the mesh does not know on that port passes through as before (ALLOW_ANY)."""
    order = hosts.envoys["order-1.default"]
    stats = ("listener.0.0.0.0_443.downstream_cx_total", "cluster:outbound|443||*.wiki.test:upstream_cx_total", "cluster:PassthroughCluster:upstream_cx_total")
    before = counters(order, *stats)

    answer = hosts.call("tls", f"{PAYMENT_ADDRESS}:443", "en.wiki.test", hosts.tls_ca)

    assert answer == {"certificate": "wiki-server"}, answer
    assert grown(before, counters(order, *stats)) == {stats[0]: 1, stats[1]: 1, stats[2]: 0}
    before = counters(order, *stats)
    assert "error" in hosts.call("tls", f"{PAYMENT_ADDRESS}:443", "elsewhere.example", hosts.tls_ca)  # the name is not on the certificate
    assert grown(before, counters(order, *stats)) == {stats[0]: 1, stats[1]: 0, stats[2]: 1}


def test_registry_only_sends_unknown_destinations_to_the_black_hole(hosts):
    order = hosts.envoys["order-1.default"]
    hosts.write_mesh("REGISTRY_ONLY")
    hosts.render(("order-1.default",))
    # Envoy picks the new listeners up from its watched directory.
    deadline = time.monotonic() + 10
    while "error" not in (answer := hosts.call("http", f"http://{PAYMENT_ADDRESS}:8000/")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "error" in answer, answer
    assert order.cluster_stat("BlackHoleCluster", "upstream_cx_none_healthy") >= 1
    # Unknown Host names on a mesh HTTP port get 502; the mesh's own service still answers.
    assert hosts.call("http", f"http://{PAYMENT_ADDRESS}:80/")["status"] == 502
    assert hosts.call("http", f"http://{PAYMENT}/pay")["status"] == 200
    # A destination in a ServiceEntry's range is the mesh's: it still goes through.
    assert hosts.call("http", f"http://{PAYMENT_ADDRESS}:2222/")["body"]["app"] == "legacy"


ORDER_REGISTRY_ONLY = """
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: order, namespace: default}
spec:
  workloadSelector: {labels: {app: order}}
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"""


def call_until(hosts, target: str, blocked: bool) -> dict:
    """Envoy picks new listeners up from its watched directory: call until it has."""
    deadline = time.monotonic() + 10
    while ("error" in (answer := hosts.call("http", target))) != blocked and time.monotonic() < deadline:
        time.sleep(0.2)
    return answer


def test_a_sidecars_registry_only_overrides_the_meshs_allow_any(hosts):
    """The mesh allows any destination (the plain server on 8000 answers); a Sidecar that
    selects the order workload makes it REGISTRY_ONLY: the same call goes to the black hole,
    while the mesh's own service still answers."""
    order = hosts.envoys["order-1.default"]
    hosts.write_mesh("ALLOW_ANY")
    hosts.render(("order-1.default",))
    assert "error" not in call_until(hosts, f"http://{PAYMENT_ADDRESS}:8000/", blocked=False)
    blackholed = order.cluster_stat("BlackHoleCluster", "upstream_cx_none_healthy")
    hosts.write_mesh("ALLOW_ANY", ORDER_REGISTRY_ONLY)
    hosts.render(("order-1.default",))
    assert "error" in call_until(hosts, f"http://{PAYMENT_ADDRESS}:8000/", blocked=True)
    assert order.cluster_stat("BlackHoleCluster", "upstream_cx_none_healthy") > blackholed
    assert hosts.call("http", f"http://{PAYMENT_ADDRESS}:80/")["status"] == 502
    assert hosts.call("http", f"http://{PAYMENT}/pay")["status"] == 200


ORDER_EGRESS_PROXY = """
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: egress-proxy, namespace: default}
spec:
  hosts: [egress-proxy.example.internal]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.77.0.2, ports: {http: 8000}}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: order, namespace: default}
spec:
  workloadSelector: {labels: {app: order}}
  outboundTrafficPolicy:
    mode: ALLOW_ANY
    egressProxy: {host: egress-proxy.example.internal, port: {number: 80}}
"""


def test_a_sidecars_egress_proxy_takes_its_unknown_destinations(hosts):
    """ALLOW_ANY passes a connection to an unknown destination through (nothing listens on
    the payment host's 2223: it fails); with the Sidecar's egressProxy (here the plain web
    server standing in for an egress gateway), the same connection, and a request for an
    unknown Host on a mesh HTTP port, go to the egress proxy; the mesh's service still answers."""
    hosts.write_mesh("ALLOW_ANY")
    hosts.render(("order-1.default",))
    assert "error" in call_until(hosts, f"http://{PAYMENT_ADDRESS}:2223/", blocked=True)
    hosts.write_mesh("ALLOW_ANY", ORDER_EGRESS_PROXY)
    hosts.render(("order-1.default",))
    assert call_until(hosts, f"http://{PAYMENT_ADDRESS}:2223/", blocked=False)["body"]["app"] == "plain-web"
    assert hosts.call("http", f"http://{PAYMENT_ADDRESS}:80/")["body"]["app"] == "plain-web"
    assert hosts.call("http", f"http://{PAYMENT}/pay")["status"] == 200


def test_stopping_capture_removes_the_rules_and_names_it_added(hosts):
    """Last: what uninstall does on the order host (meshwright-capture stop)."""
    assert "MESHWRIGHT_OUTPUT" in hosts.iptables(hosts.order_ns)
    run("ip", "netns", "exec", hosts.order_ns, "sh", os.path.join(ROLE, "files", "meshwright_capture.sh"), "stop",
        env={**os.environ, "MESHWRIGHT_CAPTURE_DIR": os.path.join(hosts.root, "order-1.default", "capture")})
    assert "MESHWRIGHT" not in hosts.iptables(hosts.order_ns)
    assert "MESHWRIGHT" not in hosts.ip6tables(hosts.order_ns, "-S")
    with open(f"/etc/netns/{hosts.order_ns}/hosts") as handle:
        assert handle.read() == "127.0.0.1 localhost\n"
    # The app's call now goes straight to the wire, unnamed and unproxied.
    assert "error" in hosts.call("http", f"http://{PAYMENT}/pay")
