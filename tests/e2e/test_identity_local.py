"""Mesh identity end to end on inventories/local: `deploy.yml` gives every proxy a workload
certificate from the mesh CA (keys made on each host, signed on the controller), sidecars
accept only mutual TLS (STRICT, as the seed's MeshConfig says), an AuthorizationPolicy lets
only order-service (and the gateway, for /payment) call payment-service; `rotate_certs.yml`
replaces workload certificates, intermediates and the root under constant traffic with no
failed request, as Istio's CA rotates without downtime; `cert_report.yml` reports it all.

The seed mesh is copied without its gateway rate limits (10 and 5 requests/s) so that the
constant load of these tests is not refused by design. Deployed once into a temporary state
folder, removed at the end.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import pathlib
import threading
import time
import urllib.request

import pytest
from cryptography import x509

from tests.e2e.deploy import remove_state_folder, run_playbook, state_folder
from tests.e2e.test_deploy_local import Lab, get, processes_under
from tests.modules.conftest import run_module

ADMIN = {"ingress": 15100, "order-1": 15200, "order-2": 15300, "payment-1": 15400, "payment-2": 15500}
INBOUND = {"order-1": 15206, "order-2": 15306, "payment-1": 15406, "payment-2": 15506}
OUTBOUND = {"order-1": 15201, "payment-1": 15401}
PAYMENT_HOST = "payment-service.default.svc.cluster.local"


class IdentityLab(Lab):
    def __init__(self, tmp):
        super().__init__(tmp)
        os.remove(os.path.join(self.mesh, "rate-limits.yaml"))

    def rotate(self, **extra):
        return run_playbook("rotate_certs.yml", dict(self.extra_vars, **extra))

    @property
    def ca(self) -> str:
        return os.path.join(self.state, "ca")


@pytest.fixture(scope="module")
def lab():
    # A short folder name: supervisord's socket path must fit AF_UNIX's 108 bytes.
    folder = state_folder("id")
    mesh_lab = IdentityLab(pathlib.Path(folder))
    run = mesh_lab.deploy()
    try:
        assert run.returncode == 0, f"deploy failed:\n{run}"
        yield mesh_lab
    finally:
        mesh_lab.uninstall()
        for pid in processes_under(mesh_lab.state):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        remove_state_folder(folder)


def admin_json(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.load(response)


def envoy_certs(host: str) -> tuple[list[str], list[str]]:
    """(serials of the workload certificates the proxy presents, serials of the roots it trusts)."""
    contexts = admin_json(ADMIN[host], "/certs")["certificates"]
    chain = sorted({c["serial_number"] for context in contexts for c in context["cert_chain"] or []})
    roots = sorted({c["serial_number"] for context in contexts for c in context["ca_cert"] or []})
    return chain, roots


def all_serials() -> dict[str, str]:
    out = {}
    for host in ADMIN:
        [serial], _ = envoy_certs(host)
        out[host] = serial
    return out


def stat_sum(host: str, pattern: str) -> int:
    stats = admin_json(ADMIN[host], "/stats?format=json")["stats"]
    return sum(int(stat.get("value", 0)) for stat in stats if re.fullmatch(pattern, stat.get("name", "")))


def via(port: int, path: str = "/payment", host: str = PAYMENT_HOST) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"Host": host})
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


class Load:
    """Constant load through the gateway: `rate` requests a second, alternating /order (gateway
    -> order -> payment) and /payment (gateway -> payment), each on a new client connection,
    until stopped (at most `limit` seconds). Every non-200 answer or error is kept."""

    def __init__(self, rate: int = 50, limit: float = 300):
        self.rate, self.limit = rate, limit
        self.sent, self.failures = 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        started = time.monotonic()
        while not self._stop.is_set() and time.monotonic() - started < self.limit:
            path = "/order" if self.sent % 2 == 0 else "/payment"
            try:
                status, body = get(path)
                if status != 200:
                    self.failures.append((path, status, body))
            except OSError as error:
                self.failures.append((path, "error", str(error)))
            self.sent += 1
            delay = started + self.sent / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def __enter__(self):
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)
        self.elapsed = time.monotonic() - self._started

    def kept_up(self) -> bool:
        """Whether the load was what it says (at least 80% of the rate, the whole time)."""
        return self.sent >= 0.8 * self.rate * self.elapsed


def test_strict_mtls_refuses_a_plaintext_client_at_every_sidecar(lab):
    """PeerAuthentication STRICT (the MeshConfig's defaultMtlsMode): a client without a mesh
    certificate gets no answer at a sidecar's inbound port; the handshake is what fails."""
    for host, port in INBOUND.items():
        with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError, http.client.BadStatusLine)):
            via(port, "/", "order-service.default.svc.cluster.local")
    # Something is listening there: a TLS client hello gets a server answer (it asks for a certificate).
    with socket.create_connection(("127.0.0.1", INBOUND["payment-1"]), timeout=5) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"HTTP/1.1" not in raw.recv(1024)


def cluster_handshakes(host: str, service: str) -> int:
    """TLS handshakes of host's cluster for a service (stat names carry Istio's labels after ';')."""
    return stat_sum(host, rf"cluster\.outbound\|80\|\|{re.escape(service)}\.default\.svc\.cluster\.local(;.*)?\.ssl\.handshake")


def test_gateway_to_order_to_payment_is_mutual_tls_on_every_hop(lab):
    """Each hop's client side (a cluster) and server side (an inbound listener) count TLS
    handshakes; there is no plaintext path left (STRICT), so the 200s prove mTLS throughout."""
    for _ in range(4):
        status, body = get("/order")
        assert status == 200 and body["upstream"]["service"] == "payment-service", body
    assert get("/payment")[0] == 200
    orders, payments = ("order-1", "order-2"), ("payment-1", "payment-2")
    assert cluster_handshakes("ingress", "order-service") > 0
    assert sum(stat_sum(host, r"listener\..*_1[0-9]{3}6\.ssl\.handshake") for host in orders) > 0
    assert sum(cluster_handshakes(host, "payment-service") for host in orders) > 0
    assert cluster_handshakes("ingress", "payment-service") > 0
    assert sum(stat_sum(host, r"listener\..*_1[0-9]{3}6\.ssl\.handshake") for host in payments) > 0
    # No client side failed a handshake (the plaintext clients of the test above failed at listeners).
    for host in ADMIN:
        assert stat_sum(host, r"cluster\..*ssl\.connection_error") == 0, host


def test_only_order_service_and_the_gateway_may_call_payment_service(lab):
    """AuthorizationPolicy payment-callers: order-service's principal is allowed, the gateway's
    for /payment; payment-service's own sidecar calling it (another workload, a valid mesh
    certificate) gets 403, and the denial is counted by payment's RBAC filter."""
    denied_before = sum(stat_sum(host, r"http\.inbound_.*\.rbac\.allow\.denied") for host in ("payment-1", "payment-2"))
    assert via(OUTBOUND["order-1"])[0] == 200
    assert get("/payment")[0] == 200
    status, body = via(OUTBOUND["payment-1"])
    assert (status, body) == (403, "RBAC: access denied")
    denied_after = sum(stat_sum(host, r"http\.inbound_.*\.rbac\.allow\.denied") for host in ("payment-1", "payment-2"))
    assert denied_after == denied_before + 1


def test_forced_workload_rotation_under_load_fails_no_request(lab):
    before = all_serials()
    with Load() as load:
        run = lab.rotate(force=True)
    assert run.returncode == 0, str(run)
    assert load.kept_up() and load.sent > 100 and load.failures == [], (load.sent, load.elapsed, load.failures[:5])
    after = all_serials()
    assert all(after[host] != before[host] for host in ADMIN), (before, after)


def intermediate_serial(chain_path: str) -> str:
    certificates = x509.load_pem_x509_certificates(open(chain_path, "rb").read())
    return format(certificates[1].serial_number, "x")


def test_intermediate_rotation_under_load_reissues_every_workload(lab):
    chain = os.path.join(lab.state, "payment-1", "etc", "meshwright", "certs", "cert-chain.pem")
    before, old_intermediate = all_serials(), intermediate_serial(chain)
    with Load() as load:
        run = lab.rotate(rotate="intermediate")
    assert run.returncode == 0, str(run)
    assert load.kept_up() and load.sent > 100 and load.failures == [], (load.sent, load.elapsed, load.failures[:5])
    after = all_serials()
    assert all(after[host] != before[host] for host in ADMIN), (before, after)
    assert intermediate_serial(chain) != old_intermediate


def test_root_rotation_under_load_ends_with_only_the_new_root_trusted(lab):
    _, [old_root] = envoy_certs("payment-1")
    before = all_serials()
    with Load() as load:
        run = lab.rotate(rotate="root")
    assert run.returncode == 0, str(run)
    assert load.kept_up() and load.sent > 100 and load.failures == [], (load.sent, load.elapsed, load.failures[:5])
    after = all_serials()
    assert all(after[host] != before[host] for host in ADMIN), (before, after)
    roots = {host: envoy_certs(host)[1] for host in ADMIN}
    [new_root] = roots["ingress"]
    assert new_root != old_root and all(trusted == [new_root] for trusted in roots.values()), roots
    assert sorted(os.listdir(lab.ca)) == [".meshwright.lock", "intermediates", "root"]
    # A plain rotate-certs afterwards: nothing is due, nothing changes.
    run = lab.rotate()
    assert run.returncode == 0, str(run)
    assert all(count == 0 for count in run.changed().values()), str(run)
    assert all_serials() == after


def test_a_root_rotation_interrupted_after_its_first_step_resumes(lab):
    """The first step (both roots in every bundle) is done, then the run stops; the next run
    goes on from there: no third root is made, and it ends with the one new root trusted."""
    begun = run_module("mesh_ca", path=lab.ca, intermediates=["local"], rotate="root_begin")
    assert begun["rotation"] == "root_begun"
    run = lab.rotate(rotate="root")
    assert run.returncode == 0, str(run)
    roots = {host: envoy_certs(host)[1] for host in ADMIN}
    assert all(trusted == [begun["next_root"]["serial"]] for trusted in roots.values()), roots


def test_cert_report_shows_every_proxy_using_its_certificate(lab, tmp_path):
    report_file = str(tmp_path / "certs.json")
    run = run_playbook("cert_report.yml", dict(lab.extra_vars, report_file=report_file, warn_days=31))
    assert run.returncode == 0, str(run)
    report = json.load(open(report_file))
    serials = all_serials()
    assert set(report) == {"ingress.default", "order-1.default", "order-2.default", "payment-1.default", "payment-2.default"}
    for proxy, info in report.items():
        host = proxy.split(".")[0]
        assert info["certificate"]["serial"] == serials[host]
        assert info["envoy"]["in_use"] is True
        assert info["certificate"]["spiffe_id"].startswith("spiffe://cluster.local/ns/default/sa/")
        # 30-day certificates are under the 31-day threshold asked for: each is flagged.
        assert len(info["alerts"]) == 1 and "expires in" in info["alerts"][0]
    assert re.search(r"payment-1\.default\s+spiffe://cluster.local/ns/default/sa/payment-service\s+\w{12}\.\.\s+\d{4}-\d\d-\d\d\s+[\d.]+\s+yes", run.output), str(run)


def test_a_lost_ca_folder_is_refused_before_any_host_changes_unless_a_new_root_is_asked_for(lab):
    """Issue 10 item 14: with the CA folder gone, deploy used to make a new root silently and
    move hosts to it one by one. It now stops in its first play, naming the hosts, and every
    proxy keeps its certificate; -e mesh_ca_new_root=true makes the new root on purpose."""
    import shutil
    before = all_serials()
    _, [old_root] = envoy_certs("payment-1")
    lost = lab.ca + ".lost"
    os.rename(lab.ca, lost)
    try:
        run = lab.deploy()
        assert run.returncode != 0, str(run)
        assert f"the mesh CA at {lab.ca} has no root CA, but hosts already hold certificates from a mesh CA" in run.output, str(run)
        assert "the CA folder looks lost" in run.output and "-e mesh_ca_new_root=true" in run.output, str(run)
        assert "payment-1 trusts" in run.output, str(run)
        assert all_serials() == before
        assert not os.path.exists(os.path.join(lab.ca, "root"))
        run = lab.deploy("-e", "mesh_ca_new_root=true")
        assert run.returncode == 0, str(run)
        after = all_serials()
        assert all(after[host] != before[host] for host in ADMIN), (before, after)
        assert all(envoy_certs(host)[1] != [old_root] for host in ADMIN)
    finally:
        shutil.rmtree(lost, ignore_errors=True)
