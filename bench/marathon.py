"""Marathon churn through the control plane: tasks die and are replaced at a steady rate; how
long from each event in Marathon until the control plane has applied it and the connected
proxies have ACKed the endpoints without the dead task, and the memory it takes.

Two processes: the Marathon double (tests/fakes/marathon.py) runs in its own, with --apps
apps of --tasks tasks each (with a health check), so that its work is not the control plane's
(a real Marathon is another machine); in this one, `meshwright serve`'s control plane
(plaintext) follows it through the Marathon registry over HTTP and the event stream, as
`meshwright serve --marathon` does, and --clients proxies (VM WorkloadEntries that see every service) hold ADS streams as
Envoy does for clusters and endpoints, ACKing every response at once. After the first list is
applied, --rate task changes a second for --seconds seconds: a random task is killed and
Marathon starts its replacement (status updates, instance changes, a health change). Per kill:
"applied", from the kill to the end of the control plane's apply (validated, compiled, pushes
queued) of the first publish without the dead task's WorkloadEntry; "ACKed", to the moment the
last connected proxy ACKed endpoints of its service without it. "lost": kills never seen within
30 s. "peak MB" is the control plane process's peak resident memory (getrusage; the clients
are in it too, the double is not); "CPU s" the CPU seconds each process used (user + system)
from start to the end of the churn, which on a shared machine says more than wall time.
--profile FILE samples every thread of the control plane's process (registry, apply, streams)
during the churn and writes where the busy time went (bench/marathon.py Sampler).

Issue #16's goal: ACKed p99 <= 1 s at 5,000 tasks in 200 apps and 50 changes a second
(`python bench/marathon.py`, the defaults).

--cost N measures instead what a change costs the control plane's side alone, whatever the
machine's load: in this process, without the double or streams, the registry holds the same
apps (in Marathon's shape) and N tasks are replaced one after the other, each translated and
published by the registry (MarathonRegistry.publish) and applied by the plane; the CPU
milliseconds per change (process time). It runs against any checkout's src (PYTHONPATH), for a
before and after on the same machine.

Usage: python bench/marathon.py [--apps 200] [--tasks 25] [--rate 50] [--seconds 60] [--clients 5] [--profile FILE]
       python bench/marathon.py --cost 300 [--apps 200] [--tasks 25] [--clients 5]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import queue
import random
import resource
import sys
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import grpc  # noqa: E402
from envoy.config.cluster.v3 import cluster_pb2  # noqa: E402
from envoy.config.core.v3 import base_pb2  # noqa: E402
from envoy.config.endpoint.v3 import endpoint_pb2  # noqa: E402
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2  # noqa: E402

from meshwright.compile.envoy_values import CLUSTER, CLUSTER_LOAD_ASSIGNMENT  # noqa: E402
from meshwright.registry.marathon import workload_name  # noqa: E402
from meshwright.serve import server as xds_server  # noqa: E402
from meshwright.serve.marathon import MarathonRegistry  # noqa: E402
try:
    from meshwright.serve.registries import ViewChanges  # noqa: E402
except ImportError:  # a checkout from before registries published what changed (--cost against its src)
    ViewChanges = type("ViewChanges", (), {})
from meshwright.serve.source import load_valid  # noqa: E402
from tests.fakes.marathon import MarathonDouble  # noqa: E402
from tests.harness import free_port  # noqa: E402

MESH = "apiVersion: meshwright.io/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\nspec: {trustDomain: cluster.local}\n"
CLIENT = """---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: client-{index}, namespace: default}}
spec: {{address: 127.0.0.1, labels: {{app: client}}, serviceAccount: client}}
"""


class AdsClient:
    """A proxy's ADS stream, as Envoy drives it for clusters and endpoints: subscribes to CDS,
    then to EDS for every cluster, ACKs each response at once, and keeps, per response, when it
    was ACKed and the endpoint ports of every cluster."""

    def __init__(self, port: int, proxy: str):
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.requests: queue.Queue = queue.Queue()
        self.node = base_pb2.Node(id=f"sidecar~127.0.0.1~{proxy}~default.svc.cluster.local", cluster=proxy)
        self.ports: dict[str, frozenset] = {}
        self.acked: list[tuple[float, dict]] = []  # (when, {cluster: endpoint ports}) after each EDS ACK
        self.lock = threading.Lock()
        self.eds_names: list[str] = []
        self.call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel).StreamAggregatedResources(iter(self.requests.get, None))
        self.requests.put(discovery_pb2.DiscoveryRequest(node=self.node, type_url=CLUSTER))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for response in self.call:
                self._answer(response)
        except grpc.RpcError:
            pass

    def _answer(self, response) -> None:
        if response.type_url == CLUSTER:
            names = []
            for any_ in response.resources:
                cluster = cluster_pb2.Cluster()
                any_.Unpack(cluster)
                if cluster.name.startswith("outbound|"):
                    names.append(cluster.name)
            self.requests.put(discovery_pb2.DiscoveryRequest(type_url=CLUSTER, version_info=response.version_info, response_nonce=response.nonce))
            if sorted(names) != self.eds_names:
                self.eds_names = sorted(names)
                self.requests.put(discovery_pb2.DiscoveryRequest(type_url=CLUSTER_LOAD_ASSIGNMENT, resource_names=self.eds_names))
            return
        if response.type_url == CLUSTER_LOAD_ASSIGNMENT:
            for any_ in response.resources:
                assignment = endpoint_pb2.ClusterLoadAssignment()
                any_.Unpack(assignment)
                self.ports[assignment.cluster_name] = frozenset(
                    lb.endpoint.address.socket_address.port_value for group in assignment.endpoints for lb in group.lb_endpoints)
            self.requests.put(discovery_pb2.DiscoveryRequest(type_url=CLUSTER_LOAD_ASSIGNMENT, resource_names=self.eds_names,
                                                             version_info=response.version_info, response_nonce=response.nonce))
            with self.lock:
                self.acked.append((time.monotonic(), dict(self.ports)))

    def acked_without(self, cluster: str, port: int, after: float) -> float | None:
        """When this proxy first ACKed endpoints of cluster without port, after a moment."""
        with self.lock:
            return next((moment for moment, ports in self.acked if moment >= after and port not in ports.get(cluster, ())), None)

    def close(self) -> None:
        self.requests.put(None)
        self.channel.close()


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Applied:
    """The registry's publish, timed: when each WorkloadEntry left the plane's view (a whole
    view or the changes the registry published), and the moment of every apply."""

    def __init__(self, publish):
        self.publish, self.lock = publish, threading.Condition()
        self.applies: list[float] = []
        self.present: set[str] = set()
        self.seen: set[str] = set()  # every WorkloadEntry ever published
        self.left: dict[str, list[float]] = {}  # name -> moments it left the view

    def __call__(self, update):
        self.publish(update)
        moment = time.monotonic()
        if isinstance(update, ViewChanges):  # the work is the changes', as the plane's
            came = {key[2] for key, r in update.changes.items() if key[0] == "WorkloadEntry" and r is not None}
            went = {key[2] for key, r in update.changes.items() if key[0] == "WorkloadEntry" and r is None} & self.present
        else:
            now = {r.name for r in update if r.kind == "WorkloadEntry"}
            came, went = now - self.present, self.present - now
        with self.lock:
            for name in went:
                self.left.setdefault(name, []).append(moment)
            self.present -= went
            self.present |= came
            self.seen |= came
            self.applies.append(moment)
            self.lock.notify_all()

    def gone_at(self, name: str, after: float, timeout: float = 30.0) -> float | None:
        """The first apply after a moment whose view no longer holds name."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                if name not in self.seen:  # killed before it was ever published: gone at the next apply
                    moment = next((m for m in self.applies if m >= after), None)
                else:
                    moment = next((m for m in self.left.get(name, ()) if m >= after), None)
                if moment is not None:
                    return moment
                if time.monotonic() > deadline:
                    return None
                self.lock.wait(0.05)


def run_double(apps: int, tasks: int, connection) -> None:
    """The double's process: start it with the apps, send its URL, then on ("churn", rate,
    seconds) kill tasks and send the kills, and its CPU seconds; stop on "stop"."""
    double = MarathonDouble()
    for index in range(apps):
        double.cluster.put_app({"id": f"/ns{index % 10}/app{index}", "cmd": "./app", "instances": tasks,
                                "portDefinitions": [{"port": 0, "name": "http"}],
                                "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/", "portIndex": 0}]}, force=False)
    connection.send(double.url)
    while True:
        command = connection.recv()
        if command[0] == "churn":
            kills = churn(double, command[1], command[2])
            usage = resource.getrusage(resource.RUSAGE_SELF)
            connection.send((kills, usage.ru_utime + usage.ru_stime))
        else:
            double.stop()
            return


def start(url: str, folder: str, clients: int):
    with open(os.path.join(folder, "mesh.yaml"), "w") as handle:
        handle.write(MESH + "".join(CLIENT.format(index=index) for index in range(clients)))
    mesh, problems = load_valid([folder])
    assert not problems, problems
    registry = MarathonRegistry([url], "marathon/bench")
    applied = {}
    original_start = registry.start

    def start_timed(publish):
        applied["publish"] = Applied(publish)
        original_start(applied["publish"])
    registry.start = start_timed
    running = xds_server.start(mesh, [folder], ("127.0.0.1", free_port()), None, None, watch=False, registries=[registry])
    return running, applied


def churn(double: MarathonDouble, rate: float, seconds: float) -> list[tuple[str, str, int, float]]:
    """Kill a random task every 1/rate s (Marathon starts a replacement): per kill, the killed
    task's WorkloadEntry name, its service's cluster, its port, and when it was killed
    (time.monotonic: one clock for every process of the machine)."""
    rng = random.Random(16)
    kills = []
    started = time.monotonic()
    for index in range(int(rate * seconds)):
        time.sleep(max(0.0, started + index / rate - time.monotonic()))
        with double.cluster.lock:
            app_id = rng.choice(sorted(double.cluster.tasks))
            task = rng.choice(double.cluster.tasks[app_id])
            service_port = double.cluster.apps[app_id]["portDefinitions"][0]["port"]
            killed_at = time.monotonic()
            double.cluster.kill_task(task["id"], replace=True)
        namespace, service = app_id.strip("/").split("/")
        cluster = f"outbound|{service_port}||{service}.{namespace}.svc.cluster.local"
        kills.append((workload_name(service, task["id"]), cluster, task["ports"][0], killed_at))
    return kills


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def latencies(kills, applied: Applied, clients: list[AdsClient], settle: float = 30.0) -> tuple[list[float], list[float], int]:
    """Per kill: seconds to the plane's apply without it, and to the last client's ACK of
    endpoints without it; how many kills were never seen (within settle seconds)."""
    applied_in, acked_in, lost = [], [], 0
    for name, cluster, port, killed_at in kills:
        # Each kill gets settle seconds from its own moment (one never seen must not use up
        # the time of those after it); the history of applies and ACKs is kept, so a kill
        # long past is judged at once.
        deadline = max(killed_at + settle, time.monotonic())
        seen = applied.gone_at(name, killed_at, timeout=max(0.0, deadline - time.monotonic()))
        acks = []
        for client in clients:
            # Looked at once at least: a kill whose settle time passed while earlier ones were
            # judged (the churn lasts longer than settle) is judged on the history kept.
            ack = client.acked_without(cluster, port, killed_at)
            while ack is None and time.monotonic() < deadline:
                time.sleep(0.05)
                ack = client.acked_without(cluster, port, killed_at)
            acks.append(ack)
        if seen is None or None in acks:
            lost += 1
            continue
        applied_in.append(seen - killed_at)
        if acks:
            acked_in.append(max(acks) - killed_at)
    return applied_in, acked_in, lost


def percentile(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.0f}"


def marathon_task(app_id: str, port: int) -> dict:
    """A running, healthy task as /v2/apps?embed=apps.tasks lists it."""
    return {"id": f"{app_id.strip('/').replace('/', '_')}.{uuid.UUID(int=port)}", "appId": app_id, "state": "TASK_RUNNING", "host": "127.0.0.1",
            "ports": [port], "ipAddresses": [], "healthCheckResults": [{"alive": True}], "version": "2026-12-01T00:00:00.000Z"}


def change_cost(apps: int, tasks: int, changes: int, clients: int) -> tuple[float, float]:
    """(CPU seconds of the first publish, CPU milliseconds per task replaced) on the control
    plane's side, in this process (see --cost)."""
    from meshwright.serve.plane import ControlPlane
    from meshwright.serve.registries import publisher

    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "mesh.yaml"), "w") as handle:
            handle.write(MESH + "".join(CLIENT.format(index=index) for index in range(clients)))
        mesh, problems = load_valid([folder])
    assert not problems, problems
    plane = ControlPlane(mesh, require_identity=False)
    registry = MarathonRegistry(["http://127.0.0.1:1"], "marathon/bench")
    registry._publish = publisher(plane, registry.name)
    ports = iter(range(20000, 1 << 30))
    registry.apps = {f"/ns{i % 10}/app{i}": {"id": f"/ns{i % 10}/app{i}", "instances": tasks, "portDefinitions": [{"port": 10000 + i, "name": "http"}],
                                            "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/", "portIndex": 0}], "labels": {},
                                            "tasks": [marathon_task(f"/ns{i % 10}/app{i}", next(ports)) for dummy in range(tasks)]}
                     for i in range(apps)}
    started = time.process_time()
    registry._dirty = set(registry.apps)
    registry.publish()
    first = time.process_time() - started
    assert len(plane.estate.proxies) == apps * tasks + clients, "the first publish was not applied"
    rng = random.Random(16)
    started = time.process_time()
    for dummy in range(changes):
        app = registry.apps[rng.choice(sorted(registry.apps))]
        victim = rng.randrange(len(app["tasks"]))
        app["tasks"] = app["tasks"][:victim] + app["tasks"][victim + 1:] + [marathon_task(app["id"], next(ports))]
        registry._dirty.add(app["id"])
        registry.publish()
    per_change = (time.process_time() - started) / changes * 1000
    assert len(plane.estate.proxies) == apps * tasks + clients and plane.rejection is None, plane.rejection
    return first, per_change


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=25, help="tasks per app")
    parser.add_argument("--rate", type=float, default=50, help="task changes a second")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=5, help="proxies connected over ADS (VM WorkloadEntries that see every service)")
    parser.add_argument("--profile", metavar="FILE", help="sample the control plane's threads during the churn; write where the time went")
    parser.add_argument("--cost", type=int, metavar="N", help="replace N tasks in this process and print the CPU ms per change (no double, no streams)")
    args = parser.parse_args(argv)
    if args.cost:
        first, per_change = change_cost(args.apps, args.tasks, args.cost, args.clients)
        print(f"{'tasks':>6} {'changes':>7} {'first publish CPU s':>19} {'CPU ms per change':>17}")
        print(f"{args.apps * args.tasks:>6} {args.cost:>7} {first:>19.2f} {per_change:>17.1f}")
        print("the control plane's side alone (registry translation and publish, the plane's apply), in one process")
        return 0
    logging.basicConfig(level=logging.INFO if os.environ.get("BENCH_LOG") else logging.WARNING, format="%(asctime)s %(message)s")
    context = multiprocessing.get_context("spawn")  # before any gRPC thread of this process
    ours, theirs = context.Pipe()
    marathon = context.Process(target=run_double, args=(args.apps, args.tasks, theirs), daemon=True)
    marathon.start()
    with tempfile.TemporaryDirectory() as folder:
        url = ours.recv()
        began = time.monotonic()
        running, applied = start(url, folder, args.clients)
        while not (applied.get("publish") and applied["publish"].applies):
            time.sleep(0.05)
        first = time.monotonic() - began
        clients = [AdsClient(running.grpc_port, f"client-{index}.default") for index in range(args.clients)]
        while not all(client.acked for client in clients):
            time.sleep(0.05)
        profile = Sampler() if args.profile else None
        cpu_before = cpu_seconds()
        ours.send(("churn", args.rate, args.seconds))
        kills, double_cpu = ours.recv()
        applied_in, acked_in, lost = latencies(kills, applied["publish"], clients)
        plane_cpu = cpu_seconds() - cpu_before
        if profile is not None:
            profile.write(args.profile)
        proxies = len(running.plane.estate.proxies)
        for client in clients:
            client.close()
        running.stop()
        ours.send(("stop",))
        marathon.join(10)
    print(f"{'tasks':>6} {'proxies':>7} {'first s':>7} {'changes':>7} {'lost':>4} {'applied p50':>11} {'p99':>6} "
          f"{'ACKed p50':>9} {'p99':>6} {'peak MB':>7} {'plane CPU s':>11} {'double CPU s':>12}")
    print(f"{args.apps * args.tasks:>6} {proxies:>7} {first:>7.1f} {len(kills):>7} {lost:>4} {percentile(applied_in, 0.5):>11} "
          f"{percentile(applied_in, 0.99):>6} {percentile(acked_in, 0.5):>9} {percentile(acked_in, 0.99):>6} {peak_mb():>7.0f} "
          f"{plane_cpu:>11.1f} {double_cpu:>12.1f}")
    print(f"milliseconds from a task's kill in Marathon; ACKed: the last of {args.clients} connected proxies; "
          f"{args.rate:g} changes/s for {args.seconds:g} s; CPU s: during the churn and its settling (the double: from its start)")
    return 0


class Sampler:
    """A sampling profiler of every thread of this process (cProfile sees only the thread that
    enables it): every interval, the stack of each thread the kernel shows running or waiting
    for a CPU (state R in /proc); sleeping threads (a lock, a queue, a socket) are idle.
    write() prints, per function, the share of busy samples it was on the stack (inclusive)
    and innermost (self)."""

    def __init__(self, interval: float = 0.005):
        self.interval, self.stop = interval, threading.Event()
        self.inclusive: dict[str, int] = {}
        self.innermost: dict[str, int] = {}
        self.busy = self.idle = 0
        self.thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        me = threading.get_ident()
        while not self.stop.wait(self.interval):
            native = {thread.ident: thread.native_id for thread in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident != me:
                    self._sample(frame, native.get(ident))

    @staticmethod
    def running(native_id: int | None) -> bool:
        try:
            with open(f"/proc/self/task/{native_id}/stat") as handle:
                return handle.read().rpartition(")")[2].split()[0] == "R"
        except (OSError, IndexError):
            return False

    def _sample(self, frame, native_id: int | None) -> None:
        if not self.running(native_id):
            self.idle += 1
            return
        self.busy += 1
        names = []
        while frame is not None:
            names.append(f"{os.path.relpath(frame.f_code.co_filename, ROOT) if frame.f_code.co_filename.startswith(ROOT) else os.path.basename(frame.f_code.co_filename)}"
                         f":{frame.f_code.co_name}")
            frame = frame.f_back
        self.innermost[names[0]] = self.innermost.get(names[0], 0) + 1
        for name in set(names):
            self.inclusive[name] = self.inclusive.get(name, 0) + 1

    def write(self, path: str, top: int = 40) -> None:
        self.stop.set()
        self.thread.join()
        lines = [f"{self.busy} busy samples, {self.idle} idle, every {self.interval * 1000:g} ms across threads", "",
                 "inclusive %  function"]
        for name, count in sorted(self.inclusive.items(), key=lambda item: -item[1])[:top]:
            lines.append(f"{100 * count / max(1, self.busy):10.1f}  {name}")
        lines += ["", "self %  function"]
        for name, count in sorted(self.innermost.items(), key=lambda item: -item[1])[:top]:
            lines.append(f"{100 * count / max(1, self.busy):6.1f}  {name}")
        with open(path, "w") as handle:
            handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
