"""Shared by the Molecule scenarios' testinfra tests (molecule/*/tests, molecule/resources/tests).

The hosts come from the inventory Molecule generated; a test that fails gets each involved
host's `journalctl -u <unit>` and the end of the unit's log file in its report.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from dataclasses import dataclass

import pytest
from testinfra.utils.ansible_runner import AnsibleRunner

# The mesh's units on a host, and the file each one logs to.
UNITS = {"meshwright-proxy": "/var/log/meshwright/proxy.log", "demo-app": "/var/log/meshwright/app.log"}


def inventory_path(config) -> str:
    return config.getoption("ansible_inventory") or os.environ["MOLECULE_INVENTORY_FILE"]


@pytest.fixture(scope="session")
def inventory(request) -> AnsibleRunner:
    return AnsibleRunner(inventory_path(request.config))


@pytest.fixture(scope="session")
def mesh_hosts(inventory):
    """Every host of the scenario by inventory name, for tests that look at several at once."""
    return {name: inventory.get_host(name) for name in sorted(inventory.get_hosts("mesh"))}


def units_of(inventory: AnsibleRunner, name: str) -> list[str]:
    """The mesh's units on a host: the proxy everywhere, the demo app beside each sidecar."""
    return ["meshwright-proxy"] + (["demo-app"] if "mesh_sidecars" in inventory.get_variables(name)["group_names"] else [])


@pytest.fixture
def units(host, inventory) -> list[str]:
    return units_of(inventory, host.ansible.get_variables()["inventory_hostname"])


@dataclass
class PlaybookRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def recap(self) -> dict[str, dict[str, int]]:
        """The PLAY RECAP: {host: {"ok": n, "changed": n, "failed": n, ...}}."""
        counts = {}
        for line in self.stdout.split("PLAY RECAP", 1)[-1].splitlines()[1:]:
            name, _, rest = line.partition(" : ")
            fields = dict(field.split("=", 1) for field in rest.split() if "=" in field)
            if fields:
                counts[name.strip()] = {key: int(value) for key, value in fields.items()}
        return counts

    @property
    def messages(self) -> str:
        """stdout and stderr (where failures go) with whitespace collapsed: callbacks wrap long messages."""
        return " ".join((self.stdout + "\n" + self.stderr).split())

    def __str__(self) -> str:
        return f"ansible-playbook exited {self.returncode}\n{self.stdout[-6000:]}\n{self.stderr[-2000:]}"


def run_playbook(*args: str, timeout: float = 300) -> PlaybookRun:
    """ansible-playbook on the scenario's hosts, as Molecule runs it (its ansible.cfg, inventory
    and environment are in this process's environment)."""
    inventory = os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
    result = subprocess.run(["ansible-playbook", "--inventory", inventory, *args], capture_output=True, text=True,
                            timeout=timeout, env={**os.environ, "ANSIBLE_NOCOLOR": "1"})
    return PlaybookRun(result.returncode, result.stdout, result.stderr)


@pytest.fixture
def playbook():
    """Runs ansible-playbook on the scenario's hosts: playbook("converge.yml", "--limit", ...)."""
    return run_playbook


class HostLoad:
    """Bounded constant load from one of the scenario's hosts to a URL on the hosts' network
    (molecule/resources/constant_load.py, run there as a transient systemd unit): it starts on
    entering, stops on leaving (or by itself at its time or request budget), and then holds the
    counts: succeeded, failed, failures (the first few, with the time and the error)."""

    SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resources", "constant_load.py")
    UNIT, FOLDER = "meshwright-load", "/var/tmp/meshwright-load"

    def __init__(self, host, url: str, rate: float = 25, max_seconds: float = 300):
        self.host, self.url, self.rate, self.max_seconds = host, url, rate, max_seconds
        self.counts: dict = {}

    def __getattr__(self, name):
        if name in ("succeeded", "failed", "failures", "stopped_by"):
            return self.counts[name]
        raise AttributeError(name)

    def read(self) -> dict:
        result = self.host.run(f"cat {self.FOLDER}/counts.json")
        return json.loads(result.stdout) if result.rc == 0 and result.stdout.strip() else {}

    def __enter__(self) -> "HostLoad":
        self.host.check_output(f"rm -rf {self.FOLDER} && mkdir -p {self.FOLDER}")
        # Through a command, as every testinfra backend (docker, ssh, ansible) can run one.
        with open(self.SCRIPT, "rb") as handle:
            script = base64.b64encode(handle.read()).decode()
        self.host.check_output(f"echo {script} | base64 -d > {self.FOLDER}/constant_load.py")
        self.host.check_output(
            f"systemd-run --quiet --collect --unit={self.UNIT} /usr/bin/python3 {self.FOLDER}/constant_load.py {self.url}"
            f" --rate {self.rate} --max-seconds {self.max_seconds} --out {self.FOLDER}/counts.json --stop {self.FOLDER}/stop")
        # Started once it has had answers: a load that cannot reach the URL fails here, not later.
        deadline = time.monotonic() + 20
        while self.read().get("succeeded", 0) == 0:
            assert time.monotonic() < deadline, f"the load on {self.url} had no answer within 20 s: {self.read()}"
            time.sleep(0.5)
        return self

    def __exit__(self, *exc) -> None:
        self.host.run(f"touch {self.FOLDER}/stop")
        deadline = time.monotonic() + 30
        while not self.read().get("done"):
            assert time.monotonic() < deadline, f"the load on {self.url} did not stop within 30 s"
            time.sleep(0.5)
        self.counts = self.read()


@pytest.fixture
def constant_load():
    """constant_load(host, url, rate=25, max_seconds=300): a HostLoad to use in a `with` block."""
    return HostLoad


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    inventory = AnsibleRunner(inventory_path(item.config))
    if "host" in item.funcargs:
        host = item.funcargs["host"]
        hosts = {host.ansible.get_variables()["inventory_hostname"]: host}
    else:
        hosts = item.funcargs.get("mesh_hosts") or {}
    for name, host in hosts.items():
        for unit in units_of(inventory, name):
            journal = host.run(f"journalctl -u {unit} -n 15 --no-pager")
            log = host.run(f"tail -n 10 {UNITS[unit]} | cut -c1-300")
            report.sections.append((f"{name}: journalctl -u {unit}", journal.stdout + journal.stderr))
            report.sections.append((f"{name}: {UNITS[unit]}", log.stdout + log.stderr))
