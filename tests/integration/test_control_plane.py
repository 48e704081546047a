"""The live control plane (`meshwright serve`) on real Envoy: proxies bootstrapped for ADS get
their listeners, clusters, endpoints and routes from it over mTLS, and edits saved in the
watched mesh folder reach them without a restart (docs/control-plane.md).

A client sidecar routes to `reviews` (v1 and v2 subsets, two WorkloadEntries) through its
outbound listener; every port comes from free_port()/free_offset(); the server runs in this
process, Envoy as a subprocess; all are stopped at the end of each test.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time

import pytest
from cryptography import x509

from meshwright.agent import write_secret_files
from meshwright.cli import main as meshwright_main
from meshwright.compile.xds_bootstrap import XdsServer
from meshwright.deliver.files import serialize
from meshwright.pki import ca, csr, workload
from meshwright.pki.ca import certificate_pem
from meshwright.pki.spiffe import control_plane_spiffe_id, spiffe_id
from meshwright.pki.store import write_workload_certificates
from meshwright.serve import server as xds_server
from meshwright.serve.bootstrap import xds_bootstrap
from meshwright.serve.source import load_valid
from tests.harness import Backend, Envoy, free_offset, free_port, request

MESH = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: reviews}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: reviews-v1, namespace: default}}
spec: {{address: {v1_address}, ports: {{http: {v1}}}, labels: {{app: reviews, version: v1}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: reviews-v2, namespace: default}}
spec: {{address: 127.0.0.1, ports: {{http: {v2}}}, labels: {{app: reviews, version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: client
  namespace: default
  annotations: {{meshwright.io/port-offset: "{offset}"}}
spec: {{address: 127.0.0.1, labels: {{app: client}}, serviceAccount: client}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: v1}}
      weight: {v1_weight}
    - destination: {{host: reviews, subset: v2}}
      weight: {v2_weight}
"""
PROXY = "client.default"
IDENTITY = """\
apiVersion: meshwright.io/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec:
  certificates: {dir: ../certs}
---
"""
TRUST_DOMAIN = "cluster.local"


class ControlPlaneLab:
    """A mesh folder served by an in-process `meshwright serve` (mTLS unless plaintext),
    backends for reviews v1 and v2, and the client's Envoy bootstrapped for ADS."""

    def __init__(self, tmp_path, plaintext: bool = False, identity: bool = False):
        self.tmp_path = tmp_path
        self.prefix = IDENTITY if identity else ""
        self.mesh_dir = tmp_path / "mesh"
        self.mesh_dir.mkdir()
        self.v1 = Backend("reviews", "reviews-v1", "v1")
        self.v2 = Backend("reviews", "reviews-v2", "v2")
        # Where reviews-v1 may move to: another loopback address, the same port.
        self.spare = Backend("reviews", "reviews-v1-moved", "v1", port=self.v1.port, host="127.0.0.2")
        self.offset = free_offset()
        self.port = 15001 + self.offset
        self.envoys: list[Envoy] = []
        self.weights = (100, 0)
        self.v1_address = "127.0.0.1"
        self.write()
        root = ca.make_root(TRUST_DOMAIN)
        self.issuer = ca.make_intermediate(root, "site-a")
        self.roots = certificate_pem(root.certificate)
        tls = None if plaintext else self._server_tls()
        mesh, problems = load_valid([str(self.mesh_dir)])
        assert problems == []
        self.log = io.StringIO()
        self.handler = logging.StreamHandler(self.log)
        logging.getLogger("meshwright.serve").addHandler(self.handler)
        logging.getLogger("meshwright.serve").setLevel(logging.INFO)
        self.running = xds_server.start(mesh, [str(self.mesh_dir)], ("127.0.0.1", free_port()), tls, ("127.0.0.1", free_port()))
        self.plaintext = plaintext

    def write(self, text: str | None = None) -> None:
        """The mesh file, replaced by rename (as editors and Ansible save it)."""
        text = text or self.prefix + MESH.format(v1=self.v1.port, v1_address=self.v1_address, v2=self.v2.port, offset=self.offset, v1_weight=self.weights[0], v2_weight=self.weights[1])
        path = self.mesh_dir / "mesh.yaml"
        (self.mesh_dir / ".mesh.yaml.tmp").write_text(text)
        os.replace(self.mesh_dir / ".mesh.yaml.tmp", path)

    def certificate(self, spiffe: str, signer=None) -> tuple[bytes, bytes]:
        key = csr.make_private_key()
        return key, workload.sign_csr(csr.make_csr(key, spiffe), spiffe, signer or self.issuer)

    def _server_tls(self) -> xds_server.ServerTls:
        key, chain = self.certificate(control_plane_spiffe_id(TRUST_DOMAIN))
        return xds_server.ServerTls(chain, key, self.roots)

    def envoy(self, name: str = "client", identity: str | None = None, delta: bool = False, wait: bool = True) -> Envoy:
        """The client's Envoy, bootstrapped for ADS; identity: the SPIFFE ID its certificate
        proves (default: the one the mesh gives the client)."""
        config_dir = self.tmp_path / f"{name}-{len(self.envoys)}"
        certs_dir = config_dir / "certs"
        certs_dir.mkdir(parents=True)
        if not self.plaintext:
            key, chain = self.certificate(identity or spiffe_id(TRUST_DOMAIN, "default", "client"))
            write_workload_certificates(str(certs_dir), key, chain, self.roots)
            write_secret_files(str(certs_dir))  # as the agent does: the xds-grpc cluster's SDS files
        server = XdsServer((("127.0.0.1", self.running.grpc_port),), None if self.plaintext else str(certs_dir), delta)
        bootstrap = xds_bootstrap(self.running.plane.estate.mesh, PROXY, server)
        (config_dir / "bootstrap.yaml").write_text(serialize(bootstrap, "yaml"))
        envoy = Envoy.__new__(Envoy) if not wait else None
        if wait:
            envoy = Envoy(str(config_dir), 15000 + self.offset)
        else:
            _start_without_waiting(envoy, str(config_dir), 15000 + self.offset)
        self.envoys.append(envoy)
        return envoy

    def versions(self, count: int = 10) -> list[str]:
        out = []
        for _ in range(count):
            status, body, _ = request(self.port, "/reviews", host="reviews")
            assert status == 200, body
            out.append(body["version"])
        return out

    def status(self) -> dict:
        return self.running.plane.status()

    def proxy_types(self) -> dict:
        streams = [p for p in self.status()["proxies"] if p["proxy"] == PROXY][0]["streams"]
        return streams[0]["types"] if streams else {}

    def close(self) -> None:
        for envoy in self.envoys:
            envoy.stop()
        self.running.stop()
        logging.getLogger("meshwright.serve").removeHandler(self.handler)
        for backend in (self.v1, self.v2, self.spare):
            backend.close()


def _start_without_waiting(envoy: Envoy, config_dir: str, admin_port: int) -> None:
    """Envoy.__init__ without its wait for /ready (a proxy the control plane refuses never gets ready)."""
    import subprocess

    from tests.harness import ENVOY
    envoy.config_dir, envoy.admin_port = config_dir, admin_port
    envoy.log_path = os.path.join(config_dir, "envoy.log")
    envoy.log = open(envoy.log_path, "a")
    envoy.process = subprocess.Popen(
        [ENVOY, "-c", os.path.join(config_dir, "bootstrap.yaml"), "-l", "warning", "--use-dynamic-base-id",
         "--base-id-path", os.path.join(config_dir, "base-id")], stdout=envoy.log, stderr=subprocess.STDOUT)


def wait_until(condition, timeout: float = 5.0) -> float:
    """Polls condition() until true; the seconds it took (fails after timeout)."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"not true within {timeout}s"
        time.sleep(0.02)
    return time.monotonic() - start


@pytest.fixture
def plane(tmp_path):
    lab = ControlPlaneLab(tmp_path)
    yield lab
    lab.close()


def all_synced(lab: ControlPlaneLab) -> bool:
    types = lab.proxy_types()
    return bool(types) and all(t["state"] == "SYNCED" for t in types.values())


def test_envoy_gets_its_config_over_ads_and_routes_traffic(plane):
    """An Envoy whose bootstrap names only the control plane (mTLS, its own certificate) gets
    clusters, endpoints (EDS), listeners and routes (RDS), and routes to the backend;
    status shows every type SYNCED."""
    envoy = plane.envoy()
    assert plane.versions() == ["v1"] * 10
    wait_until(lambda: all_synced(plane))
    assert set(plane.proxy_types()) == {"clusters", "endpoints", "listeners", "routes"}
    dump = json.loads(envoy.admin("/config_dump?resource=dynamic_active_clusters"))
    assert "outbound|9080|v1|reviews.default.svc.cluster.local" in {c["cluster"]["name"] for c in dump["configs"]}
    assert envoy.stat("cluster_manager.cds.update_rejected") == 0


def test_weight_edit_moves_traffic_without_restart(plane):
    """VirtualService weights 100/0 -> 0/100 saved in the watched folder: the running Envoy
    (same process) sends everything to v2 within 2 seconds; only routes were pushed."""
    envoy = plane.envoy()
    assert set(plane.versions()) == {"v1"}
    wait_until(lambda: all_synced(plane))
    before = {kind: t["acked"] for kind, t in plane.proxy_types().items()}
    updates = envoy.stat("cluster_manager.cds.update_success"), envoy.stat("listener_manager.lds.update_success")

    plane.weights = (0, 100)
    saved = time.monotonic()
    plane.write()
    took = wait_until(lambda: set(plane.versions(5)) == {"v2"}, timeout=2.5)
    print(f"weight edit applied by Envoy {took:.2f}s after the save (includes the 100 ms debounce)")

    assert set(plane.versions(20)) == {"v2"}
    wait_until(lambda: all_synced(plane))
    after = {kind: t["acked"] for kind, t in plane.proxy_types().items()}
    assert [kind for kind in before if before[kind] != after[kind]] == ["routes"]
    assert (envoy.stat("cluster_manager.cds.update_success"), envoy.stat("listener_manager.lds.update_success")) == updates
    assert envoy.process.poll() is None and time.monotonic() - saved < 5


def test_workload_address_change_sends_only_endpoints(plane):
    """reviews-v1 moves to another address (its WorkloadEntry's address only): the endpoint
    fast path sends EDS alone, to the client; traffic reaches the instance at the new address."""
    envoy = plane.envoy()
    assert set(plane.versions()) == {"v1"}
    wait_until(lambda: all_synced(plane))
    before = {kind: t["acked"] for kind, t in plane.proxy_types().items()}
    eds = envoy.cluster_stat("outbound|9080|v1|reviews.default.svc.cluster.local", "update_success")

    plane.v1_address = "127.0.0.2"
    saved = time.monotonic()
    plane.write()
    took = wait_until(lambda: plane.versions(1) and plane.spare.count > 0, timeout=3)
    print(f"address edit applied by Envoy {took:.2f}s after the save (includes the 100 ms debounce); {time.monotonic() - saved:.2f}s")

    wait_until(lambda: all_synced(plane))
    after = {kind: t["acked"] for kind, t in plane.proxy_types().items()}
    assert [kind for kind in before if before[kind] != after[kind]] == ["endpoints"]
    assert "mesh generation 2 (files: one resource, WorkloadEntry/default/reviews-v1 in" in plane.log.getvalue()
    assert envoy.cluster_stat("outbound|9080|v1|reviews.default.svc.cluster.local", "update_success") > eds
    moved = plane.spare.count
    plane.versions(5)
    assert plane.spare.count == moved + 5


def test_bad_edit_is_rejected_and_traffic_continues(plane):
    """Weights 0/0 (no traffic could go anywhere) are rejected with validate's FILE:LINE message (log and status);
    the proxy keeps its last good config and traffic keeps flowing; a good edit then applies."""
    plane.envoy()
    assert set(plane.versions()) == {"v1"}
    plane.weights = (0, 0)
    plane.write()
    wait_until(lambda: plane.status()["rejection"] is not None, timeout=3)
    problems = plane.status()["rejection"]["problems"]
    mesh_file = str(plane.mesh_dir / "mesh.yaml")
    assert problems and all(p.startswith(mesh_file + ":") for p in problems)
    assert any("VirtualService/default/reviews" in p and "weight" in p for p in problems)
    assert problems[0] in plane.log.getvalue()
    assert set(plane.versions(20)) == {"v1"}
    assert plane.status()["generation"] == 1

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert meshwright_main(["status", "--server", f"127.0.0.1:{plane.running.status_port}"]) == 0
    assert "last edit REJECTED" in out.getvalue() and problems[0] in out.getvalue()

    plane.weights = (0, 100)
    plane.write()
    wait_until(lambda: set(plane.versions(5)) == {"v2"}, timeout=3)
    assert plane.status()["rejection"] is None


def test_config_envoy_rejects_is_nacked_and_reported(plane):
    """An EnvoyFilter whose patch validation accepts but Envoy refuses (a cluster with a
    negative connect timeout): Envoy NACKs the clusters, keeps its last good config (traffic
    still flows) and `meshwright status` shows NACK with Envoy's error."""
    envoy = plane.envoy()
    assert set(plane.versions()) == {"v1"}
    wait_until(lambda: all_synced(plane))
    text = MESH.format(v1=plane.v1.port, v1_address="127.0.0.1", v2=plane.v2.port, offset=plane.offset, v1_weight=100, v2_weight=0) + """\
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: bad-timeout, namespace: default}
spec:
  workloadSelector: {labels: {app: client}}
  configPatches:
  - applyTo: CLUSTER
    match: {context: SIDECAR_OUTBOUND, cluster: {service: reviews.default.svc.cluster.local}}
    patch: {operation: MERGE, value: {connect_timeout: -1s}}
"""
    plane.write(text)
    wait_until(lambda: plane.proxy_types().get("clusters", {}).get("state") == "NACK", timeout=3)
    error = plane.proxy_types()["clusters"]["error"]
    assert "positive duration" in error, error
    assert envoy.stat("cluster_manager.cds.update_rejected") >= 1
    assert set(plane.versions(10)) == {"v1"}
    assert f"proxy {PROXY} rejected clusters" in plane.log.getvalue()

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert meshwright_main(["status", "--server", f"127.0.0.1:{plane.running.status_port}"]) == 0
    assert f"{PROXY} CDS NACK (127.0.0.1:{plane.running.grpc_port}): {error}" in out.getvalue()


def test_proxy_with_another_identity_is_refused(plane):
    """An Envoy claiming the client's node id with a certificate for another service account
    is refused (PERMISSION_DENIED, a log line naming both identities) and gets no config."""
    envoy = plane.envoy(identity=spiffe_id(TRUST_DOMAIN, "default", "intruder"), wait=False)
    wait_until(lambda: "refused xDS stream" in plane.log.getvalue(), timeout=5)
    line = [l for l in plane.log.getvalue().splitlines() if "refused xDS stream" in l][0]
    assert "spiffe://cluster.local/ns/default/sa/client" in line and "spiffe://cluster.local/ns/default/sa/intruder" in line
    assert plane.proxy_types() == {}
    time.sleep(0.3)
    assert envoy.stat("cluster_manager.cds.update_success") == 0
    assert plane.status()["refusals"]


def test_delta_xds_serves_and_updates(plane):
    """The same over incremental xDS (DELTA_GRPC): config arrives, a weight edit applies."""
    plane.envoy(delta=True)
    assert set(plane.versions()) == {"v1"}
    wait_until(lambda: all_synced(plane))
    plane.weights = (0, 100)
    plane.write()
    took = wait_until(lambda: set(plane.versions(5)) == {"v2"}, timeout=2.5)
    print(f"delta: weight edit applied {took:.2f}s after the save")
    wait_until(lambda: all_synced(plane))


def test_workload_certificates_come_by_sds_over_ads(tmp_path):
    """With workload identity, the secrets "default" and "ROOTCA" that the proxy's clusters name come over ADS (SDS)
    and name the PEM files in the certs directory its bootstrap gives (CERTS_DIR): Envoy
    loads its own certificate from there."""
    lab = ControlPlaneLab(tmp_path, identity=True)
    try:
        # Mutual TLS to reviews: its clusters name the secrets (the backends here speak plain HTTP: no traffic is sent).
        lab.write(lab.prefix + MESH.format(v1=lab.v1.port, v1_address="127.0.0.1", v2=lab.v2.port, offset=lab.offset, v1_weight=100, v2_weight=0)
                  .replace("  host: reviews\n", "  host: reviews\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n"))
        wait_until(lambda: lab.status()["generation"] == 2 or lab.status()["rejection"], timeout=3)
        assert lab.status()["rejection"] is None
        envoy = lab.envoy()
        wait_until(lambda: lab.proxy_types().get("secrets", {}).get("state") == "SYNCED")
        dump = json.loads(envoy.admin("/config_dump?resource=dynamic_active_secrets"))
        secrets = {s["name"]: s["secret"] for s in dump["configs"]}
        # Beside them, the xds-grpc cluster's own, which its bootstrap reads from files in the same folder.
        assert set(secrets) == {"default", "ROOTCA", "file-default", "file-rootca"}
        certs_dir = os.path.join(envoy.config_dir, "certs")
        # Envoy presents the certificate of that folder, in every TLS context.
        certs = json.loads(envoy.admin("/certs"))["certificates"]
        assert "spiffe://cluster.local/ns/default/sa/client" in json.dumps(certs)
        with open(os.path.join(certs_dir, "cert-chain.pem"), "rb") as handle:
            installed = x509.load_pem_x509_certificate(handle.read()).serial_number
        assert {int(c["serial_number"], 16) for context in certs for c in context.get("cert_chain") or []} == {installed}
        # What the control plane sends is what Envoy holds (the files of the stream's certs directory).
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = meshwright_main(["proxy-config", PROXY, "secrets", "--server", f"127.0.0.1:{lab.running.status_port}", "--diff"])
        assert code == 0 and out.getvalue().splitlines()[0] == "secrets: 2 the same, 0 differ, 0 only sent by the control plane, 0 only in Envoy", out.getvalue()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert meshwright_main(["proxy-config", PROXY, "secrets", "--server", f"127.0.0.1:{lab.running.status_port}"]) == 0
        rows = {line.split()[0]: line.split()[1:] for line in out.getvalue().splitlines()[1:]}
        assert rows["default"][:3] == ["tls_certificate", os.path.join(certs_dir, "cert-chain.pem,"), os.path.join(certs_dir, "key.pem")]
        assert rows["ROOTCA"][:2] == ["validation_context", os.path.join(certs_dir, "root-cert.pem")]
    finally:
        lab.close()


RATINGS = """\
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ratings, namespace: default}}
spec:
  hosts: [ratings.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]
"""


def test_a_new_service_is_routed_once_its_cluster_and_endpoints_are_there(plane):
    """A ServiceEntry added while requests flow: the proxy answers 404 (no route) until the
    push, then 200; never 503 (a route to a cluster it has not received, or without endpoints)."""
    plane.envoy()
    ratings = Backend("ratings", "ratings-v1", "v1")
    try:
        assert request(plane.port, "/ratings", host="ratings")[0] == 404
        plane.write(MESH.format(v1=plane.v1.port, v1_address="127.0.0.1", v2=plane.v2.port, offset=plane.offset, v1_weight=100, v2_weight=0)
                    + RATINGS.format(port=ratings.port))
        statuses = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and statuses[-5:] != [200] * 5:
            statuses.append(request(plane.port, "/ratings", host="ratings")[0])
        assert statuses[-5:] == [200] * 5, statuses
        assert set(statuses) <= {404, 200}, statuses
        assert set(plane.versions(10)) == {"v1"}
    finally:
        ratings.close()


def test_the_commands_end_to_end_over_mtls(tmp_path):
    """What a user runs: `meshwright serve` (a process, mTLS with its certificate from the mesh
    CA), `meshwright xds-bootstrap` for the client, Envoy on it, `meshwright status`."""
    import signal
    import subprocess
    import sys

    v1, v2 = Backend("reviews", "reviews-v1", "v1"), Backend("reviews", "reviews-v2", "v2")
    offset = free_offset()
    mesh_dir = tmp_path / "mesh"
    mesh_dir.mkdir()
    (mesh_dir / "mesh.yaml").write_text(MESH.format(v1=v1.port, v1_address="127.0.0.1", v2=v2.port, offset=offset, v1_weight=0, v2_weight=100))
    root = ca.make_root(TRUST_DOMAIN)
    issuer = ca.make_intermediate(root, "site-a")
    roots = certificate_pem(root.certificate)
    control = tmp_path / "control-plane"
    control.mkdir()
    key = csr.make_private_key()
    (control / "key.pem").write_bytes(key)
    (control / "cert-chain.pem").write_bytes(workload.sign_csr(csr.make_csr(key, control_plane_spiffe_id(TRUST_DOMAIN)),
                                                               control_plane_spiffe_id(TRUST_DOMAIN), issuer))
    (control / "root-cert.pem").write_bytes(roots)
    certs = tmp_path / "client" / "certs"
    certs.mkdir(parents=True)
    client_key = csr.make_private_key()
    client_id = spiffe_id(TRUST_DOMAIN, "default", "client")
    write_workload_certificates(str(certs), client_key, workload.sign_csr(csr.make_csr(client_key, client_id), client_id, issuer), roots)
    write_secret_files(str(certs))
    grpc_port, status_port = free_port(), free_port()
    server = subprocess.Popen([sys.executable, "-m", "meshwright.cli", "serve", "--mesh", str(mesh_dir), "--listen", f"127.0.0.1:{grpc_port}",
                               "--status-listen", f"127.0.0.1:{status_port}", "--tls-cert", str(control / "cert-chain.pem"),
                               "--tls-key", str(control / "key.pem"), "--ca", str(control / "root-cert.pem")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    envoy = None
    try:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert meshwright_main(["xds-bootstrap", "--mesh", str(mesh_dir), "--proxy", PROXY, "--xds", f"127.0.0.1:{grpc_port}",
                                    "--certs-dir", str(certs), "--out", str(tmp_path / "client" / "bootstrap.yaml")]) == 0
        envoy = Envoy(str(tmp_path / "client"), 15000 + offset)
        status, body, _ = request(15001 + offset, "/reviews", host="reviews")
        assert (status, body["version"]) == (200, "v2")

        def status_line() -> str:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                assert meshwright_main(["status", "--server", f"127.0.0.1:{status_port}"]) == 0
            return [line for line in out.getvalue().splitlines() if line.startswith(PROXY)][0]

        wait_until(lambda: status_line().split()[2:6] == ["SYNCED"] * 4)
        assert status_line().split()[1] == f"127.0.0.1:{grpc_port}"  # the instance it is connected to
    finally:
        if envoy:
            envoy.stop()
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=10)
        v1.close(), v2.close()
    assert server.returncode == 0, stderr
    assert f"serving 3 proxies over ADS on 127.0.0.1:{grpc_port} (mTLS)" in stderr and "proxy client.default connected" in stderr
