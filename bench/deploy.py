#!/usr/bin/env python3
"""Deploy wall time: a first `ansible-playbook playbooks/deploy.yml` and a no-change re-run.

Rows: the seed demo (inventories/local: gateway, 4 sidecars, 4 apps), then generated estates of
10, 25 and 50 local "hosts" (one sidecar each, no app; ports offset per host), each deployed
into a temporary state folder and uninstalled afterwards. Columns: first deploy, re-run, the
re-run as a share of the first (target: under 50%), the controller-side validate+render time
measured in-process (part of both runs), and the re-run's cost per host-task, which is where
the rest of a no-change run goes (Ansible running each module on each host).

  python bench/deploy.py [--sizes 10,25,50] [--forks 10]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from meshwright.deliver.bundle import bundle_mesh  # noqa: E402

BIN = os.path.dirname(sys.executable)
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
SERVICES = 5


def estate(size: int, folder: str) -> tuple[str, str]:
    """A mesh of `size` workloads over SERVICES services, and an inventory with a host each."""
    documents = []
    for index in range(SERVICES):
        documents.append({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": f"svc-{index}", "namespace": "default"},
                          "spec": {"hosts": [f"svc-{index}.default.svc.cluster.local"], "location": "MESH_INTERNAL", "resolution": "STATIC",
                                   "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}], "workloadSelector": {"labels": {"app": f"svc-{index}"}}}})
    hosts = {}
    for index in range(size):
        offset = 10000 + 100 * index
        name = f"w-{index}"
        documents.append({"apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
                          "metadata": {"name": name, "namespace": "default", "annotations": {"meshwright.io/port-offset": str(offset)}},
                          "spec": {"address": "127.0.0.1", "ports": {"http": 15006 + offset}, "labels": {"app": f"svc-{index % SERVICES}", "instance": name}}})
        documents.append({"apiVersion": "networking.istio.io/v1", "kind": "Sidecar", "metadata": {"name": name, "namespace": "default"},
                          "spec": {"workloadSelector": {"labels": {"instance": name}},
                                   "ingress": [{"port": {"number": 15006 + offset, "protocol": "HTTP", "name": "http"}, "defaultEndpoint": f"127.0.0.1:{20000 + index}"}]}})
        hosts[name] = {"mesh_proxy": f"{name}.default"}
    mesh = os.path.join(folder, "mesh.yaml")
    with open(mesh, "w") as handle:
        handle.write("\n---\n".join(json.dumps(d) for d in documents))
    inventory = os.path.join(folder, "inventory")
    os.makedirs(os.path.join(inventory, "group_vars"))
    with open(os.path.join(inventory, "hosts.yml"), "w") as handle:
        json.dump({"mesh": {"children": {"mesh_gateways": {"hosts": {}}, "mesh_sidecars": {"hosts": hosts}}}}, handle)
    with open(os.path.join(ROOT, "inventories", "local", "group_vars", "all.yml")) as source:
        with open(os.path.join(inventory, "group_vars", "all.yml"), "w") as handle:
            handle.write(source.read())
    return mesh, inventory


def playbook(name: str, inventory: str, extra: dict, forks: int) -> tuple[float, dict]:
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_FORKS=str(forks), ANSIBLE_NOCOLOR="1")
    started = time.perf_counter()
    result = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", inventory, os.path.join(ROOT, "playbooks", name), "-e", json.dumps(extra)],
                            env=env, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stdout[-4000:]}{result.stderr[-2000:]}")
    recap = {host: (int(ok), int(changed)) for host, ok, changed, _, _ in RECAP.findall(result.stdout)}
    return elapsed, recap


def measure(label: str, inventory: str, mesh_paths: list[str], forks: int) -> dict:
    # A short folder name: Envoy's hot restart sockets live below it, and a Unix socket's path
    # holds at most 107 bytes.
    with tempfile.TemporaryDirectory(prefix="mw-bench-") as state:
        os.chmod(state, 0o755)  # run by root, the proxies run as meshwright-proxy and read below it
        extra = {"meshwright_root": ROOT, "meshwright_state_root": state, "mesh_config_paths": mesh_paths}
        try:
            first, _ = playbook("deploy.yml", inventory, extra, forks)
            rerun, recap = playbook("deploy.yml", inventory, extra, forks)
        finally:  # no proxy left running, even when a deploy failed
            playbook("uninstall.yml", inventory, extra, forks)
    changed = sum(c for _, c in recap.values())
    tasks = sum(ok for ok, _ in recap.values())
    started = time.perf_counter()
    bundle_mesh(mesh_paths, {f"{host}.default": "/tmp/unused" for host in recap})  # every host's proxy is <host>.default here
    render = time.perf_counter() - started
    return {"label": label, "hosts": len(recap), "first": first, "rerun": rerun, "changed": changed, "render": render, "per_task_ms": 1000 * rerun / max(tasks, 1)}


def print_row(row: dict) -> None:
    share = 100 * row["rerun"] / row["first"]
    print(f"{row['label']:<12} {row['hosts']:>5} {row['first']:>8.1f} {row['rerun']:>9.1f} {share:>8.0f}% {row['changed']:>8} {row['render']:>9.2f} "
          f"{row['per_task_ms']:>13.0f} {'PASS' if share < 50 else 'MISS':>5}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,25,50")
    parser.add_argument("--forks", type=int, default=10)
    args = parser.parse_args()
    # Each row as soon as it is measured: the 50-host row alone takes minutes.
    print(f"\nDeploy wall time on this machine (ansible-playbook, forks {args.forks}, local connection)\n")
    print(f"{'estate':<12} {'hosts':>5} {'first s':>8} {'re-run s':>9} {'re-run %':>9} {'changed':>8} {'render s':>9} {'ms/host-task':>13} {'<50%':>5}", flush=True)
    print_row(measure("seed demo", os.path.join(ROOT, "inventories", "local"), [os.path.join(ROOT, "examples", "seed", "mesh")], args.forks))
    for size in [int(s) for s in args.sizes.split(",") if s]:
        with tempfile.TemporaryDirectory(prefix="mw-bench-estate-") as folder:
            mesh, inventory = estate(size, folder)
            print_row(measure(f"{size} hosts", inventory, [mesh], args.forks))


if __name__ == "__main__":
    main()
