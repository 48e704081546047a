#!/usr/bin/env python3
"""Wall time of a forced workload certificate rotation (`rotate_certs.yml -e force=true`).

Estates of 4, 20 and 50 local sidecars (bench/deploy.py's generator, with mesh identity on,
on ports from 17000 up) are deployed into a temporary state folder; then every proxy gets a new key and certificate
in the playbook's batches (a canary, then 34% at a time), each batch gated on Envoy's admin
/certs. Columns: the rotation's wall time and per proxy; the time of its two crypto tasks
(the key and CSR made on each host, the signing run on the controller), summed over batches
from Ansible's JSON callback, and their share of the wall time; and what the same work costs
in one Python process with `cryptography` (N keys, N CSRs, N signatures), as a floor.

Each Envoy with identity holds 8 inotify instances (its watched files and certs folder), and
the per-user limit (fs.inotify.max_user_instances, 128 by default) is shared by every process
of the user: sizes that do not fit are skipped with the sysctl that would make them fit.

  python bench/rotate.py [--sizes 4,20,50] [--forks 10]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from meshwright.pki import ca, csr, workload  # noqa: E402

BIN = os.path.dirname(sys.executable)
INOTIFY_PER_ENVOY = 8
CRYPTO_TASKS = {"csr": "Make a CSR when this proxy's certificate is due", "sign": "Sign the CSRs of the play's proxies"}


def estate_with_identity(size: int, folder: str, base_offset: int) -> tuple[str, str]:
    """bench/deploy.py's estate (size sidecars over its services, a local host each), with mesh
    identity on and its ports moved to start at 15000 + base_offset (clear of other benches)."""
    spec = importlib.util.spec_from_file_location("bench_deploy", os.path.join(ROOT, "bench", "deploy.py"))
    deploy_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(deploy_bench)
    mesh, inventory = deploy_bench.estate(size, folder)
    documents = [json.loads(text) for text in open(mesh).read().split("\n---\n")]
    shift = base_offset - 10000  # deploy.py's offsets start at 10000, 100 apart
    for document in documents:
        annotations = document["metadata"].get("annotations", {})
        if "meshwright.io/port-offset" in annotations:
            annotations["meshwright.io/port-offset"] = str(int(annotations["meshwright.io/port-offset"]) + shift)
            document["spec"]["ports"] = {"http": document["spec"]["ports"]["http"] + shift}
        for ingress in document["spec"].get("ingress", []):
            ingress["port"]["number"] += shift
    documents.append({"apiVersion": "meshwright.io/v1alpha1", "kind": "MeshConfig", "metadata": {"name": "mesh"}, "spec": {"certificates": {}}})
    with open(mesh, "w") as handle:
        handle.write("\n---\n".join(json.dumps(document) for document in documents))
    return mesh, inventory


def inotify_room() -> int:
    """How many more inotify instances this user may open."""
    with open("/proc/sys/fs/inotify/max_user_instances") as handle:
        limit = int(handle.read())
    used = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid != os.getuid():
                continue
            used += sum(1 for fd in os.listdir(f"/proc/{pid}/fd") if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify")
        except OSError:
            continue
    return limit - used


def playbook(name: str, inventory: str, extra: dict, forks: int, json_output: bool = False) -> tuple[float, str]:
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_FORKS=str(forks), ANSIBLE_NOCOLOR="1")
    if json_output:
        env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
    started = time.perf_counter()
    result = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", inventory, os.path.join(ROOT, "playbooks", name), "-e", json.dumps(extra)],
                            env=env, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stdout[-4000:]}{result.stderr[-2000:]}")
    return elapsed, result.stdout


def task_seconds(json_stdout: str) -> dict[str, float]:
    """Wall time of the crypto tasks, summed over every batch (JSON callback: task durations)."""
    out = {key: 0.0 for key in CRYPTO_TASKS}
    for play in json.loads(json_stdout[json_stdout.index("{"):])["plays"]:
        for task in play["tasks"]:
            for key, prefix in CRYPTO_TASKS.items():
                if prefix in task["task"]["name"]:
                    duration = task["task"]["duration"]
                    start = datetime.datetime.fromisoformat(duration["start"].replace("Z", "+00:00"))
                    end = datetime.datetime.fromisoformat(duration["end"].replace("Z", "+00:00"))
                    out[key] += (end - start).total_seconds()
    return out


def raw_crypto_seconds(count: int) -> float:
    """count keys and CSRs made and signed in this process: the floor for the same work."""
    root = ca.make_root("cluster.local")
    intermediate = ca.make_intermediate(root, "bench")
    started = time.perf_counter()
    for index in range(count):
        identity = f"spiffe://cluster.local/ns/default/sa/w-{index}"
        request = csr.make_csr(csr.make_private_key(), identity)
        workload.sign_csr(request, identity, intermediate)
    return time.perf_counter() - started


def measure(size: int, forks: int, base_offset: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="meshwright-bench-rotate-") as folder:
        os.chmod(folder, 0o755)  # run by root, the proxies run as meshwright-proxy and read below it
        mesh, inventory = estate_with_identity(size, folder, base_offset)
        state = os.path.join(folder, "state")
        extra = {"meshwright_root": ROOT, "meshwright_state_root": state, "mesh_config_paths": [mesh], "mesh_probe_urls": []}
        try:
            playbook("deploy.yml", inventory, extra, forks)
            wall, output = playbook("rotate_certs.yml", inventory, dict(extra, force=True), forks, json_output=True)
        finally:
            playbook("uninstall.yml", inventory, extra, forks)
    tasks = task_seconds(output)
    return {"size": size, "wall": wall, **tasks, "raw": raw_crypto_seconds(size)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4,20,50")
    parser.add_argument("--forks", type=int, default=10)
    parser.add_argument("--base-offset", type=int, default=2000, help="port offset of the first proxy (100 apart; ports stay under 32768)")
    args = parser.parse_args()
    rows, skipped = [], []
    for size in [int(s) for s in args.sizes.split(",") if s]:
        room = inotify_room()
        if room < size * INOTIFY_PER_ENVOY:
            skipped.append(f"{size} proxies: need {size * INOTIFY_PER_ENVOY} inotify instances, {room} left "
                           f"(sysctl -w fs.inotify.max_user_instances={size * INOTIFY_PER_ENVOY + 128 - max(room, 0)} makes room)")
            continue
        rows.append(measure(size, args.forks, args.base_offset))
    print(f"\nForced workload rotation (rotate_certs.yml -e force=true, batches 1 then 34%, forks {args.forks}, local connection)\n")
    print(f"{'proxies':>7} {'wall s':>7} {'s/proxy':>8} {'CSR tasks s':>12} {'sign tasks s':>13} {'crypto share':>13} {'in-process s':>13} {'tasks/in-process':>17}")
    for row in rows:
        crypto = row["csr"] + row["sign"]
        print(f"{row['size']:>7} {row['wall']:>7.1f} {row['wall'] / row['size']:>8.2f} {row['csr']:>12.2f} {row['sign']:>13.2f} "
              f"{100 * crypto / row['wall']:>12.0f}% {row['raw']:>13.3f} {crypto / row['raw']:>16.0f}x")
    for line in skipped:
        print(f"skipped: {line}")
    print("\nCSR tasks: the key and CSR on every host of a batch (module start-up included); sign tasks: one controller run per\n"
          "batch (loads the mesh and the CA, signs the batch). in-process: the same keys, CSRs and signatures with no Ansible.")


if __name__ == "__main__":
    main()
