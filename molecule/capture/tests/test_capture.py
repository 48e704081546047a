"""iptables capture on systemd hosts: the apps know service names only, the host's nat rules
take their TCP through the sidecar, the proxy's own traffic and SSH are left alone, the rules
come back after a reboot, and uninstall leaves iptables exactly as it was before the deploy.

The reboot test restarts order-1's container; the uninstall test (last) removes the mesh from
payment-2."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

PAYMENT = "payment-service.default.svc.cluster.local"
PAYMENT_CLUSTER = f"outbound|80||{PAYMENT}"
SIDECARS = ("order-1", "payment-1", "payment-2")


def through_gateway(gateway, path: str) -> dict:
    answer = gateway.run(f"curl -sS --max-time 10 http://10.53.0.10{path}")
    assert answer.rc == 0, answer.stderr
    return json.loads(answer.stdout)


def proxy_log_lines(host, needle: str) -> int:
    """Access log lines of the host's proxy (JSON on stdout, into its log file) with needle."""
    return int(host.run(f"grep -cF '{needle}' /var/log/meshwright/proxy.log || true").stdout.strip() or 0)


def wait_for_log_lines(host, needle: str, at_least: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while (count := proxy_log_lines(host, needle)) < at_least and time.monotonic() < deadline:
        time.sleep(0.5)
    return count


def normalized_iptables(host) -> list[str]:
    """iptables-save without its comments (dates) and with packet counters zeroed."""
    out = host.check_output("iptables-save")
    return [re.sub(r"\[\d+:\d+\]", "[0:0]", line) for line in out.splitlines() if not line.startswith("#")]


def test_sidecar_hosts_redirect_tcp_to_the_proxy_except_its_own(mesh_hosts):
    for name in SIDECARS:
        host = mesh_hosts[name]
        assert host.service("meshwright-capture").is_enabled, name
        rules = host.check_output("iptables -t nat -S")
        assert rules.count("-A OUTPUT -p tcp -j MESHWRIGHT_OUTPUT") == 1, rules
        assert rules.count("-A PREROUTING -p tcp -j MESHWRIGHT_INBOUND") == 1, rules
        assert "-A MESHWRIGHT_OUTPUT -m owner --uid-owner 1337 -j RETURN" in rules
        assert "-A MESHWRIGHT_REDIRECT -p tcp -j REDIRECT --to-ports 15001" in rules
        assert "-A MESHWRIGHT_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006" in rules
        for port in (22, 15021, 15090):
            assert f"-A MESHWRIGHT_INBOUND -p tcp -m tcp --dport {port} -j RETURN" in rules, (name, port)
        assert host.user("meshwright-proxy").uid == 1337
        # The proxy captures IPv4 only: TCP over IPv6 is refused, not let around the mesh.
        rules6 = host.check_output("ip6tables -S")
        assert "-A MESHWRIGHT_IPV6_OUTPUT -p tcp -j REJECT --reject-with tcp-reset" in rules6, rules6
        assert "-A MESHWRIGHT_IPV6_INPUT -p tcp -m tcp --dport 22 -j RETURN" in rules6, rules6
    # The gateway does not capture: no rules there.
    assert "MESHWRIGHT" not in mesh_hosts["gateway"].check_output("iptables -t nat -S")


def test_service_names_map_to_vips_on_the_sidecar_hosts(mesh_hosts):
    # order-1's Sidecar imports payment-service only; its VIP is auto-allocated (the second
    # service in hostname order).
    order_hosts = mesh_hosts["order-1"].file("/etc/hosts").content_string
    assert f"240.240.0.2 {PAYMENT}" in order_hosts.splitlines()
    assert "order-service" not in order_hosts
    assert mesh_hosts["order-1"].check_output(f"getent hosts {PAYMENT}").split() == ["240.240.0.2", PAYMENT]


def test_order_calls_payment_by_name_through_its_sidecar(mesh_hosts):
    """gateway -> order-1 (captured on 9080 into 15006) -> the app, which calls
    http://payment-service.default.svc.cluster.local/payment -> captured to 15001 -> mTLS to a
    payment host (captured on 9080 into 15006) -> its app. order-1's proxy logs each call."""
    order = mesh_hosts["order-1"]
    before = proxy_log_lines(order, PAYMENT_CLUSTER)
    for _ in range(3):
        answer = through_gateway(mesh_hosts["gateway"], "/order")
        assert answer["service"] == "order-service" and answer["upstream_status"] == 200, answer
        assert answer["upstream"]["service"] == "payment-service"
    assert wait_for_log_lines(order, PAYMENT_CLUSTER, before + 3) >= before + 3


def test_a_process_calling_the_service_directly_goes_through_the_proxy(mesh_hosts):
    order = mesh_hosts["order-1"]
    before = proxy_log_lines(order, PAYMENT_CLUSTER)
    answer = json.loads(order.check_output(f"curl -sS --max-time 10 http://{PAYMENT}/payment"))
    assert answer["service"] == "payment-service"
    # Only the proxy knows where the VIP leads: the call shows in its access log.
    assert wait_for_log_lines(order, PAYMENT_CLUSTER, before + 1) >= before + 1


def test_the_proxy_user_is_not_captured(mesh_hosts):
    """The proxy's own traffic leaves as sent (else it would loop back into the proxy). The same
    call to the gateway's address from uid 1337 and from root: only root's goes through
    order-1's proxy (to PassthroughCluster: the gateway's address is no service of the mesh)."""
    order = mesh_hosts["order-1"]
    call = "curl -sS --max-time 5 -o /dev/null -w '%{http_code}' http://10.53.0.10/payment"
    before = proxy_log_lines(order, "PassthroughCluster")
    assert order.check_output("setpriv --reuid 1337 --regid 1337 --clear-groups " + call) == "200"
    time.sleep(1.5)  # the access log reaches its file within a second
    assert proxy_log_lines(order, "PassthroughCluster") == before
    assert order.check_output(call) == "200"
    assert wait_for_log_lines(order, "PassthroughCluster", before + 1) == before + 1


def test_ssh_is_not_captured(mesh_hosts):
    """The SSH daemon itself answers on 22 (its banner), not the proxy."""
    order = mesh_hosts["order-1"]
    assert order.service("ssh").is_running
    banner = mesh_hosts["gateway"].check_output("timeout 5 bash -c 'exec 3<>/dev/tcp/10.53.0.21/22; head -c 8 <&3'")
    assert banner.startswith("SSH-2.0"), banner


def test_capture_comes_back_after_a_reboot(mesh_hosts):
    """docker restart order-1: at boot meshwright-capture.service puts the rules and names back
    (once each) before the network, the proxy and the app start, and traffic flows again."""
    order = mesh_hosts["order-1"]
    subprocess.run(["docker", "restart", "--time", "20", "order-1"], check=True, capture_output=True, timeout=90)
    deadline, state = time.monotonic() + 90, ""
    while state not in ("running", "degraded") and time.monotonic() < deadline:
        time.sleep(2)  # the container's exec answers again once it runs
        state = order.run("systemctl is-system-running --wait").stdout.strip()
    assert state in ("running", "degraded"), state
    assert order.service("meshwright-capture").is_running
    rules = order.check_output("iptables -t nat -S")
    assert rules.count("-A OUTPUT -p tcp -j MESHWRIGHT_OUTPUT") == 1 and rules.count("-A PREROUTING -p tcp -j MESHWRIGHT_INBOUND") == 1
    assert order.file("/etc/hosts").content_string.count(f" {PAYMENT}") == 1
    deadline, answer = time.monotonic() + 60, {}
    while time.monotonic() < deadline:
        result = mesh_hosts["gateway"].run("curl -sS --max-time 5 http://10.53.0.10/order")
        answer = json.loads(result.stdout) if result.rc == 0 and result.stdout.startswith("{") else {}
        if answer.get("upstream_status") == 200:
            break
        time.sleep(1)
    assert answer.get("upstream_status") == 200, answer


def test_uninstall_leaves_iptables_as_before_the_deploy(mesh_hosts, playbook):
    payment = mesh_hosts["payment-2"]
    before = [re.sub(r"\[\d+:\d+\]", "[0:0]", line)
              for line in payment.file("/var/tmp/iptables-before-meshwright.rules").content_string.splitlines() if not line.startswith("#")]
    assert normalized_iptables(payment) != before  # the capture is on
    run = playbook("meshwright.mesh.uninstall", "--limit", "payment-2")
    assert run.returncode == 0, str(run)
    assert normalized_iptables(payment) == before
    assert "meshwright" not in payment.file("/etc/hosts").content_string
    assert not payment.file("/etc/systemd/system/meshwright-capture.service").exists
    assert "MESHWRIGHT" not in payment.check_output("ip6tables -S")
    # What deploy made and marked as its own is gone: its folders, its policy, its user.
    for path in ("/etc/meshwright", "/opt/meshwright", "/var/lib/meshwright", "/var/log/meshwright",
                 "/etc/logrotate.d/meshwright-proxy"):
        assert not payment.file(path).exists, path
    assert not payment.user("meshwright-proxy").exists
