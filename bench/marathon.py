"""Marathon churn through the control plane: tasks die and are replaced at a steady rate; how
long from each event in Marathon until the control plane has applied it, and the memory it takes.

In one process: the Marathon double (tests/fakes/marathon.py) runs --apps apps of --tasks
tasks each (with a health check), `meshwright serve`'s control plane (plaintext, no proxies
connected) follows it through the Marathon registry over HTTP and the event stream, as
`meshwright serve --marathon` does. After the first list is applied, --rate task changes a
second for --seconds seconds: a random task is killed and Marathon starts its replacement (a
status update, instance changes, a health change). A change's latency runs from the kill in
Marathon to the end of the control plane's apply (validated, compiled, pushes queued) of the
first publish without the killed task's WorkloadEntry. "peak MB" is the process's peak resident
memory (getrusage), the double and its tasks' JSON included.

Not yet measured: proxies' ACKs (no xDS clients are connected); issue #16's goal is p99 <= 1 s
from event to every affected proxy's ACK at 5,000 tasks in 200 apps and 50 changes a second.

Usage: python bench/marathon.py [--apps 200] [--tasks 25] [--rate 50] [--seconds 60]
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import resource
import statistics
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from meshwright.registry.marathon import workload_name  # noqa: E402
from meshwright.serve import server as xds_server  # noqa: E402
from meshwright.serve.marathon import MarathonRegistry  # noqa: E402
from meshwright.serve.source import load_valid  # noqa: E402
from tests.fakes.marathon import MarathonDouble  # noqa: E402
from tests.harness import free_port  # noqa: E402

MESH = "apiVersion: meshwright.io/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\nspec: {trustDomain: cluster.local}\n"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Applied:
    """The registry's publish, timed: after each apply, which WorkloadEntries the plane holds."""

    def __init__(self, publish):
        self.publish, self.lock = publish, threading.Condition()
        self.history: list[tuple[float, frozenset]] = []

    def __call__(self, resources):
        self.publish(resources)
        names = frozenset(r.name for r in resources if r.kind == "WorkloadEntry")
        with self.lock:
            self.history.append((time.monotonic(), names))
            self.lock.notify_all()

    def gone_at(self, name: str, after: float, timeout: float = 30.0) -> float | None:
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                for moment, names in self.history:
                    if moment >= after and name not in names:
                        return moment
                if time.monotonic() > deadline:
                    return None
                self.lock.wait(0.05)


def start(apps: int, tasks: int, folder: str):
    double = MarathonDouble()
    for index in range(apps):
        double.cluster.put_app({"id": f"/ns{index % 10}/app{index}", "cmd": "./app", "instances": tasks,
                                "portDefinitions": [{"port": 0, "name": "http"}],
                                "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/", "portIndex": 0}]}, force=False)
    with open(os.path.join(folder, "mesh.yaml"), "w") as handle:
        handle.write(MESH)
    mesh, problems = load_valid([folder])
    assert not problems, problems
    registry = MarathonRegistry([double.url], "marathon/bench")
    applied = {}
    original_start = registry.start

    def start_timed(publish):
        applied["publish"] = Applied(publish)
        original_start(applied["publish"])
    registry.start = start_timed
    running = xds_server.start(mesh, [folder], ("127.0.0.1", free_port()), None, None, watch=False, registries=[registry])
    return double, running, applied


def churn(double: MarathonDouble, applied: Applied, rate: float, seconds: float) -> tuple[list[float], int]:
    """Kill a random task every 1/rate s; each kill's latency to the plane (None: never seen)."""
    rng = random.Random(16)
    kills = []
    started = time.monotonic()
    for index in range(int(rate * seconds)):
        due = started + index / rate
        time.sleep(max(0.0, due - time.monotonic()))
        with double.cluster.lock:
            app_id = rng.choice(sorted(double.cluster.tasks))
            task = rng.choice(double.cluster.tasks[app_id])
            killed_at = time.monotonic()
            double.cluster.kill_task(task["id"], replace=True)
        service = app_id.rsplit("/", 1)[1]
        kills.append((workload_name(service, task["id"]), killed_at))
    latencies, lost = [], 0
    for name, killed_at in kills:
        seen = applied.gone_at(name, killed_at)
        if seen is None:
            lost += 1
        else:
            latencies.append(seen - killed_at)
    return latencies, lost


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=25, help="tasks per app")
    parser.add_argument("--rate", type=float, default=50, help="task changes a second")
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if os.environ.get("BENCH_LOG") else logging.WARNING, format="%(asctime)s %(message)s")
    with tempfile.TemporaryDirectory() as folder:
        began = time.monotonic()
        double, running, applied = start(args.apps, args.tasks, folder)
        publish = None
        while publish is None or not publish.history:
            publish = applied.get("publish")
            time.sleep(0.05)
        first = time.monotonic() - began
        latencies, lost = churn(double, publish, args.rate, args.seconds)
        proxies = len(running.plane.estate.proxies)
        running.stop()
        double.stop()
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")  # noqa: E731
    print(f"{'tasks':>6} {'proxies':>7} {'first list+apply s':>18} {'changes':>7} {'lost':>4} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'peak MB':>7}")
    print(f"{args.apps * args.tasks:>6} {proxies:>7} {first:>18.1f} {len(latencies):>7} {lost:>4} {pick(0.5):>7.0f} {pick(0.99):>7.0f} "
          f"{(latencies[-1] * 1000 if latencies else float('nan')):>7.0f} {peak_mb():>7.0f}")
    if latencies:
        print(f"mean {statistics.mean(latencies) * 1000:.0f} ms over {args.rate:g} changes/s for {args.seconds:g} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
