#!/usr/bin/env python3
"""Short-lived workload certificates renewed by `meshwright agent` under constant load.

What a user runs, each as its own process on loopback: `meshwright serve` with its CSR service
(signing with a site intermediate, certificates of --lifetime), `meshwright join-token` for two
proxies, `meshwright agent` per proxy (first certificate by the token, then renewals over mTLS
at two thirds of the lifetime), and a client and a server sidecar (real Envoy, rendered by
`meshwright render`) that talk mutual TLS with those certificates. A client sends --rate
requests a second through both sidecars for --duration; every answer that is not a 200 counts
as failed. Every second the bench reads the serial of the certificate each Envoy holds
(admin /certs), so a renewal counts as loaded only once Envoy serves with it.

The table: per proxy, the certificates the agent wrote (first + renewals), the serials Envoy
loaded, when each renewal happened (seconds after the load started) and how long it took (key,
CSR and signing round trip, from the agent's log); then requests, failures and wall time.
The exit status is 1 when a request failed or a proxy renewed less often than the lifetime asks.

  python bench/cert_renewal.py [--lifetime 2m] [--duration 10m] [--rate 50]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))
sys.path.insert(0, ROOT)

from meshwright.cli import main as meshwright_main  # noqa: E402
from meshwright.pki import ca, csr, workload  # noqa: E402
from meshwright.pki.ca import certificate_pem, private_key_pem  # noqa: E402
from meshwright.pki.spiffe import control_plane_spiffe_id  # noqa: E402
from tests.constant_load import ConstantLoad  # noqa: E402
from tests.harness import Backend, Envoy, free_port, render  # noqa: E402
from tests.integration.test_certificate_agent import MESH, PROXIES, envoy_serial  # noqa: E402
from tests.integration.test_mtls import distinct_offset  # noqa: E402

TRUST_DOMAIN = "cluster.local"
MESHWRIGHT = [sys.executable, "-m", "meshwright.cli"]
# The agent's log line of a certificate it wrote (agent.py request_certificate).
WRITTEN = re.compile(r"^(\S+ \S+) INFO proxy (\S+): (first|renewed) certificate for \S+ in ([0-9.]+) s", re.MULTILINE)


def seconds(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(text[:-1]) * units[text[-1]] if text[-1:] in units else float(text)


class Lab:
    """The mesh folder, the CA files, `meshwright serve` and the agents as processes, the Envoys."""

    def __init__(self, folder: str, lifetime: float):
        self.folder, self.lifetime = folder, lifetime
        taken: set[int] = set()
        self.offsets = {proxy: distinct_offset(taken) for proxy in PROXIES}
        self.app = Backend("server", "server-1")
        self.mesh_dir = os.path.join(folder, "mesh")
        os.makedirs(self.mesh_dir)
        with open(os.path.join(self.mesh_dir, "mesh.yaml"), "w") as handle:
            handle.write(MESH.format(server_offset=self.offsets["server.default"], client_offset=self.offsets["client.default"],
                                     inbound=free_port(), app=self.app.port))
        self.processes: dict[str, subprocess.Popen] = {}
        self.envoys: dict[str, Envoy] = {}
        self._write_ca_files()

    def _path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def _write_ca_files(self) -> None:
        root = ca.make_root(TRUST_DOMAIN)
        site = ca.make_intermediate(root, "site-a", trust_domains=[TRUST_DOMAIN])
        plane_key = csr.make_private_key()
        plane_id = control_plane_spiffe_id(TRUST_DOMAIN)
        files = {
            "root-cert.pem": certificate_pem(root.certificate),
            "plane-key.pem": plane_key,
            "plane-chain.pem": workload.sign_csr(csr.make_csr(plane_key, plane_id), plane_id, site),
            "signing-cert.pem": certificate_pem(site.certificate) + certificate_pem(root.certificate),
            "signing-key.pem": private_key_pem(site.key),
        }
        for name, content in files.items():
            with open(self._path(name), "wb") as handle:
                handle.write(content)

    def start_serve(self) -> None:
        self.csr_port, self.join_port = free_port(), free_port()
        self.processes["serve"] = subprocess.Popen(
            [*MESHWRIGHT, "serve", "--mesh", self.mesh_dir, "--listen", f"127.0.0.1:{free_port()}", "--status-listen", f"127.0.0.1:{free_port()}",
             "--tls-cert", self._path("plane-chain.pem"), "--tls-key", self._path("plane-key.pem"), "--ca", self._path("root-cert.pem"),
             "--signing-cert", self._path("signing-cert.pem"), "--signing-key", self._path("signing-key.pem"),
             "--cert-lifetime", f"{self.lifetime:g}s", "--csr-listen", f"127.0.0.1:{self.csr_port}",
             "--join-listen", f"127.0.0.1:{self.join_port}", "--join-tokens", self._path("tokens")],
            stdout=subprocess.DEVNULL, stderr=open(self._path("serve.log"), "w"))

    def start_agent(self, proxy: str) -> None:
        token_file = self._path(f"{proxy}.token")
        with contextlib.redirect_stderr(io.StringIO()):
            code = meshwright_main(["join-token", "--mesh", self.mesh_dir, "--proxy", proxy, "--tokens-dir", self._path("tokens"),
                                    "--ttl", "2m", "--out", token_file])
        assert code == 0, f"meshwright join-token exited {code}"
        self.processes[proxy] = subprocess.Popen(
            [*MESHWRIGHT, "agent", "--server", f"127.0.0.1:{self.csr_port}", "--join-server", f"127.0.0.1:{self.join_port}",
             "--proxy", proxy, "--certs-dir", self.certs_dir(proxy), "--join-token-file", token_file, "--ca", self._path("root-cert.pem")],
            stdout=subprocess.DEVNULL, stderr=open(self._path(f"{proxy}.agent.log"), "w"))

    def certs_dir(self, proxy: str) -> str:
        return self._path(os.path.join(proxy, "certs"))

    def start_envoy(self, proxy: str) -> None:
        chain = os.path.join(self.certs_dir(proxy), "cert-chain.pem")
        deadline = time.monotonic() + 30
        while not os.path.exists(chain):
            if time.monotonic() > deadline or self.processes[proxy].poll() is not None:
                raise RuntimeError(f"no certificate from the agent of {proxy}:\n{self.agent_log(proxy)}\n{self.log('serve.log')}")
            time.sleep(0.1)
        config_dir = self._path(os.path.join(proxy, "config"))
        with contextlib.redirect_stdout(io.StringIO()):
            render(self.mesh_dir, proxy, config_dir)
        self.envoys[proxy] = Envoy(config_dir, 15000 + self.offsets[proxy])

    def log(self, name: str) -> str:
        with open(self._path(name)) as handle:
            return handle.read()

    def agent_log(self, proxy: str) -> str:
        return self.log(f"{proxy}.agent.log")

    def stop(self) -> None:
        for envoy in self.envoys.values():
            envoy.stop()
        for process in reversed(list(self.processes.values())):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.app.close()


def certificates_written(agent_log: str, started_at: float) -> list[tuple[str, float, float]]:
    """(first|renewed, seconds after started_at (a time.time()), seconds the request took) per certificate the agent wrote."""
    out = []
    for stamp, _proxy, kind, took in WRITTEN.findall(agent_log):
        at = time.mktime(time.strptime(stamp.split(",")[0], "%Y-%m-%d %H:%M:%S")) + int(stamp.split(",")[1]) / 1000
        out.append((kind, at - started_at, float(took)))
    return out


def run(lifetime: float, duration: float, rate: float, folder: str) -> dict:
    lab = Lab(folder, lifetime)
    try:
        lab.start_serve()
        for proxy in PROXIES:
            lab.start_agent(proxy)
        for proxy in PROXIES:
            lab.start_envoy(proxy)
        serials = {proxy: [envoy_serial(lab.envoys[proxy])] for proxy in PROXIES}
        started_at, started = time.time(), time.monotonic()
        with ConstantLoad(15001 + lab.offsets["client.default"], "/orders", rate=rate, host="server.default.svc.cluster.local",
                          max_seconds=duration + 60) as load:
            while time.monotonic() - started < duration:
                time.sleep(1)
                for proxy in PROXIES:
                    serial = envoy_serial(lab.envoys[proxy])
                    if serial != serials[proxy][-1]:
                        serials[proxy].append(serial)
        wall = time.monotonic() - started
    finally:
        lab.stop()
    return {"lifetime": lifetime, "duration": wall, "rate": rate, "requests": load.sent, "failures": load.failures,
            "proxies": {proxy: {"written": certificates_written(lab.agent_log(proxy), started_at), "loaded": len(serials[proxy])}
                        for proxy in PROXIES}}


def table(result: dict) -> list[str]:
    rows = [("proxy", "written", "renewals", "loaded by Envoy", "renewed at (s after load start)", "renewal took (ms)")]
    for proxy, seen in result["proxies"].items():
        renewals = [(at, took) for kind, at, took in seen["written"] if kind == "renewed" and at >= 0]
        rows.append((proxy, str(len(seen["written"])), str(len(renewals)), str(seen["loaded"]),
                     " ".join(f"{at:.0f}" for at, _ in renewals) or "-", " ".join(f"{took * 1000:.0f}" for _, took in renewals) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.append(f"lifetime {result['lifetime']:g} s, load {result['rate']:g} req/s for {result['duration']:.0f} s: "
                 f"{result['requests']} requests, {len(result['failures'])} failed")
    lines += [f"  failed: {failure}" for failure in result["failures"][:10]]
    return lines


def expected_renewals(lifetime: float, duration: float) -> int:
    """Renewals at least: one every two thirds of the lifetime, the first possibly just before the load starts."""
    return max(1, int(duration / (lifetime * 2 / 3)) - 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lifetime", type=seconds, default=120.0, help="certificate lifetime (default 2m)")
    parser.add_argument("--duration", type=seconds, default=600.0, help="how long the load runs (default 10m)")
    parser.add_argument("--rate", type=float, default=50.0, help="requests a second (default 50)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mw-cert-renewal-") as folder:
        result = run(args.lifetime, args.duration, args.rate, folder)
    print("\n".join(table(result)))
    enough = all(sum(kind == "renewed" for kind, _, _ in seen["written"]) >= expected_renewals(args.lifetime, args.duration)
                 for seen in result["proxies"].values())
    return 0 if enough and not result["failures"] and result["requests"] else 1


if __name__ == "__main__":
    sys.exit(main())
