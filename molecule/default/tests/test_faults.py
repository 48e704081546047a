"""Faults on a systemd host, and how the deploy meets them (run after the shared checks, on the
converged mesh; the last test leaves it converged again).

- A proxy process that dies is restarted by systemd (Restart=always).
- A proxy that kept dying until systemd gave up (its start limit) is brought back by the next
  converge, which touches only that host.
- A host told to run an Envoy binary it does not have fails in the role's preflight with a
  message naming the binary, before anything on it changes.
"""

from __future__ import annotations

import os
import time

PROXY = "meshwright-proxy"
CONVERGE = os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "molecule", "resources", "converge.yml")


def main_pid(host) -> int:
    return int(host.check_output(f"systemctl show --property=MainPID --value {PROXY}"))


def wait_ready(host, old_pid: int, timeout: float = 15) -> int:
    """Wait until the unit runs a process other than old_pid and Envoy says it is ready."""
    deadline = time.monotonic() + timeout
    while True:
        pid = main_pid(host)
        ready = host.run("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:15021/healthz/ready").stdout
        if pid not in (0, old_pid) and ready == "200":
            return pid
        assert time.monotonic() < deadline, f"{PROXY} not back within {timeout} s (MainPID {pid}, ready {ready})"
        time.sleep(0.2)


def payment_instances(host, count: int = 20) -> set[str]:
    result = host.run(f"for i in $(seq {count}); do curl -s --max-time 5 http://gateway/payment; echo; done")
    return {line.split('"instance": "')[1].split('"')[0] for line in result.stdout.splitlines() if '"instance"' in line}


def test_killed_proxy_is_restarted_by_systemd(mesh_hosts):
    """SIGKILL to the proxy of payment-2: systemd starts it again and the gateway reaches both
    payment hosts again."""
    host = mesh_hosts["payment-2"]
    pid = main_pid(host)
    host.check_output(f"systemctl kill --signal=KILL {PROXY}")
    wait_ready(host, pid)
    assert payment_instances(mesh_hosts["order-1"]) == {"payment-1", "payment-2"}


def test_proxy_given_up_by_systemd_is_repaired_by_converge(mesh_hosts, playbook):
    """The proxy of payment-2 killed each time it comes back, until systemd stops restarting it
    (the unit is failed: its start limit was hit). The gateway then reaches payment-1 only. A converge
    starts it again, changes nothing on the other hosts, and traffic reaches both again."""
    host = mesh_hosts["payment-2"]
    deadline = time.monotonic() + 30
    while host.run(f"systemctl is-failed --quiet {PROXY}").rc != 0:
        assert time.monotonic() < deadline, f"{PROXY} still restarting after 30 s of kills"
        if host.run(f"systemctl is-active --quiet {PROXY}").rc == 0:
            host.run(f"systemctl kill --signal=KILL {PROXY}")
        time.sleep(0.2)
    assert payment_instances(mesh_hosts["order-1"]) == {"payment-1"}

    run = playbook(CONVERGE)
    assert run.returncode == 0, run
    changed = {name: counts["changed"] for name, counts in run.recap.items()}
    assert changed == {"gateway": 0, "order-1": 0, "payment-1": 0, "payment-2": 1}, run
    assert host.service(PROXY).is_running
    assert payment_instances(mesh_hosts["order-1"]) == {"payment-1", "payment-2"}


def test_missing_envoy_binary_fails_preflight(mesh_hosts, playbook):
    """payment-2 told to take Envoy from a binary that is not on it: the deploy fails there in the
    preflight, naming the binary; its running proxy is left alone."""
    host = mesh_hosts["payment-2"]
    pid = main_pid(host)
    run = playbook(CONVERGE, "--limit", "payment-2",
                   "--extra-vars", "envoy_proxy_source=binary envoy_proxy_binary=/usr/local/bin/envoy")
    assert run.returncode != 0, run
    assert "payment-2: the Envoy binary /usr/local/bin/envoy (envoy_proxy_binary) is missing on this host" in run.messages, run
    assert "TASK [meshwright.mesh.common : Install Envoy" not in run.stdout, run
    assert run.recap["payment-2"]["changed"] == 0, run
    assert main_pid(host) == pid
