"""The control plane's CSR service (serve/certificates.py) over real gRPC on loopback, and
`meshwright agent`'s side of it: what is signed, and every refusal with the log line it
leaves and the status the caller gets (docs/control-plane.md, "Certificates on demand")."""

from __future__ import annotations

import datetime
import json
import logging
import threading
import time

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from meshwright.agent import Agent, AgentError, Held, write_secret_files
from meshwright.pki import ca, csr, workload
from meshwright.pki.ca import certificate_pem
from meshwright.serve.certificates import CA_SERVER_NAME, PATH, CertificateService, ServingCertificate, csr_server
from meshwright.serve.join_tokens import JoinTokens, issue_token
from tests.harness import free_port

CLIENT = "spiffe://cluster.local/ns/default/sa/client"
SERVER = "spiffe://cluster.local/ns/default/sa/server"
IDENTITIES = {"client.default": CLIENT, "server.default": SERVER}
LIFETIME = datetime.timedelta(hours=24)


class Lab:
    """A CSR service on two loopback ports (mTLS, join) with a tokens directory, and its log."""

    def __init__(self, tmp_path, caplog):
        self.root = ca.make_root("cluster.local")
        self.site = ca.make_intermediate(self.root, "site-a", trust_domains=["cluster.local"])
        self.roots = certificate_pem(self.root.certificate)
        self.tokens_dir = str(tmp_path / "tokens")
        self.status_refusals: list[str] = []
        self.service = CertificateService(self.site, IDENTITIES.get, JoinTokens(self.tokens_dir), LIFETIME, self.status_refusals.append)
        serving = ServingCertificate(self.site, "spiffe://cluster.local/ns/meshwright-system/sa/meshwright-control-plane", self.roots)
        self.server, self.csr_port, self.join_port = csr_server(self.service, serving, ("127.0.0.1", free_port()), ("127.0.0.1", free_port()))
        self.caplog = caplog
        caplog.set_level(logging.INFO, logger="meshwright.serve")

    def token(self, proxy: str = "client.default", ttl: float = 600, now: float | None = None) -> str:
        return issue_token(self.tokens_dir, proxy, ttl, now)

    def call(self, body: dict, client: tuple[bytes, bytes] | None = None) -> list[x509.Certificate]:
        """CreateCertificate: over mTLS with client (key, chain), else on the join port without a certificate."""
        if client is not None:
            credentials, port = grpc.ssl_channel_credentials(self.roots, client[0], client[1]), self.csr_port
        else:
            credentials, port = grpc.ssl_channel_credentials(self.roots), self.join_port
        with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=(("grpc.ssl_target_name_override", CA_SERVER_NAME),)) as channel:
            answer = channel.unary_unary(PATH)(json.dumps(body).encode(), timeout=10)
        return [x509.load_pem_x509_certificate(pem.encode()) for pem in json.loads(answer)["cert_chain"]]

    def refused(self, body: dict, client=None) -> tuple[grpc.StatusCode, str, str]:
        """(status, details, the service's log line) of a refused call."""
        with pytest.raises(grpc.RpcError) as raised:
            self.call(body, client)
        lines = [r.getMessage() for r in self.caplog.records if r.getMessage().startswith("refused CSR from")]
        return raised.value.code(), raised.value.details(), lines[-1] if lines else ""

    def certificate(self, spiffe: str) -> tuple[bytes, bytes]:
        key = csr.make_private_key()
        return key, workload.sign_csr(csr.make_csr(key, spiffe), spiffe, self.site)


@pytest.fixture
def lab(tmp_path, caplog):
    running = Lab(tmp_path, caplog)
    yield running
    running.server.stop(None)


def make_csr(key=None, sans=(CLIENT,), extensions=()) -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    names = [x509.DNSName(s[4:]) if s.startswith("dns:") else x509.UniformResourceIdentifier(s) for s in sans]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=True)
    for extension in extensions:
        builder = builder.add_extension(extension, critical=True)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def test_a_join_token_gets_a_short_lived_workload_certificate(lab):
    chain = lab.call({"proxy": "client.default", "csr": make_csr(), "join_token": lab.token()})
    leaf = chain[0]
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier) == [CLIENT]
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc - ca.CLOCK_SKEW
    assert abs(lifetime - LIFETIME) < datetime.timedelta(seconds=5)
    assert chain[1] == lab.site.certificate and lab.root.certificate not in chain  # the intermediate, never the root
    assert any("signed a certificate for proxy client.default (join token)" in r.getMessage() for r in lab.caplog.records)


def test_renewal_over_mtls_and_a_request_asks_for_less_than_the_lifetime(lab):
    chain = lab.call({"proxy": "client.default", "csr": make_csr(), "validity_seconds": 3600}, client=lab.certificate(CLIENT))
    lifetime = chain[0].not_valid_after_utc - chain[0].not_valid_before_utc - ca.CLOCK_SKEW
    assert abs(lifetime - datetime.timedelta(hours=1)) < datetime.timedelta(seconds=5)
    longer = lab.call({"proxy": "client.default", "csr": make_csr(), "validity_seconds": 7 * 86400}, client=lab.certificate(CLIENT))
    assert longer[0].not_valid_after_utc - longer[0].not_valid_before_utc - ca.CLOCK_SKEW <= LIFETIME  # never more than the control plane's


def test_renewal_for_another_proxy_than_the_certificate_proves_is_refused(lab):
    code, details, line = lab.refused({"proxy": "server.default", "csr": make_csr(sans=(SERVER,))}, client=lab.certificate(CLIENT))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert f"proxy server.default, whose identity is {SERVER}: the client certificate proves {CLIENT}" in details
    assert line.startswith("refused CSR from ipv4:127.0.0.1:") and "(mTLS)" in line and details in line


def test_a_csr_for_another_identity_is_refused(lab):
    code, details, line = lab.refused({"proxy": "client.default", "csr": make_csr(sans=(SERVER,))}, client=lab.certificate(CLIENT))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert f"the CSR asks for {SERVER}, but this workload's identity is {CLIENT}" in details and details in line
    token = lab.token()
    code, details, line = lab.refused({"proxy": "client.default", "csr": make_csr(sans=(SERVER,)), "join_token": token})
    assert code == grpc.StatusCode.PERMISSION_DENIED and f"the CSR asks for {SERVER}" in details and "(join token)" in line
    # A refused CSR does not use the token up.
    assert lab.call({"proxy": "client.default", "csr": make_csr(), "join_token": token})


def test_a_replayed_join_token_is_refused(lab):
    token = lab.token()
    lab.call({"proxy": "client.default", "csr": make_csr(), "join_token": token})
    code, details, line = lab.refused({"proxy": "client.default", "csr": make_csr(), "join_token": token})
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "was already used (a token signs one CSR: issue a new one)" in details and details in line
    # `meshwright status` lists it with the refused streams.
    assert lab.status_refusals[-1].startswith("CSR from ipv4:127.0.0.1:") and lab.status_refusals[-1].endswith(details)


def test_an_expired_join_token_is_refused(lab):
    import time
    token = lab.token(ttl=60, now=time.time() - 120)
    code, details, line = lab.refused({"proxy": "client.default", "csr": make_csr(), "join_token": token})
    assert code == grpc.StatusCode.PERMISSION_DENIED and " expired at " in details and details in line


def test_a_join_token_of_another_proxy_and_an_unknown_token_are_refused(lab):
    code, details, _ = lab.refused({"proxy": "client.default", "csr": make_csr(), "join_token": lab.token("server.default")})
    assert code == grpc.StatusCode.PERMISSION_DENIED and "was issued for proxy server.default, not client.default" in details
    code, details, line = lab.refused({"proxy": "client.default", "csr": make_csr(), "join_token": "made-up"})
    assert "unknown join token" in details and details in line


def test_no_certificate_and_no_token_is_unauthenticated(lab):
    code, details, line = lab.refused({"proxy": "client.default", "csr": make_csr()})
    assert code == grpc.StatusCode.UNAUTHENTICATED and "no client certificate and no join token" in details and details in line


def test_an_unknown_proxy_is_refused(lab):
    code, details, line = lab.refused({"proxy": "ghost.default", "csr": make_csr(), "join_token": lab.token("ghost.default")})
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "unknown proxy ghost.default: the mesh config has no such WorkloadEntry or Gateway" in details and details in line


@pytest.mark.parametrize("key, message", [
    (ec.generate_private_key(ec.SECP384R1()), "must be ECDSA P-256 (secp256r1) or RSA of 2048 bits or more, not"),
    (rsa.generate_private_key(65537, 1024), "not RSA 1024 bits"),
])
def test_a_key_of_a_type_not_allowed_is_refused(lab, key, message):
    code, details, line = lab.refused({"proxy": "client.default", "csr": make_csr(key), "join_token": lab.token()})
    assert code == grpc.StatusCode.PERMISSION_DENIED and message in details and details in line


def test_an_rsa_2048_key_is_signed(lab):
    chain = lab.call({"proxy": "client.default", "csr": make_csr(rsa.generate_private_key(65537, 2048)), "join_token": lab.token()})
    assert chain[0].public_key().key_size == 2048


def test_extra_sans_are_refused(lab):
    code, details, line = lab.refused({"proxy": "client.default", "csr": make_csr(sans=(CLIENT, "dns:evil.example.com")), "join_token": lab.token()})
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "must ask for exactly one SPIFFE ID as its only SAN, it asks for: UniformResourceIdentifier:" in details and "DNSName:evil.example.com" in details
    assert details in line


def test_a_csr_asking_to_be_a_ca_is_refused(lab):
    csr_pem = make_csr(extensions=[x509.BasicConstraints(ca=True, path_length=None)])
    code, details, line = lab.refused({"proxy": "client.default", "csr": csr_pem, "join_token": lab.token()})
    assert code == grpc.StatusCode.PERMISSION_DENIED and "the CSR asks to be a CA (basicConstraints CA:TRUE)" in details and details in line
    csr_pem = make_csr(extensions=[x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING])])
    _, details, _ = lab.refused({"proxy": "client.default", "csr": csr_pem, "join_token": lab.token()})
    assert "the CSR asks for the extension extendedKeyUsage" in details


def test_malformed_requests_are_refused_and_the_service_keeps_serving(lab):
    code, details, _ = lab.refused({"proxy": "client.default", "csr": "not a csr", "join_token": lab.token()})
    assert code == grpc.StatusCode.PERMISSION_DENIED and "not a PEM certificate signing request" in details
    code, details, _ = lab.refused({"csr": make_csr()})
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "request.proxy" in details
    code, details, _ = lab.refused({"proxy": "client.default", "csr": make_csr(), "validity_seconds": -5})
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "request.validity_seconds" in details
    assert lab.call({"proxy": "client.default", "csr": make_csr(), "join_token": lab.token()})
    assert lab.service.signed == 1


def test_agent_joins_then_renews_with_a_new_key_each_time(lab, tmp_path):
    token_file = tmp_path / "token.json"
    token_file.write_text(json.dumps({"proxy": "client.default", "spiffe_id": CLIENT, "token": lab.token()}))
    certs = str(tmp_path / "certs")
    agent = Agent([("127.0.0.1", lab.csr_port)], [("127.0.0.1", lab.join_port)], "client.default", certs, lab.roots, str(token_file))
    first = agent.request_certificate(None)
    second = agent.request_certificate(first)  # over mTLS with the first
    assert first.key != second.key and first.chain != second.chain
    assert agent.current() == second
    assert second.renew_at() - second.issued == (second.expires - second.issued) * 2 / 3
    messages = [r.getMessage() for r in lab.caplog.records]
    assert any("(join token)" in m for m in messages) and any("(renewal)" in m for m in messages)


def test_agent_with_a_refused_token_stops_with_the_reason(lab, tmp_path):
    token_file = tmp_path / "token.json"
    token_file.write_text(json.dumps({"proxy": "client.default", "spiffe_id": CLIENT, "token": "made-up"}))
    agent = Agent([("127.0.0.1", lab.csr_port)], [("127.0.0.1", lab.join_port)], "client.default", str(tmp_path / "certs"), lab.roots, str(token_file))
    with pytest.raises(AgentError, match="refused the first certificate of proxy client.default: .*unknown join token"):
        agent.run(threading.Event())


def test_agent_retries_with_backoff_while_the_control_plane_is_down(tmp_path, caplog, monkeypatch):
    import meshwright.agent as agent_module
    monkeypatch.setattr(agent_module, "FIRST_BACKOFF", 0.1)
    monkeypatch.setattr(agent_module, "CALL_TIMEOUT", 1.0)
    root = ca.make_root("cluster.local")
    token_file = tmp_path / "token.json"
    token_file.write_text(json.dumps({"proxy": "client.default", "spiffe_id": CLIENT, "token": "t"}))
    down = free_port()
    agent = Agent([("127.0.0.1", down)], [("127.0.0.1", down)], "client.default", str(tmp_path / "certs"), certificate_pem(root.certificate), str(token_file))
    stop = threading.Event()
    caplog.set_level(logging.WARNING, logger="meshwright.agent")
    thread = threading.Thread(target=agent.run, args=(stop,))
    thread.start()
    threading.Timer(2.5, stop.set).start()
    thread.join(10)
    waits = [r.getMessage().rsplit("trying again in ", 1)[1] for r in caplog.records if "trying again in" in r.getMessage()]
    seconds = [float(w.split()[0]) for w in waits]
    assert len(seconds) >= 2 and seconds == sorted(seconds) and seconds[:3] == [0.1, 0.2, 0.4] and not thread.is_alive()
    assert all(f"no certificate from 127.0.0.1:{down} (UNAVAILABLE" in r.getMessage() for r in caplog.records if "trying again" in r.getMessage())


def test_held_certificate_counts_its_life_from_issue_not_from_the_clock_skew_margin():
    issued = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    held = Held(b"", b"", issued, issued + datetime.timedelta(seconds=30))
    assert held.renew_at() == issued + datetime.timedelta(seconds=20)


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    import contextlib
    import io

    from meshwright.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_join_token_command_writes_only_the_digest_and_a_0600_token_file(tmp_path):
    import os

    from tests.unit.test_serve_ads import MESH
    (tmp_path / "mesh.yaml").write_text(MESH.format(address="10.0.0.1", timeout="5s"))
    proxy = __import__("yaml").safe_load_all(MESH.format(address="10.0.0.1", timeout="5s"))
    workload_entry = [d for d in proxy if d and d.get("kind") == "WorkloadEntry"][0]
    proxy_id = f"{workload_entry['metadata']['name']}.{workload_entry['metadata']['namespace']}"
    out = tmp_path / "token.json"
    code, _, err = run_cli(["join-token", "--mesh", str(tmp_path / "mesh.yaml"), "--proxy", proxy_id, "--tokens-dir", str(tmp_path / "tokens"),
                            "--ttl", "10m", "--out", str(out)])
    assert code == 0 and f"{proxy_id}: join token (one use, 600 s) written to {out}" in err
    record = json.loads(out.read_text())
    assert record["proxy"] == proxy_id and record["spiffe_id"].startswith("spiffe://cluster.local/ns/") and os.stat(out).st_mode & 0o777 == 0o600
    stored = os.listdir(tmp_path / "tokens")
    assert len(stored) == 1 and record["token"] not in (tmp_path / "tokens" / stored[0]).read_text()
    JoinTokens(str(tmp_path / "tokens")).check(record["token"], proxy_id)  # the digest is what the service finds
    code, _, err = run_cli(["join-token", "--mesh", str(tmp_path / "mesh.yaml"), "--proxy", "ghost.default", "--tokens-dir", str(tmp_path / "tokens")])
    assert code == 2 and "ghost.default" in err and "Traceback" not in err


def test_serve_and_agent_usage_errors(tmp_path):
    code, _, err = run_cli(["serve", "--mesh", str(tmp_path), "--plaintext-loopback", "--signing-cert", "x.pem"])
    assert code == 2 and "error: give --signing-key too" in err
    code, _, err = run_cli(["serve", "--mesh", str(tmp_path), "--plaintext-loopback", "--join-tokens", str(tmp_path)])
    assert code == 2 and "--join-tokens needs --signing-cert and --signing-key" in err
    code, _, err = run_cli(["agent", "--server", "127.0.0.1:1", "--proxy", "client.default", "--certs-dir", str(tmp_path / "certs")])
    assert code == 2 and f"--ca {tmp_path / 'certs' / 'root-cert.pem'}: cannot read it" in err
    (tmp_path / "root.pem").write_bytes(certificate_pem(ca.make_root("cluster.local").certificate))
    code, _, err = run_cli(["agent", "--server", "127.0.0.1:1", "--proxy", "client.default", "--certs-dir", str(tmp_path / "certs"), "--ca", str(tmp_path / "root.pem")])
    assert code == 1 and "no valid certificate in" in err and "no --join-token-file" in err
    code, _, err = run_cli(["join-token", "--mesh", str(tmp_path), "--proxy", "a.b", "--tokens-dir", str(tmp_path), "--ttl", "soon"])
    assert code == 2 and "'soon' is not a duration" in err


def test_renewal_with_a_certificate_from_another_ca_fails_the_handshake(lab):
    rogue = ca.make_root("cluster.local", common_name="rogue root")
    key = csr.make_private_key()
    chain = workload.sign_csr(csr.make_csr(key, CLIENT), CLIENT, rogue)
    with pytest.raises(grpc.RpcError) as raised:
        lab.call({"proxy": "client.default", "csr": make_csr()}, client=(key, chain))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE and lab.service.signed == 0


def test_a_token_redeemed_by_two_racing_requests_signs_once(tmp_path):
    tokens = JoinTokens(str(tmp_path))
    token = issue_token(str(tmp_path), "client.default", 600)
    outcomes = []
    barrier = threading.Barrier(8)

    def redeem():
        barrier.wait()
        try:
            tokens.redeem(token, "client.default")
            outcomes.append("signed")
        except Exception as error:  # TokenRefused: the message is checked below
            outcomes.append(str(error))

    threads = [threading.Thread(target=redeem) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("signed") == 1
    assert all("was already used" in outcome for outcome in outcomes if outcome != "signed")


def test_serve_join_token_and_agent_as_a_user_runs_them(tmp_path):
    """`meshwright serve` with the CSR service (a process, mTLS), `meshwright join-token`, then
    `meshwright agent` (a process) gets the first certificate; both stop on SIGTERM, exit 0."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from meshwright.pki.spiffe import control_plane_spiffe_id
    from tests.unit.test_serve_ads import MESH

    (tmp_path / "mesh").mkdir()
    (tmp_path / "mesh" / "mesh.yaml").write_text(MESH.format(address="10.0.0.1", timeout="5s"))
    workload_entry = [d for d in __import__("yaml").safe_load_all(MESH.format(address="10.0.0.1", timeout="5s")) if d and d.get("kind") == "WorkloadEntry"][0]
    proxy_id = f"{workload_entry['metadata']['name']}.{workload_entry['metadata']['namespace']}"
    root = ca.make_root("cluster.local")
    site = ca.make_intermediate(root, "site-a")
    files = {"root.pem": certificate_pem(root.certificate), "site-chain.pem": site.certificate_pem() + site.parents_pem(), "site-key.pem": site.key_pem()}
    plane_key = csr.make_private_key()
    files["cp-key.pem"] = plane_key
    files["cp-chain.pem"] = workload.sign_csr(csr.make_csr(plane_key, control_plane_spiffe_id("cluster.local")), control_plane_spiffe_id("cluster.local"), site)
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    csr_port, join_port = free_port(), free_port()
    serve = subprocess.Popen([sys.executable, "-m", "meshwright.cli", "serve", "--mesh", str(tmp_path / "mesh"), "--listen", f"127.0.0.1:{free_port()}",
                              "--status-listen", f"127.0.0.1:{free_port()}", "--tls-cert", str(tmp_path / "cp-chain.pem"),
                              "--tls-key", str(tmp_path / "cp-key.pem"), "--ca", str(tmp_path / "root.pem"),
                              "--signing-cert", str(tmp_path / "site-chain.pem"), "--signing-key", str(tmp_path / "site-key.pem"),
                              "--cert-lifetime", "1h", "--csr-listen", f"127.0.0.1:{csr_port}", "--join-listen", f"127.0.0.1:{join_port}",
                              "--join-tokens", str(tmp_path / "tokens")], stderr=subprocess.PIPE, text=True)
    agent = None
    try:
        code, _, err = run_cli(["join-token", "--mesh", str(tmp_path / "mesh"), "--proxy", proxy_id, "--tokens-dir", str(tmp_path / "tokens"),
                                "--out", str(tmp_path / "token.json")])
        assert code == 0, err
        agent = subprocess.Popen([sys.executable, "-m", "meshwright.cli", "agent", "--server", f"127.0.0.1:{csr_port}", "--join-server",
                                  f"127.0.0.1:{join_port}", "--proxy", proxy_id, "--certs-dir", str(tmp_path / "certs"),
                                  "--join-token-file", str(tmp_path / "token.json"), "--ca", str(tmp_path / "root.pem")],
                                 stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while not os.path.exists(tmp_path / "certs" / "cert-chain.pem"):
            assert time.monotonic() < deadline and agent.poll() is None and serve.poll() is None, "no certificate from the agent"
            time.sleep(0.1)
        leaf = x509.load_pem_x509_certificate((tmp_path / "certs" / "cert-chain.pem").read_bytes())
        assert leaf.not_valid_after_utc - leaf.not_valid_before_utc - ca.CLOCK_SKEW <= datetime.timedelta(hours=1)
        assert (tmp_path / "certs" / "root-cert.pem").read_bytes() == files["root.pem"]
    finally:
        for process in (agent, serve):
            if process is not None:
                process.send_signal(signal.SIGTERM)
        agent_err = agent.communicate(timeout=15)[1] if agent else ""
        serve_err = serve.communicate(timeout=15)[1]
    assert agent.returncode == 0 and f"proxy {proxy_id}: first certificate for spiffe://cluster.local/ns/" in agent_err, agent_err
    assert f"proxy {proxy_id}: stopped (certificates written: 1)" in agent_err
    assert serve.returncode == 0 and f"signing workload certificates (1:00:00) on 127.0.0.1:{csr_port} (renewal, mTLS)" in serve_err, serve_err
    assert f"signed a certificate for proxy {proxy_id} (join token)" in serve_err


def test_agent_renews_a_certificate_ansible_rotation_wrote_without_a_token(lab, tmp_path):
    from meshwright.pki.store import write_workload_certificates
    key, chain = lab.certificate(CLIENT)
    certs = str(tmp_path / "certs")
    write_workload_certificates(certs, key, chain, lab.roots)
    agent = Agent([("127.0.0.1", lab.csr_port)], [("127.0.0.1", lab.join_port)], "client.default", certs, lab.roots)  # no token file
    held = agent.current()
    assert held is not None and held.chain == chain
    renewed = agent.request_certificate(held)
    assert renewed.key != key and agent.current() == renewed


def test_agent_writes_the_sds_files_of_the_xds_grpc_cluster_beside_a_certificate_from_before(lab, tmp_path):
    """A certs folder from before the agent wrote SDS files (Ansible's, an older agent's): the agent
    writes them when it starts, not at the renewal a day later; they name the PEM files there;
    an edited one is put back, an unchanged one is not written again (no needless reload)."""
    from meshwright.pki.store import write_workload_certificates
    key, chain = lab.certificate(CLIENT)
    certs = tmp_path / "certs"
    write_workload_certificates(str(certs), key, chain, lab.roots)
    agent = Agent([("127.0.0.1", lab.csr_port)], [("127.0.0.1", lab.join_port)], "client.default", str(certs), lab.roots)
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + 10
    while not (certs / "sds-rootca.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(10)
    assert agent.issued == 0  # nothing renewed: the certificate is fresh
    default = json.loads((certs / "sds-default.json").read_text())["resources"]
    assert [r["name"] for r in default] == ["file-default"]
    assert default[0]["tls_certificate"] == {"certificate_chain": {"filename": str(certs / "cert-chain.pem")},
                                             "private_key": {"filename": str(certs / "key.pem")}, "watched_directory": {"path": str(certs)}}
    roots = json.loads((certs / "sds-rootca.json").read_text())["resources"]
    assert roots[0]["validation_context"]["trusted_ca"] == {"filename": str(certs / "root-cert.pem")}
    assert write_secret_files(str(certs)) == []
    (certs / "sds-rootca.json").write_text("{}")
    assert write_secret_files(str(certs)) == ["sds-rootca.json"]
    assert json.loads((certs / "sds-rootca.json").read_text())["resources"] == roots


def test_agent_asks_the_next_instance_when_one_is_down(lab, tmp_path, caplog):
    """High availability: the first instance in --server does not answer; the agent joins and
    renews through the second at once (no backoff while an instance is left to ask)."""
    token_file = tmp_path / "token.json"
    token_file.write_text(json.dumps({"proxy": "client.default", "spiffe_id": CLIENT, "token": lab.token()}))
    down = free_port()
    agent = Agent([("127.0.0.1", down), ("127.0.0.1", lab.csr_port)], [("127.0.0.1", down), ("127.0.0.1", lab.join_port)],
                  "client.default", str(tmp_path / "certs"), lab.roots, str(token_file), validity=datetime.timedelta(seconds=3))
    caplog.set_level(logging.INFO, logger="meshwright.agent")
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,))
    thread.start()
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=15)
    while agent.issued < 2 and datetime.datetime.now() < deadline:
        stop.wait(0.1)
    stop.set()
    thread.join(10)
    assert agent.issued >= 2  # the first certificate by the token, a renewal over mTLS
    messages = [r.getMessage() for r in caplog.records if r.name == "meshwright.agent"]
    assert f"no certificate from 127.0.0.1:{down} (UNAVAILABLE" in messages[0] and messages[0].endswith(f"asking 127.0.0.1:{lab.join_port}")
    assert not any("trying again in" in m for m in messages)
    assert lab.service.signed == agent.issued
    assert lab.service.expiries()["client.default"] == agent.current().expires.isoformat()


def test_bad_csrs_sign_nothing_and_the_service_keeps_signing_good_ones(lab):
    """One of each refusal, in a row: another identity (mTLS and token), a replayed token, an
    expired token, an unknown proxy, a malformed request; each leaves its log line, none is
    signed, and good requests in between and after are."""
    import time
    used = lab.token()
    assert lab.call({"proxy": "client.default", "csr": make_csr(), "join_token": used})
    bad = [
        ({"proxy": "client.default", "csr": make_csr(sans=(SERVER,))}, lab.certificate(CLIENT)),
        ({"proxy": "client.default", "csr": make_csr(sans=(SERVER,)), "join_token": lab.token()}, None),
        ({"proxy": "client.default", "csr": make_csr(), "join_token": used}, None),
        ({"proxy": "client.default", "csr": make_csr(), "join_token": lab.token(ttl=60, now=time.time() - 120)}, None),
        ({"proxy": "ghost.default", "csr": make_csr(), "join_token": lab.token("ghost.default")}, None),
        ({"proxy": "client.default", "csr": "not a CSR"}, lab.certificate(CLIENT)),
    ]
    for body, client in bad:
        code, details, line = lab.refused(body, client)
        assert code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT) and details in line
    assert lab.service.signed == 1 and len(lab.status_refusals) == len(bad)
    assert lab.call({"proxy": "client.default", "csr": make_csr()}, client=lab.certificate(CLIENT))
    assert lab.service.signed == 2


def test_a_token_used_on_one_instance_is_refused_on_another(lab, tmp_path):
    """High availability: two instances read one tokens directory; a token signs once, on either."""
    other = CertificateService(lab.site, IDENTITIES.get, JoinTokens(lab.tokens_dir), LIFETIME)
    serving = ServingCertificate(lab.site, "spiffe://cluster.local/ns/meshwright-system/sa/meshwright-control-plane", lab.roots)
    server, _, join_port = csr_server(other, serving, None, ("127.0.0.1", free_port()))
    try:
        token = lab.token()
        assert lab.call({"proxy": "client.default", "csr": make_csr(), "join_token": token})
        lab.join_port, first = join_port, lab.join_port
        code, details, _ = lab.refused({"proxy": "client.default", "csr": make_csr(), "join_token": token})
        assert code == grpc.StatusCode.PERMISSION_DENIED and "was already used" in details
        assert (lab.service.signed, other.signed) == (1, 0)
        lab.join_port = first
    finally:
        server.stop(None)


def test_agent_renews_at_once_when_asked_and_writes_the_trust_bundle_as_it_is_now(lab, tmp_path):
    """Ansible's root rotation (SIGHUP: renew_now): the agent holding a fresh certificate renews
    at once, and root-cert.pem takes the --ca file as it is now (the old and the new root)."""
    from meshwright.pki.store import write_workload_certificates
    key, chain = lab.certificate(CLIENT)
    certs, roots_file = str(tmp_path / "certs"), tmp_path / "roots.pem"
    write_workload_certificates(certs, key, chain, lab.roots)
    roots_file.write_bytes(lab.roots)
    agent = Agent([("127.0.0.1", lab.csr_port)], [("127.0.0.1", lab.join_port)], "client.default", certs, lab.roots, roots_file=str(roots_file))
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,))
    thread.start()
    try:
        time.sleep(1)
        assert agent.issued == 0  # 24 h certificate, renewed at 16 h
        both = lab.roots + certificate_pem(ca.make_root("cluster.local").certificate)
        roots_file.write_bytes(both)
        agent.renew_now()
        deadline = time.monotonic() + 10
        while agent.issued == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(10)
    assert agent.issued == 1 and not thread.is_alive()
    assert agent.current().key != key
    assert (tmp_path / "certs" / "root-cert.pem").read_bytes() == both


def test_a_flood_of_csr_calls_is_refused_with_a_log_line_and_the_calls_admitted_are_signed(lab):
    """Two workers, at most three calls at once: with three in progress (two signing, slowly,
    one waiting), a fourth is refused at once (RESOURCE_EXHAUSTED), logged and shown by
    status; the three are signed, and so is the next call."""
    gate, asked = threading.Event(), []

    def slow_identity(proxy):
        asked.append(proxy)
        gate.wait(10)
        return IDENTITIES.get(proxy)

    service = CertificateService(lab.site, slow_identity, JoinTokens(lab.tokens_dir), LIFETIME, lab.status_refusals.append)
    serving = ServingCertificate(lab.site, "spiffe://cluster.local/ns/meshwright-system/sa/meshwright-control-plane", lab.roots)
    server, dummy, lab.join_port = csr_server(service, serving, None, ("127.0.0.1", free_port()), workers=2, max_calls=3)
    try:
        results = []
        calls = [threading.Thread(target=lambda: results.append(lab.call({"proxy": "client.default", "csr": make_csr(), "join_token": lab.token()})))
                 for _ in range(3)]
        for call in calls:
            call.start()
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=5)
        while len(asked) < 2 and datetime.datetime.now() < deadline:
            threading.Event().wait(0.02)
        threading.Event().wait(0.3)  # the third waits for a worker
        code, details, dummy = lab.refused({"proxy": "client.default", "csr": make_csr(), "join_token": lab.token()})
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        lines = [r.getMessage() for r in lab.caplog.records if r.getMessage().startswith("refused a CSR call")]
        assert lines == ["refused a CSR call: 3 CSR calls are in progress, the most this instance takes at once "
                         "(answered RESOURCE_EXHAUSTED; the agent retries)"]
        assert lab.status_refusals == ["CSR call: 3 CSR calls are in progress, the most this instance takes at once"]
        gate.set()
        for call in calls:
            call.join(10)
        assert len(results) == 3 and service.signed == 3
        assert lab.call({"proxy": "client.default", "csr": make_csr(), "join_token": lab.token()})
        assert service.signed == 4
    finally:
        gate.set()
        server.stop(grace=1).wait(5)
