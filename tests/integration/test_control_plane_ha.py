"""Two `meshwright serve` instances (processes, mTLS) that share nothing but the mesh folder
and the CA chain, and a real Envoy whose bootstrap (`meshwright xds-bootstrap --xds A --xds B`)
names both: `meshwright status` merges the instances' views, `meshwright proxy-config` shows
what the control plane sends and `--diff` compares it with Envoy's config_dump, and killing
the instance the proxy is connected to moves it to the other with no failed request
(docs/control-plane.md, "High availability").

One module-scoped lab (two servers, one Envoy); the tests run in file order, the kill last.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from cryptography import x509

from meshwright.agent import write_secret_files
from meshwright.cli import main as meshwright_main
from meshwright.pki import ca, csr, workload
from meshwright.pki.ca import certificate_pem
from meshwright.pki.spiffe import control_plane_spiffe_id, spiffe_id
from meshwright.pki.store import write_workload_certificates
from tests.constant_load import ConstantLoad
from tests.harness import ENVOY, Backend, Envoy, free_port, request
from tests.integration.test_control_plane import MESH, PROXY, TRUST_DOMAIN, wait_until
from tests.integration.test_mtls import distinct_offset

INSTANCES = ("a", "b")
DELTA_PROXY = "client-delta.default"
# A second client, on incremental xDS: both protocols move between instances.
DELTA_CLIENT = """\
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: client-delta
  namespace: default
  annotations: {{meshwright.io/port-offset: "{offset}"}}
spec: {{address: 127.0.0.1, labels: {{app: client}}, serviceAccount: client}}
"""


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = meshwright_main(argv)
    return code, out.getvalue(), err.getvalue()


class HaLab:
    def __init__(self, folder):
        self.folder = folder
        self.v1, self.v2 = Backend("reviews", "reviews-v1", "v1"), Backend("reviews", "reviews-v2", "v2")
        taken: set[int] = set()
        self.offset, self.delta_offset = distinct_offset(taken), distinct_offset(taken)
        self.port, self.delta_port = 15001 + self.offset, 15001 + self.delta_offset
        self.mesh_dir = folder / "mesh"
        self.mesh_dir.mkdir()
        self.write_mesh(100, 0)
        root = ca.make_root(TRUST_DOMAIN)
        issuer = ca.make_intermediate(root, "site-a")
        self.roots = certificate_pem(root.certificate)
        plane = folder / "control-plane"
        plane.mkdir()
        plane_id = control_plane_spiffe_id(TRUST_DOMAIN)
        key = csr.make_private_key()
        (plane / "key.pem").write_bytes(key)
        (plane / "cert-chain.pem").write_bytes(workload.sign_csr(csr.make_csr(key, plane_id), plane_id, issuer))
        (plane / "root-cert.pem").write_bytes(self.roots)
        self.certs = folder / "client" / "certs"
        self.certs.mkdir(parents=True)
        client_key, client_id = csr.make_private_key(), spiffe_id(TRUST_DOMAIN, "default", "client")
        self.client_chain = workload.sign_csr(csr.make_csr(client_key, client_id), client_id, issuer)
        write_workload_certificates(str(self.certs), client_key, self.client_chain, self.roots)
        write_secret_files(str(self.certs))  # as the agent does: the xds-grpc cluster's SDS files
        self.grpc = {name: free_port() for name in INSTANCES}
        self.status_ports = {name: free_port() for name in INSTANCES}
        self.plane_dir = plane
        self.servers = {}
        self.envoy = self.delta_envoy = None
        for name in INSTANCES:
            self.start_server(name)
        self.envoy = self.start_envoy(PROXY, "client", self.offset)
        self.delta_envoy = self.start_envoy(DELTA_PROXY, "client-delta", self.delta_offset, "--delta")

    def start_server(self, name: str) -> None:
        plane = self.plane_dir
        self.servers[name] = subprocess.Popen(
            [sys.executable, "-m", "meshwright.cli", "serve", "--mesh", str(self.mesh_dir), "--listen", f"127.0.0.1:{self.grpc[name]}",
             "--status-listen", f"127.0.0.1:{self.status_ports[name]}", "--tls-cert", str(plane / "cert-chain.pem"),
             "--tls-key", str(plane / "key.pem"), "--ca", str(plane / "root-cert.pem")],
            stdout=subprocess.DEVNULL, stderr=open(self.folder / f"serve-{name}.log", "a"))
        wait_until(lambda: self._answers(name), timeout=20)

    def start_envoy(self, proxy: str, folder: str, offset: int, *options: str) -> Envoy:
        """The proxy's Envoy on a bootstrap that names both instances (the client's certificate: same service account)."""
        code, _, err = run(["xds-bootstrap", "--mesh", str(self.mesh_dir), "--proxy", proxy, "--certs-dir", str(self.certs),
                            "--out", str(self.folder / folder / "bootstrap.yaml"), *options, *(f"--xds=127.0.0.1:{self.grpc[n]}" for n in INSTANCES)])
        assert code == 0, err
        return Envoy(str(self.folder / folder), 15000 + offset)

    def write_mesh(self, v1_weight: int, v2_weight: int, extra: str = "") -> None:
        text = MESH.format(v1=self.v1.port, v1_address="127.0.0.1", v2=self.v2.port, offset=self.offset, v1_weight=v1_weight, v2_weight=v2_weight)
        text += DELTA_CLIENT.format(offset=self.delta_offset)
        (self.mesh_dir / ".mesh.yaml.tmp").write_text(text + extra)
        os.replace(self.mesh_dir / ".mesh.yaml.tmp", self.mesh_dir / "mesh.yaml")

    def _answers(self, name: str) -> bool:
        assert self.servers[name].poll() is None, (self.folder / f"serve-{name}.log").read_text()
        return run(["status", "--server", f"127.0.0.1:{self.status_ports[name]}"])[0] == 0

    def server_list(self) -> str:
        return ",".join(f"127.0.0.1:{self.status_ports[name]}" for name in INSTANCES)

    def status(self) -> dict:
        code, out, err = run(["status", "--server", self.server_list(), "--json"])
        assert code == 0, err
        return json.loads(out)

    def streams(self, proxy: str = PROXY) -> list[dict]:
        return [p for p in self.status()["proxies"] if p["proxy"] == proxy][0]["streams"]

    def synced_on(self, proxy: str = PROXY) -> str | None:
        """The instance the proxy is connected to with every type it asked for SYNCED."""
        streams = self.streams(proxy)
        if len(streams) == 1 and streams[0]["types"] and all(t["state"] == "SYNCED" for t in streams[0]["types"].values()):
            return streams[0]["instance"]
        return None

    def versions(self, count: int, port: int | None = None) -> set[str]:
        return {request(port or self.port, "/reviews", host="reviews")[1].get("version") for _ in range(count)}

    def close(self) -> None:
        for envoy in (self.envoy, self.delta_envoy):
            if envoy:
                envoy.stop()
        for process in self.servers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=10)
        self.v1.close(), self.v2.close()


@pytest.fixture(scope="module")
def ha(tmp_path_factory):
    lab = HaLab(tmp_path_factory.mktemp("ha"))
    yield lab
    lab.close()


def envoy_version() -> str:
    out = subprocess.run([ENVOY, "--version"], capture_output=True, text=True).stdout
    return out.split("version: ")[1].split("/")[1]  # "envoy  version: HASH/1.40.0/Clean/RELEASE/BoringSSL"


def test_status_merges_the_instances_and_shows_instance_states_certificate_and_envoy_version(ha):
    """`meshwright status --server A,B`: the client on the one instance it is connected to, CDS
    LDS EDS RDS SYNCED (no SDS without workload identity), its certificate's expiry, its Envoy
    version; proxies connected nowhere in rows of their own; each instance's generation."""
    wait_until(lambda: ha.synced_on() is not None, timeout=10)
    instance = ha.synced_on()
    assert instance in {f"127.0.0.1:{ha.grpc[name]}" for name in INSTANCES}
    code, out, _ = run(["status", "--server", f"127.0.0.1:{ha.status_ports['a']}", "--server", f"127.0.0.1:{ha.status_ports['b']}"])
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "INSTANCE", "CDS", "LDS", "EDS", "RDS", "SDS", "CERTIFICATE", "EXPIRES", "ENVOY"]
    client = [line.split() for line in lines if line.startswith(PROXY)]
    expires = x509.load_pem_x509_certificate(ha.client_chain).not_valid_after_utc
    assert client == [[PROXY, instance, "SYNCED", "SYNCED", "SYNCED", "SYNCED", "-", f"{expires:%Y-%m-%dT%H:%M:%SZ}", client[0][8], envoy_version()]]
    assert client[0][8].startswith("(") and client[0][8].endswith("m)")  # time left, as 23h59m
    assert [line.split()[:3] for line in lines if line.startswith("reviews-v1.default")] == [["reviews-v1.default", "-", "-"]]
    assert {f"instance 127.0.0.1:{ha.grpc[name]}: mesh generation 1" for name in INSTANCES} <= set(lines)


def test_proxy_config_shows_what_the_control_plane_sends(ha):
    """The short table of clusters, the whole resources as JSON and YAML, routes' domains."""
    code, out, _ = run(["proxy-config", PROXY, "clusters", "--server", ha.server_list()])
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "TLS", "VERSION"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert rows["outbound|9080|v1|reviews.default.svc.cluster.local"][0] == "EDS"
    code, out, _ = run(["proxy-config", PROXY, "clusters", "--server", ha.server_list(), "-o", "json"])
    clusters = json.loads(out)
    assert code == 0 and {c["name"] for c in clusters} == set(rows)
    dumped = {c["cluster"]["name"] for c in json.loads(ha.envoy.admin("/config_dump?resource=dynamic_active_clusters"))["configs"]}
    assert dumped == set(rows)
    code, out, _ = run(["proxy-config", PROXY, "routes", "--server", ha.server_list(), "-o", "yaml"])
    assert code == 0 and "reviews.default.svc.cluster.local" in {d for r in yaml.safe_load(out) for h in r["virtual_hosts"] for d in h["domains"]}
    code, out, _ = run(["proxy-config", PROXY, "endpoints", "--server", ha.server_list()])
    assert code == 0 and f"127.0.0.1:{ha.v1.port}" in out
    code, _, err = run(["proxy-config", "ghost.default", "clusters", "--server", ha.server_list()])
    assert code == 2 and "no proxy ghost.default in the mesh this instance serves" in err


@pytest.mark.parametrize("kind", ["clusters", "listeners", "routes", "endpoints", "secrets"])
def test_proxy_config_diff_is_empty_when_envoy_holds_what_was_sent(ha, kind):
    wait_until(lambda: ha.synced_on() is not None, timeout=10)
    code, out, _ = run(["proxy-config", PROXY, kind, "--server", ha.server_list(), "--diff"])
    assert code == 0, out
    summary = out.splitlines()[0]
    assert summary.startswith(f"{kind}: ") and summary.endswith(" 0 differ, 0 only sent by the control plane, 0 only in Envoy"), out
    if kind != "secrets":
        assert not summary.startswith(f"{kind}: 0 the same")


def test_proxy_config_diff_shows_a_cluster_envoy_rejected(ha):
    """An EnvoyFilter Envoy NACKs (a negative connect timeout): the control plane sends the
    cluster with it, Envoy keeps the old one, and --diff shows the field that differs (exit 1)."""
    cluster = "outbound|9080||reviews.default.svc.cluster.local"
    ha.write_mesh(100, 0, """\
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
""")
    try:
        wait_until(lambda: any(s["types"].get("clusters", {}).get("state") == "NACK" for s in ha.streams()), timeout=5)
        code, out, _ = run(["status", "--server", ha.server_list()])
        assert code == 0 and f"{PROXY} CDS NACK (" in out and "positive duration" in out
        code, out, _ = run(["proxy-config", PROXY, "clusters", "--server", ha.server_list(), "--diff"])
        assert code == 1, out
        assert f"--- control plane: clusters {cluster}" in out and f"+++ envoy 127.0.0.1:{15000 + ha.offset}: clusters {cluster}" in out
        assert '-  "connect_timeout": "-1s",' in out
    finally:
        ha.write_mesh(100, 0)
    wait_until(lambda: ha.synced_on() is not None, timeout=5)


def test_killing_the_connected_instance_moves_the_proxy_with_no_failed_request(ha):
    """Constant load through both clients (state of the world and delta); the instance the
    first is connected to is killed (SIGKILL): no request fails, both are SYNCED on the other
    instance within seconds, `meshwright status` names the dead one UNREACHABLE, and an edit
    made after the kill reaches both. The killed instance is started again and the other one
    killed: both move back, and the next edit reaches them too."""
    proxies = (PROXY, DELTA_PROXY)
    wait_until(lambda: all(ha.synced_on(proxy) for proxy in proxies), timeout=10)
    address = {name: f"127.0.0.1:{ha.grpc[name]}" for name in INSTANCES}
    victim = [name for name in INSTANCES if ha.synced_on() == address[name]][0]
    survivor = [name for name in INSTANCES if name != victim][0]
    with ConstantLoad(ha.port, "/reviews", rate=40, host="reviews", max_seconds=90) as load, \
            ConstantLoad(ha.delta_port, "/reviews", rate=40, host="reviews", max_seconds=90) as delta_load:
        time.sleep(1)
        ha.servers[victim].kill()
        killed = time.monotonic()
        ha.servers[victim].wait(5)
        took = wait_until(lambda: all(ha.synced_on(proxy) == address[survivor] for proxy in proxies), timeout=10)
        print(f"both proxies SYNCED on the other instance {took:.2f} s after the kill")
        code, out, _ = run(["status", "--server", ha.server_list()])
        assert code == 0
        assert f"instance UNREACHABLE: 127.0.0.1:{ha.status_ports[victim]}: no status from meshwright serve there" in out
        assert [line.split()[:6] for line in out.splitlines() if line.startswith(PROXY)] == [
            [PROXY, address[survivor], "SYNCED", "SYNCED", "SYNCED", "SYNCED"]]
        ha.write_mesh(0, 100)
        wait_until(lambda: ha.versions(5) == {"v2"} and ha.versions(5, ha.delta_port) == {"v2"}, timeout=5)
        assert time.monotonic() - killed < 20

        ha.start_server(victim)  # back, then the other one dies: both proxies move back
        ha.servers[survivor].kill()
        ha.servers[survivor].wait(5)
        took = wait_until(lambda: all(ha.synced_on(proxy) == address[victim] for proxy in proxies), timeout=10)
        print(f"both proxies SYNCED on the restarted instance {took:.2f} s after the second kill")
        ha.write_mesh(100, 0)
        wait_until(lambda: ha.versions(5) == {"v1"} and ha.versions(5, ha.delta_port) == {"v1"}, timeout=5)
        time.sleep(1)
    for one in (load, delta_load):
        assert one.failures == [] and one.succeeded > 100, one.failures[:5]
    assert ha.envoy.process.poll() is None and ha.delta_envoy.process.poll() is None
