"""A proxy on xDS keeps reaching the control plane after its first certificate expired (issue #14,
docs/control-plane.md "Certificates on demand"): its `xds-grpc` cluster reads the certificate
and the roots through file-based SDS from the files `meshwright agent` writes beside the
certificate, so Envoy loads each renewal there too, not only in the mesh's own TLS contexts.

Two `meshwright serve` instances (processes, mTLS, each with the CSR service) sign 24 s
certificates; the agent (a process) renews the client's at 16 s. Once the first certificate has
expired, the instance the proxy is connected to is killed (SIGKILL): the proxy reconnects to the
other instance, presenting its renewed certificate, and a routing change saved after the kill
reaches it. A bootstrap that named the PEM files directly (before this change) presented the
certificate Envoy started with, which the other instance refused as expired: the proxy was
stuck on its last config.

Envoy still accepts only a server certificate with the control plane's SPIFFE ID: a server
with a workload certificate of the same mesh is refused on the SAN check.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import os
import signal
import subprocess
import sys
import time

from cryptography import x509

from meshwright.agent import write_secret_files
from meshwright.cli import main as meshwright_main
from meshwright.compile.xds_bootstrap import XdsServer
from meshwright.deliver.files import serialize
from meshwright.pki import ca, csr, workload
from meshwright.pki.ca import certificate_pem
from meshwright.pki.spiffe import control_plane_spiffe_id, spiffe_id
from meshwright.pki.store import CHAIN_FILE, write_workload_certificates
from meshwright.serve import server as xds_server
from meshwright.serve.bootstrap import xds_bootstrap
from meshwright.serve.source import load_valid
from tests.harness import Backend, Envoy, free_offset, free_port, request
from tests.integration.test_control_plane import MESH, PROXY, TRUST_DOMAIN, _start_without_waiting, wait_until

LIFETIME_SECONDS = 24  # the agent renews at 16 s; the first certificate expires at 24 s
INSTANCES = ("a", "b")
CLIENT_ID = spiffe_id(TRUST_DOMAIN, "default", "client")


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = meshwright_main(argv)
    return code, out.getvalue(), err.getvalue()


def leaf(chain_path) -> x509.Certificate:
    with open(chain_path, "rb") as handle:
        return x509.load_pem_x509_certificate(handle.read())


def envoy_serials(envoy: Envoy) -> set[int]:
    """The serials of the certificates Envoy presents, over every TLS context it has."""
    contexts = json.loads(envoy.admin("/certs"))["certificates"]
    return {int(c["serial_number"], 16) for context in contexts for c in context.get("cert_chain") or []}


class ReconnectLab:
    """The CA, two serve instances with the CSR service, the client's agent and Envoy."""

    def __init__(self, folder):
        self.folder = folder
        self.v1, self.v2 = Backend("reviews", "reviews-v1", "v1"), Backend("reviews", "reviews-v2", "v2")
        self.offset = free_offset()
        self.mesh_dir = folder / "mesh"
        self.mesh_dir.mkdir()
        self.write_mesh(100, 0)
        root = ca.make_root(TRUST_DOMAIN)
        self.site = ca.make_intermediate(root, "site-a", trust_domains=[TRUST_DOMAIN])
        self.roots = certificate_pem(root.certificate)
        plane_key = csr.make_private_key()
        plane_id = control_plane_spiffe_id(TRUST_DOMAIN)
        files = {"root-cert.pem": self.roots, "site-chain.pem": self.site.certificate_pem() + self.site.parents_pem(),
                 "site-key.pem": self.site.key_pem(), "plane-key.pem": plane_key,
                 "plane-chain.pem": workload.sign_csr(csr.make_csr(plane_key, plane_id), plane_id, self.site)}
        for name, content in files.items():
            (folder / name).write_bytes(content)
        self.ports = {name: {"grpc": free_port(), "status": free_port(), "csr": free_port(), "join": free_port()} for name in INSTANCES}
        self.servers = {name: self.start_server(name) for name in INSTANCES}
        self.certs = folder / "client" / "certs"
        # The first certificate as a rotation would have signed it (24 s): the agent renews it over mTLS.
        client_key = csr.make_private_key()
        lifetime = datetime.timedelta(seconds=LIFETIME_SECONDS)
        write_workload_certificates(str(self.certs), client_key, workload.sign_csr(csr.make_csr(client_key, CLIENT_ID), CLIENT_ID, self.site, lifetime),
                                    self.roots)
        self.first = leaf(self.certs / CHAIN_FILE)
        self.agent = subprocess.Popen(
            [sys.executable, "-m", "meshwright.cli", "agent", "--server", ",".join(f"127.0.0.1:{p['csr']}" for p in self.ports.values()),
             "--join-server", ",".join(f"127.0.0.1:{p['join']}" for p in self.ports.values()), "--proxy", PROXY,
             "--certs-dir", str(self.certs), "--ca", str(folder / "root-cert.pem")],
            stdout=subprocess.DEVNULL, stderr=open(folder / "agent.log", "w"))
        wait_until(lambda: (self.certs / "sds-rootca.json").exists(), timeout=20)
        code, _, err = run(["xds-bootstrap", "--mesh", str(self.mesh_dir), "--proxy", PROXY, "--certs-dir", str(self.certs),
                            "--out", str(folder / "client" / "bootstrap.yaml"), *(f"--xds=127.0.0.1:{self.ports[n]['grpc']}" for n in INSTANCES)])
        assert code == 0, err
        self.envoy = Envoy(str(folder / "client"), 15000 + self.offset)

    def start_server(self, name: str) -> subprocess.Popen:
        ports, folder = self.ports[name], self.folder
        process = subprocess.Popen(
            [sys.executable, "-m", "meshwright.cli", "serve", "--mesh", str(self.mesh_dir), "--listen", f"127.0.0.1:{ports['grpc']}",
             "--status-listen", f"127.0.0.1:{ports['status']}", "--tls-cert", str(folder / "plane-chain.pem"),
             "--tls-key", str(folder / "plane-key.pem"), "--ca", str(folder / "root-cert.pem"),
             "--signing-cert", str(folder / "site-chain.pem"), "--signing-key", str(folder / "site-key.pem"),
             "--cert-lifetime", f"{LIFETIME_SECONDS}s", "--csr-listen", f"127.0.0.1:{ports['csr']}", "--join-listen", f"127.0.0.1:{ports['join']}"],
            stdout=subprocess.DEVNULL, stderr=open(folder / f"serve-{name}.log", "a"))

        def answers() -> bool:
            assert process.poll() is None, (folder / f"serve-{name}.log").read_text()
            return run(["status", "--server", f"127.0.0.1:{ports['status']}"])[0] == 0
        wait_until(answers, timeout=30)
        return process

    def write_mesh(self, v1_weight: int, v2_weight: int) -> None:
        text = MESH.format(v1=self.v1.port, v1_address="127.0.0.1", v2=self.v2.port, offset=self.offset, v1_weight=v1_weight, v2_weight=v2_weight)
        (self.mesh_dir / ".mesh.yaml.tmp").write_text(text)
        os.replace(self.mesh_dir / ".mesh.yaml.tmp", self.mesh_dir / "mesh.yaml")

    def streams(self, names=INSTANCES) -> list[dict]:
        servers = ",".join(f"127.0.0.1:{self.ports[n]['status']}" for n in names)
        code, out, err = run(["status", "--server", servers, "--json"])
        assert code == 0, err
        return [p for p in json.loads(out)["proxies"] if p["proxy"] == PROXY][0]["streams"]

    def synced_on(self, names=INSTANCES) -> dict | None:
        """The proxy's stream when it has one, with every type it asked for SYNCED."""
        streams = self.streams(names)
        if len(streams) == 1 and streams[0]["types"] and all(t["state"] == "SYNCED" for t in streams[0]["types"].values()):
            return streams[0]
        return None

    def versions(self, count: int = 6) -> set[str]:
        return {request(15001 + self.offset, "/reviews", host="reviews", timeout=5)[1].get("version") for _ in range(count)}

    def close(self) -> None:
        self.envoy.stop()
        for process in (self.agent, *self.servers.values()):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=10)
        self.v1.close(), self.v2.close()


def test_a_proxy_reconnects_with_its_renewed_certificate_after_the_first_one_expired(tmp_path):
    lab = ReconnectLab(tmp_path)
    try:
        wait_until(lambda: lab.synced_on() is not None, timeout=15)
        assert lab.versions() == {"v1"}
        # Past the first certificate's expiry (with a second of margin), the stream opened with it still up.
        expired_at = lab.first.not_valid_after_utc + datetime.timedelta(seconds=1)
        time.sleep(max(0.0, (expired_at - datetime.datetime.now(datetime.timezone.utc)).total_seconds()))
        renewed = leaf(lab.certs / CHAIN_FILE)
        assert renewed.serial_number != lab.first.serial_number, (tmp_path / "agent.log").read_text()
        assert renewed.not_valid_after_utc > datetime.datetime.now(datetime.timezone.utc)
        connected = lab.synced_on()["instance"]
        [killed] = [n for n in INSTANCES if connected == f"127.0.0.1:{lab.ports[n]['grpc']}"]
        [other] = [n for n in INSTANCES if n != killed]
        lab.servers[killed].send_signal(signal.SIGKILL)
        lab.servers[killed].wait(timeout=10)
        killed_at = time.monotonic()
        try:
            wait_until(lambda: lab.synced_on((other,)) is not None, timeout=10)
        except AssertionError:
            failures = {k: v for k, v in lab.envoy.stats().items() if k.startswith("cluster.xds-grpc.") and ("fail" in k or "error" in k) and v}
            raise AssertionError(f"the proxy did not reconnect to instance {other} after {killed} was killed; Envoy's xds-grpc failures: "
                                 f"{failures}; {other}'s log: {(tmp_path / f'serve-{other}.log').read_text()[-1500:]}") from None
        reconnected = time.monotonic() - killed_at
        # It connected with the renewed certificate (or a later one), never the expired first.
        presented = lab.synced_on((other,))["client_certificate_expires"]
        assert datetime.datetime.fromisoformat(presented) >= renewed.not_valid_after_utc
        lab.write_mesh(0, 100)
        saved = time.monotonic()
        wait_until(lambda: lab.versions() == {"v2"}, timeout=10)
        print(f"reconnected to {other} {reconnected:.2f} s after the kill; the weight edit routed {time.monotonic() - saved:.2f} s after the save")
        # Every TLS context, the connection to the control plane's included, presents what the agent wrote last.
        wait_until(lambda: envoy_serials(lab.envoy) == {leaf(lab.certs / CHAIN_FILE).serial_number}, timeout=5)
    finally:
        lab.close()


def test_envoy_accepts_only_the_control_planes_spiffe_id(tmp_path):
    """A server whose certificate is a workload's of the same mesh (same roots, another SPIFFE ID)
    gets no stream from the proxy: Envoy refuses it on the SAN check of its xds-grpc cluster."""
    v1, v2 = Backend("reviews", "reviews-v1", "v1"), Backend("reviews", "reviews-v2", "v2")
    offset = free_offset()
    mesh_dir = tmp_path / "mesh"
    mesh_dir.mkdir()
    (mesh_dir / "mesh.yaml").write_text(MESH.format(v1=v1.port, v1_address="127.0.0.1", v2=v2.port, offset=offset, v1_weight=100, v2_weight=0))
    root = ca.make_root(TRUST_DOMAIN)
    site = ca.make_intermediate(root, "site-a")
    roots = certificate_pem(root.certificate)
    impostor_key = csr.make_private_key()
    impostor_chain = workload.sign_csr(csr.make_csr(impostor_key, CLIENT_ID), CLIENT_ID, site)
    mesh, problems = load_valid([str(mesh_dir)])
    assert problems == []
    running = xds_server.start(mesh, [str(mesh_dir)], ("127.0.0.1", free_port()), xds_server.ServerTls(impostor_chain, impostor_key, roots))
    envoy = None
    try:
        certs = tmp_path / "client" / "certs"
        client_key = csr.make_private_key()
        write_workload_certificates(str(certs), client_key, workload.sign_csr(csr.make_csr(client_key, CLIENT_ID), CLIENT_ID, site), roots)
        write_secret_files(str(certs))
        bootstrap = xds_bootstrap(mesh, PROXY, XdsServer((("127.0.0.1", running.grpc_port),), str(certs)))
        (tmp_path / "client" / "bootstrap.yaml").write_text(serialize(bootstrap, "yaml"))
        envoy = Envoy.__new__(Envoy)  # never ready: it gets no config
        _start_without_waiting(envoy, str(tmp_path / "client"), 15000 + offset)

        def refused_on_the_san() -> bool:
            try:
                return envoy.stat("cluster.xds-grpc.ssl.fail_verify_san") >= 1
            except OSError:  # its admin is not up yet
                return False
        wait_until(refused_on_the_san, timeout=10)
        assert envoy.stat("cluster_manager.cds.update_success") == 0
        assert [p["streams"] for p in running.plane.status()["proxies"] if p["proxy"] == PROXY] == [[]]
    finally:
        if envoy:
            envoy.stop()
        running.stop()
        v1.close(), v2.close()
