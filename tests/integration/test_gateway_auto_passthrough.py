"""Gateway tls.mode AUTO_PASSTHROUGH on real Envoy, with certificates from meshwright's mesh
CA: Istio's east-west gateway on one network. A client sidecar reaches `catalog` through the
gateway as Istio's clients on another network do: its endpoint is the gateway, it speaks
mesh mTLS with the SNI of catalog's cluster (outbound_.8080_.SUBSET_.catalog...), and the
gateway, with no VirtualService, passes the connection untouched to that cluster's
endpoints. mTLS is end to end: the STRICT catalog sidecars see the client's own identity
(an AuthorizationPolicy lets only it in), and the subset in the SNI picks the backend."""

from __future__ import annotations

import os
import socket
import ssl

import pytest

from meshwright.deliver.bundle import load_mesh
from meshwright.deliver.identity import proxy_spiffe_id, sign_proxy_csr
from meshwright.pki import bundle, ca, csr, store
from tests.harness import Backend, Envoy, free_offset, free_port, render, request

MESH = """
apiVersion: meshwright.io/v1alpha1
kind: MeshConfig
metadata: {{name: mesh}}
spec:
  certificates: {{dir: ../certs}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: cross-network-gateway, namespace: istio-system}}
spec:
  selector: {{istio: eastwestgateway}}
  servers:
  - port: {{number: {eastwest}, name: tls, protocol: TLS}}
    bind: 127.0.0.1
    tls: {{mode: AUTO_PASSTHROUGH}}
    hosts: ["*.local"]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: eastwestgateway, namespace: istio-system, annotations: {{meshwright.io/port-offset: "{gateway_offset}"}}}}
spec: {{address: 127.0.0.1, labels: {{istio: eastwestgateway}}, serviceAccount: eastwestgateway}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: catalog, namespace: shop}}
spec:
  hosts: [catalog.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: catalog}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: catalog, namespace: shop}}
spec:
  host: catalog.shop.svc.cluster.local
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: shop}}
spec:
  mtls: {{mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: catalog, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: catalog}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{principals: [cluster.local/ns/shop/sa/frontend]}}}}]
{catalogs}
---
# Catalog as the client sees it on "another network": behind the east-west gateway, reached
# with mesh mTLS and the SNI of catalog's own cluster (one host per subset).
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: catalog-remote, namespace: shop}}
spec:
  hosts: [catalog-v1.remote, catalog-v2.remote]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {eastwest}}}}}]
{remote_rules}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: frontend, namespace: shop, annotations: {{meshwright.io/port-offset: "{frontend_offset}"}}}}
spec: {{address: 127.0.0.1, labels: {{app: frontend}}, serviceAccount: frontend}}
"""

CATALOG = """---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: catalog-{version}, namespace: shop, annotations: {{meshwright.io/port-offset: "{offset}"}}}}
spec: {{address: 127.0.0.1, ports: {{http: {inbound}}}, labels: {{app: catalog, version: {version}}}, serviceAccount: catalog}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: catalog-{version}, namespace: shop}}
spec:
  workloadSelector: {{labels: {{app: catalog, version: {version}}}}}
  ingress:
  - port: {{number: {inbound}, protocol: HTTP, name: http}}
    bind: 127.0.0.1
    defaultEndpoint: 127.0.0.1:{app}
"""

REMOTE_RULE = """---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: catalog-{version}-remote, namespace: shop}}
spec:
  host: catalog-{version}.remote
  trafficPolicy:
    tls:
      mode: ISTIO_MUTUAL
      sni: outbound_.8080_.{version}_.catalog.shop.svc.cluster.local
      subjectAltNames: [spiffe://cluster.local/ns/shop/sa/catalog]
"""

PROXIES = ("eastwestgateway.istio-system", "catalog-v1.shop", "catalog-v2.shop", "frontend.shop")


def distinct_offset(taken: set[int]) -> int:
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


class EastWest:
    """The running mesh: its CA, the proxies (Envoy by proxy id), the catalog apps by version."""

    def __init__(self, root_dir: str):
        self.root_dir = root_dir
        self.root = ca.make_root("cluster.local")
        self.site = ca.make_intermediate(self.root, "site-a", trust_domains=["cluster.local"])
        self.apps = {version: Backend("catalog", f"catalog-{version}", version=version) for version in ("v1", "v2")}
        self.envoys: dict[str, Envoy] = {}
        try:
            self.start()
        except BaseException:
            self.close()
            raise

    def start(self) -> None:
        taken: set[int] = set()
        self.offsets = {proxy: distinct_offset(taken) for proxy in PROXIES}
        self.eastwest = distinct_port(taken)
        inbound = {version: distinct_port(taken) for version in self.apps}
        catalogs = "".join(CATALOG.format(version=v, offset=self.offsets[f"catalog-{v}.shop"], inbound=inbound[v], app=app.port)
                           for v, app in self.apps.items())
        mesh_path = os.path.join(self.root_dir, "mesh.yaml")
        with open(mesh_path, "w") as handle:
            handle.write(MESH.format(
                eastwest=self.eastwest, catalogs=catalogs, remote_rules="".join(REMOTE_RULE.format(version=v) for v in self.apps),
                gateway_offset=self.offsets["eastwestgateway.istio-system"], frontend_offset=self.offsets["frontend.shop"],
            ))
        self.mesh = load_mesh([mesh_path])
        for proxy in PROXIES:
            self.issue(proxy)
            config_dir = os.path.join(self.root_dir, proxy, "config")
            render(mesh_path, proxy, config_dir)
            self.envoys[proxy] = Envoy(config_dir, 15000 + self.offsets[proxy])

    def issue(self, proxy: str) -> None:
        key = csr.make_private_key()
        chain = sign_proxy_csr(self.mesh, proxy, csr.make_csr(key, proxy_spiffe_id(self.mesh, proxy)), self.site)
        store.write_workload_certificates(os.path.join(self.root_dir, proxy, "certs"), key, chain, bundle.trust_bundle(self.root.certificate_pem()))

    def close(self) -> None:
        for envoy in self.envoys.values():
            envoy.stop()
        for app in self.apps.values():
            app.close()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    running = EastWest(str(tmp_path_factory.mktemp("eastwest")))
    yield running
    running.close()


def call(mesh, host: str) -> tuple[int, dict]:
    status, body, _ = request(15001 + mesh.offsets["frontend.shop"], "/items", host=f"{host}:8080")
    return status, body


def test_the_mesh_sni_of_a_subset_reaches_that_subset_through_the_gateway(mesh):
    before = {version: app.count for version, app in mesh.apps.items()}
    for version in ("v1", "v2", "v1", "v2"):
        status, body = call(mesh, f"catalog-{version}.remote")
        assert (status, body.get("instance")) == (200, f"catalog-{version}")
    assert {version: app.count - before[version] for version, app in mesh.apps.items()} == {"v1": 2, "v2": 2}
    gateway = mesh.envoys["eastwestgateway.istio-system"]
    assert gateway.stat("cluster.outbound_.8080_.v2_.catalog.shop.svc.cluster.local.upstream_cx_total") >= 1


def test_mtls_is_end_to_end_the_backend_sees_the_clients_identity(mesh):
    """The gateway does no TLS: the catalog sidecar's handshake is with the frontend (its
    AuthorizationPolicy allows only the frontend's principal, and the request got in)."""
    gateway, catalog = mesh.envoys["eastwestgateway.istio-system"], mesh.envoys["catalog-v1.shop"]
    allowed = sum(v for k, v in catalog.stats().items() if k.endswith("rbac.allow.allowed"))
    status, _ = call(mesh, "catalog-v1.remote")
    assert status == 200
    assert sum(v for k, v in catalog.stats().items() if k.endswith("rbac.allow.allowed")) == allowed + 1
    assert not any(k.endswith("ssl.handshake") and v for k, v in gateway.stats().items())


def tls_hello(port: int, sni: str) -> str:
    """A TLS handshake to the gateway with that SNI (no client certificate): the error or the
    server's subject alternative names."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname=sni) as tls:
            tls.recv(1)
            return "connected"
    except (ssl.SSLError, OSError) as error:
        return type(error).__name__


def test_a_name_that_is_no_covered_cluster_is_closed(mesh):
    gateway = mesh.envoys["eastwestgateway.istio-system"]
    before = gateway.stat("listener.127.0.0.1_{}.no_filter_chain_match".format(mesh.eastwest))
    for sni in ("catalog.shop.svc.cluster.local", "outbound_.8080_.v3_.catalog.shop.svc.cluster.local",
                "outbound_.8080_._.catalog-v1.remote", "outbound|8080||catalog.shop.svc.cluster.local"):
        assert tls_hello(mesh.eastwest, sni) != "connected"
    assert gateway.stat("listener.127.0.0.1_{}.no_filter_chain_match".format(mesh.eastwest)) == before + 4
