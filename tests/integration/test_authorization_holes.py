"""Authorization holes an attacker found (issue 10), on real Envoy with mesh certificates.

The mesh's trust domain is example.org (in one case with the alias old.example). A server sidecar (STRICT mTLS)
has a DENY policy on `cluster.local/ns/default/sa/frontend` for /deny/* and an ALLOW policy
for /allow/* from everyone but that principal. In Istio, cluster.local there means the mesh's
own trust domain and its aliases, so the frontend's certificate (example.org or old.example)
gets 403 on both; compiled literally (meshwright before), both answered 200.

Configs that would open the server (an empty source, a forged service account, a policy on
a workload with no inbound listener) never reach Envoy: `meshwright render` refuses them.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl

import pytest

from meshwright.cli import main as meshwright_main
from meshwright.pki import bundle, ca, csr, store
from meshwright.pki.workload import sign_csr
from tests.harness import free_offset, free_port

MESH = """
apiVersion: meshwright.io/v1alpha1
kind: MeshConfig
metadata: {{name: mesh}}
spec:
  trustDomain: example.org{aliases}
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
metadata: {{name: server, namespace: default, annotations: {{meshwright.io/port-offset: "{offset}"}}}}
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
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: default}}
spec: {{mtls: {{mode: STRICT}}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny-frontend, namespace: default}}
spec:
  selector: {{matchLabels: {{app: server}}}}
  action: DENY
  rules:
  - from: [{{source: {{principals: [cluster.local/ns/default/sa/frontend]}}}}]
    to: [{{operation: {{paths: ["/deny/*"]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: allow-but-frontend, namespace: default}}
spec:
  selector: {{matchLabels: {{app: server}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{notPrincipals: [cluster.local/ns/default/sa/frontend]}}}}]
    to: [{{operation: {{paths: ["/allow/*"]}}}}]
  - to: [{{operation: {{paths: ["/deny/*"]}}}}]
"""

SERVER_ID = "spiffe://example.org/ns/default/sa/server"


class Server:
    """The server sidecar on real Envoy, its app, and the mesh CA that signs callers."""

    def __init__(self, lab, extra: str = "", aliases: tuple[str, ...] = ()):
        self.lab = lab
        self.offset = free_offset()
        self.inbound = free_port()
        self.app = lab.backend("server", "server-1")
        self.mesh_text = MESH.format(
            offset=self.offset, inbound=self.inbound, app=self.app.port, aliases=f"\n  trustDomainAliases: [{', '.join(aliases)}]" if aliases else "",
        ) + extra
        self.root = ca.make_root("example.org")
        self.site = ca.make_intermediate(self.root, "site-a")
        self.certs = lab.tmp_path / "certs"

    def start(self):
        self.lab.write_mesh(self.mesh_text)
        key = csr.make_private_key()
        chain = sign_csr(csr.make_csr(key, SERVER_ID), SERVER_ID, self.site)
        store.write_workload_certificates(str(self.certs), key, chain, bundle.trust_bundle(self.root.certificate_pem()))
        self.envoy = self.lab.proxy("server.default", 15000 + self.offset)
        return self

    def client(self, spiffe_id: str) -> ssl.SSLContext:
        """A caller with a mesh certificate for spiffe_id (as any sidecar of the mesh has)."""
        key = csr.make_private_key()
        chain = sign_csr(csr.make_csr(key, spiffe_id), spiffe_id, self.site)
        directory = self.lab.tmp_path / "clients" / spiffe_id.replace("/", "_").replace(":", "")
        store.write_workload_certificates(str(directory), key, chain, self.root.certificate_pem())
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.load_verify_locations(str(directory / store.ROOTS_FILE))
        context.load_cert_chain(str(directory / store.CHAIN_FILE), str(directory / store.KEY_FILE))
        return context

    def get(self, context: ssl.SSLContext, path: str) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", self.inbound, timeout=10)
        try:
            connection.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", self.inbound), timeout=10))
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()


@pytest.fixture
def server(lab):
    return Server(lab).start()


@pytest.mark.parametrize("trust_domain, aliases", [("example.org", ()), ("old.example", ("old.example",))], ids=["trust-domain", "alias"])
def test_cluster_local_principal_means_the_mesh_trust_domain(lab, trust_domain, aliases):
    """The frontend (in the trust domain, or in an alias when the mesh has one) is denied by
    the DENY rule and not let in by the ALLOW notPrincipals rule: 403 from Envoy's RBAC
    filters, counted, and the app never sees the requests. Another caller gets 200 on both."""
    server = Server(lab, aliases=aliases).start()
    frontend = server.client(f"spiffe://{trust_domain}/ns/default/sa/frontend")
    stats = f"http.inbound_{server.inbound}.rbac."
    deny_denied, allow_denied = server.envoy.stat(stats + "deny.denied"), server.envoy.stat(stats + "allow.denied")
    before = server.app.count
    assert server.get(frontend, "/deny/orders") == 403
    assert server.get(frontend, "/allow/orders") == 403
    assert server.app.count == before
    assert server.envoy.stat(stats + "deny.denied") == deny_denied + 1
    assert server.envoy.stat(stats + "allow.denied") == allow_denied + 1
    other = server.client(f"spiffe://{trust_domain}/ns/default/sa/other")
    assert server.get(other, "/deny/orders") == 200
    assert server.get(other, "/allow/orders") == 200
    assert server.app.count == before + 2


def test_a_principal_in_a_foreign_trust_domain_is_not_the_mesh_frontend(server):
    """Without aliases, a certificate for the frontend's name in another trust domain is not
    the frontend: the DENY rule does not match it."""
    foreign = server.client("spiffe://old.example/ns/default/sa/frontend")  # no alias here
    assert server.get(foreign, "/deny/orders") == 200


EMPTY_SOURCE = """
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: open, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  rules:
  - from: [{source: {}}]
"""
FORGED_ACCOUNT = """
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: forged, namespace: default}
spec: {address: 127.0.0.1, labels: {app: forged}, serviceAccount: x/ns/prod/sa/admin}
"""
UNENFORCED = """
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: bare, namespace: default}
spec: {address: 127.0.0.1, labels: {app: bare}, serviceAccount: bare}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: guard-bare, namespace: default}
spec:
  selector: {matchLabels: {app: bare}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/frontend]}}]
"""


@pytest.mark.parametrize("extra, message", [
    (EMPTY_SOURCE, "AuthorizationPolicy/default/open: spec.rules[0].from[0].source: a rule source needs at least one of principals"),
    (FORGED_ACCOUNT, "WorkloadEntry/default/forged: spec.serviceAccount: 'x/ns/prod/sa/admin' is not a DNS-1123 label"),
    (UNENFORCED, "AuthorizationPolicy/default/guard-bare: spec.selector: this authorization policy is enforced nowhere on WorkloadEntry default/bare"),
], ids=["empty-source", "forged-service-account", "policy-without-inbound-listener"])
def test_render_refuses_configs_that_open_the_server(lab, capsys, extra, message):
    """An empty source (allow-all), a service account that forges SPIFFE ID parts
    (ns/prod/sa/admin), a policy that no inbound listener enforces: render exits 1 naming
    the file, resource and field, and writes nothing for Envoy to run."""
    server = Server(lab, extra)
    mesh_path = lab.write_mesh(server.mesh_text)
    out = lab.tmp_path / "out"
    code = meshwright_main(["render", "--mesh", mesh_path, "--proxy", "server.default", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert f"{mesh_path}:" in err and message in err, err
    assert not os.path.exists(out)
