"""The seed mesh on systemd hosts after the deploy playbook, as an operator and a client see it.

Every scenario runs these (molecule/<scenario>/molecule.yml). The hosts: gateway (the ingress
gateway), order-1 (order-service), payment-1 and payment-2 (payment-service), each with its
proxy under systemd and Istio's standard proxy ports.
"""

from __future__ import annotations

import json

CERTS = "/etc/meshwright/certs"
PROXY_USER, PROXY_UID = "meshwright-proxy", 1337


def test_mesh_units_are_active_and_enabled(host, units):
    """Each host's proxy (and, beside a sidecar, its app) runs as a systemd unit that also starts at boot."""
    for unit in units:
        service = host.service(unit)
        assert service.is_running, f"{unit} is not running"
        assert service.is_enabled, f"{unit} is not enabled"
        assert host.file(f"/etc/systemd/system/{unit}.service").user == "root"
        assert host.file(f"/etc/systemd/system/{unit}.service").mode == 0o644


def test_admin_listens_on_loopback_only(host):
    """Envoy's admin port (15000, which can stop the proxy) answers on 127.0.0.1 only, as in Istio;
    health (15021) and Prometheus stats (15090) are on every interface, for probes and scrapers."""
    sockets = set(host.socket.get_listening_sockets())
    assert {s for s in sockets if s.endswith(":15000")} == {"tcp://127.0.0.1:15000"}
    assert {"tcp://0.0.0.0:15021", "tcp://0.0.0.0:15090"} <= sockets
    ready = host.run("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:15021/healthz/ready")
    assert ready.stdout == "200"


def test_sidecar_listeners(host, units):
    """A sidecar takes mesh traffic on its Sidecar ingress port (9080, every interface) and gives its
    app the outbound listener on loopback (15001); the app itself is reachable on loopback only."""
    if "demo-app" not in units:
        assert not host.socket("tcp://0.0.0.0:9080").is_listening
        return
    sockets = set(host.socket.get_listening_sockets())
    assert "tcp://0.0.0.0:9080" in sockets
    assert {s for s in sockets if s.endswith(":15001")} == {"tcp://127.0.0.1:15001"}
    assert {s for s in sockets if s.endswith(":8080")} == {"tcp://127.0.0.1:8080"}


def test_installed_files_owners_and_modes(host):
    """Envoy is installed side by side under /opt/meshwright/envoy/<version> with a `current` link,
    root-owned and not writable by others; the running proxy is that version; its config is
    root-owned and readable, not writable, by others."""
    # The version the inventory asks for (a scenario may start on another one: upgrade).
    version = host.ansible.get_variables()["envoy_proxy_version"]
    envoy = f"/opt/meshwright/envoy/{version}/bin/envoy"
    binary = host.file(envoy)
    assert (binary.user, binary.group, binary.mode) == ("root", "root", 0o755)
    current = host.file("/opt/meshwright/envoy/current")
    assert current.is_symlink and current.linked_to == f"/opt/meshwright/envoy/{version}"
    # /proc/<pid>/exe of another user's process is closed to root without CAP_SYS_PTRACE: ask Envoy.
    server_info = json.loads(host.check_output("curl -sS http://127.0.0.1:15000/server_info"))
    assert server_info["version"].split("/")[1] == version
    config_dir = host.file("/etc/meshwright/proxy")
    assert (config_dir.user, config_dir.mode) == ("root", 0o755)
    for name in config_dir.listdir():
        config = host.file(f"/etc/meshwright/proxy/{name}")
        assert (config.user, config.group) == ("root", "root"), name
        assert config.mode & 0o022 == 0, f"{name} is writable by group or others ({oct(config.mode)})"


def test_proxy_runs_as_its_own_user(host):
    """Envoy runs as meshwright-proxy (uid and gid 1337, as Istio's istio-proxy), a system user
    that cannot log in; never as root."""
    user = host.user(PROXY_USER)
    assert (user.uid, user.gid, user.shell) == (PROXY_UID, PROXY_UID, "/usr/sbin/nologin")
    uids = host.check_output("ps -o uid= -C envoy").split()
    assert uids and set(uids) == {str(PROXY_UID)}, f"envoy runs as uid {uids}"


def test_hot_restart_sockets_are_private_to_the_proxy_user(host):
    """Envoy's hot restart sockets are files in the proxy's state folder, which only its user
    may enter; none is in the abstract namespace, where any local user could reach it."""
    state = host.file("/var/lib/meshwright/proxy")
    assert (state.user, state.mode) == (PROXY_USER, 0o700)
    sockets = host.check_output("cat /proc/net/unix")
    assert "/var/lib/meshwright/proxy/hot-restart_" in sockets
    assert "@envoy_domain_socket" not in sockets


def test_the_proxy_logs_have_a_rotation_policy(host):
    """/etc/logrotate.d/meshwright-proxy rotates the proxy's logs, and logrotate accepts it."""
    policy = host.file("/etc/logrotate.d/meshwright-proxy")
    assert (policy.user, policy.mode) == ("root", 0o644)
    checked = host.run("logrotate --debug /etc/logrotate.d/meshwright-proxy")
    assert checked.rc == 0, checked.stderr
    assert "/var/log/meshwright/*.log" in checked.stdout + checked.stderr


def test_workload_key_is_private_to_the_proxy_user(host):
    """The workload key (made on this host) is 0600 and owned by the proxy's user; the chain and
    the trust bundle beside it are readable, not writable, by others."""
    modes = {}
    for name in ("key.pem", "cert-chain.pem", "root-cert.pem"):
        target = host.file(host.check_output(f"readlink -f {CERTS}/{name}"))
        modes[name] = (target.user, target.group, target.mode)
    assert modes == {"key.pem": (PROXY_USER, PROXY_USER, 0o600),
                     "cert-chain.pem": (PROXY_USER, PROXY_USER, 0o644),
                     "root-cert.pem": (PROXY_USER, PROXY_USER, 0o644)}


def admin_stat(host, name: str) -> int:
    """One counter from the proxy's admin stats (0 when Envoy has not made it yet)."""
    output = host.check_output(f"curl -sS 'http://127.0.0.1:15000/stats?filter=^{name}$'")
    return int(output.split(":", 1)[1]) if ":" in output else 0


def requests(host, url: str, count: int) -> list[dict]:
    """`count` GETs of url from host, in one shell (one docker exec or ssh round trip)."""
    command = f"for i in $(seq {count}); do curl -sS --max-time 5 {url}; echo; done"
    result = host.run(command)
    assert result.rc == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_gateway_balances_payment_over_both_hosts(mesh_hosts):
    """A client on the network reaches payment-service through the ingress gateway by its host
    name, and the gateway spreads requests over both payment hosts (the WorkloadEntries' addresses)."""
    answers = requests(mesh_hosts["order-1"], "http://gateway/payment", 20)
    assert len(answers) == 20
    assert {answer["service"] for answer in answers} == {"payment-service"}
    assert {answer["instance"] for answer in answers} == {"payment-1", "payment-2"}


def test_order_calls_payment_through_its_sidecar(mesh_hosts):
    """gateway -> order-1's sidecar -> order-service's app -> its sidecar's outbound listener ->
    a payment host: the whole chain across four machines answers 200."""
    answers = requests(mesh_hosts["payment-1"], "http://gateway/order", 4)
    assert [answer["service"] for answer in answers] == ["order-service"] * 4
    assert [answer["upstream_status"] for answer in answers] == [200] * 4
    assert {answer["upstream"]["service"] for answer in answers} == {"payment-service"}


def test_mutual_tls_to_both_payment_hosts(mesh_hosts):
    """STRICT mutual TLS: a plaintext client at a payment host's mesh port gets no answer, while
    through the gateway both payment hosts answer, their inbound listeners having made TLS
    handshakes."""
    order = mesh_hosts["order-1"]
    plaintext = order.run("curl -sS --max-time 5 http://10.53.0.31:9080/payment")
    assert plaintext.rc != 0, f"a plaintext request was answered: {plaintext.stdout}"
    answers = requests(order, "http://gateway/payment", 20)
    assert {answer["instance"] for answer in answers} == {"payment-1", "payment-2"}
    # Counted once per connection (the gateway keeps them open): any at all means TLS.
    handshakes = {name: admin_stat(mesh_hosts[name], r"listener\.0\.0\.0\.0_9080\.ssl\.handshake") for name in ("payment-1", "payment-2")}
    assert all(handshakes.values()), f"TLS handshakes at the payment hosts' mesh port: {handshakes}"
