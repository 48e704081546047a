"""Certificates on demand on real Envoy: two sidecars talk mutual TLS with certificates that
`meshwright agent` (a process per proxy) gets from the control plane's CSR service, first by
a join token from `meshwright join-token`, then by renewal over mTLS. With a 24 s lifetime
each agent renews twice while requests flow, Envoy picks up every new certificate through
its watched certs directory, and no request fails (docs/control-plane.md).
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from cryptography import x509

from meshwright.cli import main as meshwright_main
from meshwright.pki import ca, csr, workload
from meshwright.pki.ca import certificate_pem
from meshwright.pki.spiffe import control_plane_spiffe_id
from meshwright.serve import server as xds_server
from meshwright.serve.source import load_valid
from tests.harness import Backend, Envoy, free_port, render, request
from tests.integration.test_mtls import distinct_offset

MESH = """\
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
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: default}}
spec:
  mtls: {{mode: STRICT}}
"""
PROXIES = ("server.default", "client.default")
LIFETIME_SECONDS = 24  # renewed at 16 s: two renewals in about 33 s
TRUST_DOMAIN = "cluster.local"


def leaf_serial(chain_path: str) -> int:
    with open(chain_path, "rb") as handle:
        return x509.load_pem_x509_certificate(handle.read()).serial_number


def envoy_serial(envoy: Envoy) -> int:
    """The serial of the certificate Envoy holds as its own ("default" secret); Envoy writes it
    in hex, with a leading zero when the digits are odd in number."""
    certificates = json.loads(envoy.admin("/certs"))["certificates"]
    return int([c["cert_chain"][0]["serial_number"] for c in certificates if c.get("cert_chain")][0], 16)


class Traffic:
    """The client calls the server through both sidecars, one request at a time, until stopped."""

    def __init__(self, port: int):
        self.port, self.statuses, self.stop = port, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self.statuses.append(request(self.port, "/orders", host="server.default.svc.cluster.local", timeout=5)[0])
            except OSError as error:
                self.statuses.append(repr(error))
            time.sleep(0.05)

    def finish(self) -> list:
        self.stop.set()
        self.thread.join(10)
        return self.statuses


def test_agents_renew_short_lived_certificates_under_traffic_with_no_failed_request(tmp_path):
    taken: set[int] = set()
    offsets = {proxy: distinct_offset(taken) for proxy in PROXIES}
    app = Backend("server", "server-1")
    inbound = free_port()
    mesh_dir = tmp_path / "mesh"
    mesh_dir.mkdir()
    (mesh_dir / "mesh.yaml").write_text(MESH.format(server_offset=offsets["server.default"], client_offset=offsets["client.default"],
                                                    inbound=inbound, app=app.port))
    root = ca.make_root(TRUST_DOMAIN)
    site = ca.make_intermediate(root, "site-a", trust_domains=[TRUST_DOMAIN])
    roots_path = tmp_path / "root-cert.pem"
    roots_path.write_bytes(certificate_pem(root.certificate))
    plane_key = csr.make_private_key()
    plane_chain = workload.sign_csr(csr.make_csr(plane_key, control_plane_spiffe_id(TRUST_DOMAIN)), control_plane_spiffe_id(TRUST_DOMAIN), site)
    mesh, problems = load_valid([str(mesh_dir)])
    assert problems == []
    tokens_dir = str(tmp_path / "tokens")
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    logging.getLogger("meshwright.serve").addHandler(handler)
    logging.getLogger("meshwright.serve").setLevel(logging.INFO)
    running = xds_server.start(mesh, [str(mesh_dir)], ("127.0.0.1", free_port()), xds_server.ServerTls(plane_chain, plane_key, roots_path.read_bytes()),
                               csr=xds_server.CsrSettings(site, ("127.0.0.1", free_port()), ("127.0.0.1", free_port()), tokens_dir,
                                                          datetime.timedelta(seconds=LIFETIME_SECONDS)))
    agents: dict[str, subprocess.Popen] = {}
    envoys: dict[str, Envoy] = {}
    try:
        for proxy in PROXIES:
            token_file = str(tmp_path / f"{proxy}.token")
            with contextlib.redirect_stderr(io.StringIO()):
                assert meshwright_main(["join-token", "--mesh", str(mesh_dir), "--proxy", proxy, "--tokens-dir", tokens_dir,
                                        "--ttl", "2m", "--out", token_file]) == 0
            certs_dir = str(tmp_path / proxy / "certs")
            agents[proxy] = subprocess.Popen(
                [sys.executable, "-m", "meshwright.cli", "agent", "--server", f"127.0.0.1:{running.csr_port}",
                 "--join-server", f"127.0.0.1:{running.join_port}", "--proxy", proxy, "--certs-dir", certs_dir,
                 "--join-token-file", token_file, "--ca", str(roots_path)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for proxy in PROXIES:
            chain_path = str(tmp_path / proxy / "certs" / "cert-chain.pem")
            deadline = time.monotonic() + 15
            while not os.path.exists(chain_path):
                assert time.monotonic() < deadline and agents[proxy].poll() is None, f"no certificate from the agent of {proxy}"
                time.sleep(0.1)
            key_path = os.path.join(os.path.dirname(chain_path), "key.pem")
            assert os.stat(os.path.realpath(key_path)).st_mode & 0o777 == 0o600
            config_dir = str(tmp_path / proxy / "config")
            render(str(mesh_dir), proxy, config_dir)
            envoys[proxy] = Envoy(config_dir, 15000 + offsets[proxy])

        traffic = Traffic(15001 + offsets["client.default"])
        started = time.monotonic()
        seen = {proxy: {envoy_serial(envoys[proxy])} for proxy in PROXIES}
        deadline = time.monotonic() + 60
        while min(len(serials) for serials in seen.values()) < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
            for proxy in PROXIES:
                seen[proxy].add(envoy_serial(envoys[proxy]))
        time.sleep(1)  # requests on the last certificates too
        statuses = traffic.finish()
        print(f"{len(statuses)} requests in {time.monotonic() - started:.1f} s; serials seen: {[len(s) for s in seen.values()]}")
        for proxy in PROXIES:
            # Envoy holds what the agent wrote last: the watched directory carried every renewal.
            assert envoy_serial(envoys[proxy]) == leaf_serial(str(tmp_path / proxy / "certs" / "cert-chain.pem"))
    finally:
        for envoy in envoys.values():
            envoy.stop()
        outputs = {}
        for proxy, agent in agents.items():
            agent.send_signal(signal.SIGTERM)
            outputs[proxy] = (agent.communicate(timeout=10)[1], agent.returncode)
        running.stop()
        logging.getLogger("meshwright.serve").removeHandler(handler)
        app.close()

    assert all(len(serials) >= 3 for serials in seen.values()), seen  # the first certificate and two renewals, each loaded by Envoy
    assert len(statuses) > 100 and set(statuses) == {200}, [s for s in statuses if s != 200][:5]
    for proxy, (stderr, returncode) in outputs.items():
        assert returncode == 0, stderr
        assert "first certificate" in stderr and stderr.count("renewed certificate") >= 2, stderr
        assert f"proxy {proxy}: stopped" in stderr
    assert log.getvalue().count("(join token)") == 2 and "refused" not in log.getvalue()
