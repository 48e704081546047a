#!/usr/bin/env python3
"""Kubernetes churn through the control plane: pods are replaced at a steady rate on a real
API server; how long from each EndpointSlice change until every connected proxy has ACKed
endpoints that follow it, and what the control plane costs (issue #15).

On this machine: a real API server from ../shared/envtest (etcd and kube-apiserver only, as
envtest runs them: no controller-manager and no kubelet, so this bench writes what they would:
pods' status and the EndpointSlices), `meshwright serve --kubeconfig` as a user runs it (a
subprocess, plaintext xDS on loopback), and --proxies lightweight ADS clients in a process of
their own (as Envoy: CDS, then EDS for every cluster, every response ACKed at once).

The cluster: --services Services in 10 namespaces, --pods pods in all (spread evenly), each
Service's pods listed by one EndpointSlice. One pod of each of the first --proxies Services is
injected (the injector's `security.istio.io/tlsMode: istio` label): those are the mesh's
proxies, and the clients connect as them; every other pod is an endpoint only (no sidecar).
No Sidecar resource scopes them: every proxy sees every service, so every change affects
every proxy.

Churn: --rate pod changes a second for --seconds seconds, each on a pod without a sidecar (the
proxies stay connected): as Kubernetes does when a pod of a Deployment is replaced, the
EndpointSlice marks it terminating (t0), it is deleted, its replacement is created and becomes
Ready with a new IP, and the EndpointSlice lists the replacement instead (t1). Measured per
change, from just before the EndpointSlice write is sent (so the API server's write and its
watch are in it): "gone", until the last proxy ACKed the service's endpoints without the old
pod; "came", until the last ACKed them with the new one. "lost": changes not seen by every
proxy within 30 s.

The control plane's cost: its peak and final RSS (/proc VmHWM, VmRSS) and its CPU seconds
over the churn (utime + stime), with the machine's load average beside them: the machine is
shared, so latency is only comparable with the same load.

Issue #15's goal: p99 <= 1 s at 5,000 pods over 500 services, 50 changes a second for a
minute, 200 connected proxies (`python bench/kubernetes.py`, the defaults; about 4 minutes).

--cost N measures instead what a change costs the control plane's side alone, whatever the
machine's load: in this process, without the API server or streams, the registry is handed the
same objects as watch events, then N pod replacements (the five events of each: the slice
marking the pod terminating, its deletion, its replacement created, Ready with an IP, the slice
listing it), each published by the registry and applied by the plane; the CPU milliseconds per
change (process time). It runs against any checkout's src (PYTHONPATH), for a before and after.

Usage: python bench/kubernetes.py [--services 500] [--pods 5000] [--proxies 200] [--rate 50] [--seconds 60]
       python bench/kubernetes.py --quick     (50 services, 500 pods, 20 proxies, 10 changes/s for 10 s)
       python bench/kubernetes.py --cost 200 [--services 500] [--pods 5000] [--proxies 200]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
# This file's folder is not a place to import from: `kubernetes` there is this file, not the client.
sys.path[:] = [path for path in sys.path if os.path.abspath(path or ".") != BENCH]
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "src"))

NAMESPACES = 10
PORT, TARGET_PORT = 80, 8080
TLS_MODE_LABEL = "security.istio.io/tlsMode"
SETTLE = 30.0
MESH = "apiVersion: meshwright.io/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\nspec: {trustDomain: cluster.local}\n"


def say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


# The clients' process: `python bench/kubernetes.py --clients PORT` reads proxy ids on its
# first stdin line, prints "R" once every proxy ACKed endpoints of EXPECTED clusters (second
# line), then reads the changes (JSON) and prints their latencies (JSON).

class AdsClient:
    """A proxy's ADS stream as Envoy drives it for clusters and endpoints; keeps, per cluster,
    each ACKed set of endpoint addresses with the moment of its ACK."""

    def __init__(self, port: int, proxy: str, parsed: dict):
        import grpc
        from envoy.config.core.v3 import base_pb2
        from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
        from meshwright.compile.envoy_values import CLUSTER

        self.discovery = discovery_pb2
        self.parsed = parsed  # assignment bytes -> (cluster, addresses): shared by every client
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.requests: queue.Queue = queue.Queue()
        namespace = proxy.rsplit(".", 1)[1]
        node = base_pb2.Node(id=f"sidecar~127.0.0.1~{proxy}~{namespace}.svc.cluster.local", cluster=proxy)
        self.history: dict[str, list[tuple[float, frozenset]]] = {}
        self.eds_names: list[str] = []
        self.call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel).StreamAggregatedResources(iter(self.requests.get, None))
        self.requests.put(discovery_pb2.DiscoveryRequest(node=node, type_url=CLUSTER))
        self.rpc_error = grpc.RpcError
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for response in self.call:
                self._answer(response)
        except self.rpc_error:
            pass

    def _answer(self, response) -> None:
        from envoy.config.cluster.v3 import cluster_pb2
        from meshwright.compile.envoy_values import CLUSTER, CLUSTER_LOAD_ASSIGNMENT

        request = self.discovery.DiscoveryRequest
        if response.type_url == CLUSTER:
            names = []
            for any_ in response.resources:
                cluster = cluster_pb2.Cluster()
                any_.Unpack(cluster)
                if cluster.name.startswith("outbound|"):
                    names.append(cluster.name)
            self.requests.put(request(type_url=CLUSTER, version_info=response.version_info, response_nonce=response.nonce))
            if sorted(names) != self.eds_names:
                self.eds_names = sorted(names)
                self.requests.put(request(type_url=CLUSTER_LOAD_ASSIGNMENT, resource_names=self.eds_names))
        elif response.type_url == CLUSTER_LOAD_ASSIGNMENT:
            assignments = [self._parsed(any_.value) for any_ in response.resources]
            self.requests.put(request(type_url=CLUSTER_LOAD_ASSIGNMENT, resource_names=self.eds_names,
                                      version_info=response.version_info, response_nonce=response.nonce))
            acked_at = time.monotonic()
            for cluster, addresses in assignments:
                self.history.setdefault(cluster, []).append((acked_at, addresses))

    def _parsed(self, value: bytes) -> tuple[str, frozenset]:
        from envoy.config.endpoint.v3 import endpoint_pb2

        known = self.parsed.get(value)
        if known is None:
            assignment = endpoint_pb2.ClusterLoadAssignment.FromString(value)
            known = self.parsed[value] = (assignment.cluster_name, frozenset(
                lb.endpoint.address.socket_address.address for group in assignment.endpoints for lb in group.lb_endpoints))
        return known

    def first_ack(self, cluster: str, address: str, present: bool, after: float) -> float | None:
        """When this proxy first ACKed the cluster's endpoints with (present) or without the address, after a moment."""
        return next((moment for moment, addresses in list(self.history.get(cluster, ())) if moment >= after and (address in addresses) == present),
                    None)

    def close(self) -> None:
        self.requests.put(None)
        self.channel.close()


def clients_main(port: int) -> int:
    proxies = sys.stdin.readline().split()
    expected = int(sys.stdin.readline())
    parsed: dict = {}
    clients = [AdsClient(port, proxy, parsed) for proxy in proxies]
    while not all(len(client.history) >= expected for client in clients):
        time.sleep(0.1)
    print("R", flush=True)
    changes = json.loads(sys.stdin.readline())
    results = []
    for cluster, address, present, at in changes:
        deadline = max(at + SETTLE, time.monotonic())
        acks = []
        for client in clients:
            ack = client.first_ack(cluster, address, present, at)
            while ack is None and time.monotonic() < deadline:
                time.sleep(0.05)
                ack = client.first_ack(cluster, address, present, at)
            acks.append(ack)
        results.append(None if None in acks else max(acks) - at)
    print(json.dumps(results), flush=True)
    for client in clients:
        client.close()
    return 0


# The cluster, as the controllers and the kubelet would keep it.

def service_name(index: int) -> tuple[str, str]:
    return f"ns-{index % NAMESPACES}", f"svc-{index:03d}"


class Cluster:
    """Services, pods and EndpointSlices written to the API server; a pod's IP is unique."""

    def __init__(self, api_server, services: int, pods: int, proxies: int):
        from kubernetes import client

        self.client = client
        self.api = api_server.api_client()
        self.core, self.discovery = client.CoreV1Api(self.api), client.DiscoveryV1Api(self.api)
        self.services, self.proxies = services, proxies
        self.per_service = [pods // services + (1 if index < pods % services else 0) for index in range(services)]
        self.next_ip, self.next_pod = 1, 0
        self.lock = threading.Lock()
        self.endpoints: dict[int, list[tuple[str, str]]] = {}  # service index -> [(pod, ip)] as its slice lists them
        self.busy: set[int] = set()

    def _ip(self) -> str:
        with self.lock:
            value, self.next_ip = self.next_ip, self.next_ip + 1
        return f"10.{64 + (value >> 16)}.{(value >> 8) & 255}.{value & 255}"

    def _pod_name(self, service: int) -> str:
        with self.lock:
            value, self.next_pod = self.next_pod, self.next_pod + 1
        return f"{service_name(service)[1]}-{value:05d}"

    def create(self, workers: int = 8) -> None:
        for namespace in range(NAMESPACES):
            self.core.create_namespace({"metadata": {"name": f"ns-{namespace}"}})
            # (No controller-manager makes the namespace's default service account here.)
            self.core.create_namespaced_service_account(f"ns-{namespace}", {"metadata": {"name": "default"}})
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(self._create_service, range(self.services)))

    def _create_service(self, index: int) -> None:
        namespace, name = service_name(index)
        # Headless: envtest's service range is a /24 (254 cluster IPs), and meshwright does not
        # read a Service's cluster IP yet (docs/kubernetes.md): the mesh service is the same.
        self.core.create_namespaced_service(namespace, {"metadata": {"name": name}, "spec": {
            "clusterIP": "None", "selector": {"app": name}, "ports": [{"name": "http", "port": PORT, "targetPort": TARGET_PORT}]}})
        pods = []
        for position in range(self.per_service[index]):
            injected = position == 0 and index < self.proxies
            pods.append(self.start_pod(index, injected))
        self.endpoints[index] = pods
        self.discovery.create_namespaced_endpoint_slice(namespace, self._slice(index, pods, []))

    def start_pod(self, index: int, injected: bool = False) -> tuple[str, str]:
        """A pod of the service created and Ready, as the kubelet would report it: (name, ip)."""
        namespace, service = service_name(index)
        name, ip = self._pod_name(index), self._ip()
        labels = {"app": service, **({TLS_MODE_LABEL: "istio"} if injected else {})}
        self.core.create_namespaced_pod(namespace, {"metadata": {"name": name, "labels": labels}, "spec": {
            "containers": [{"name": "app", "image": "local.test/tools:1", "ports": [{"containerPort": TARGET_PORT}]}]}})
        self.core.patch_namespaced_pod_status(name, namespace, {"status": {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "conditions": [{"type": "Ready", "status": "True"}]}})
        return name, ip

    def _slice(self, index: int, ready: list[tuple[str, str]], terminating: list[tuple[str, str]]) -> dict:
        namespace, service = service_name(index)

        def endpoint(pod: str, ip: str, conditions: dict) -> dict:
            return {"addresses": [ip], "conditions": conditions, "targetRef": {"kind": "Pod", "namespace": namespace, "name": pod}}

        return {"metadata": {"name": f"{service}-slice", "labels": {"kubernetes.io/service-name": service}},
                "addressType": "IPv4", "ports": [{"name": "http", "port": TARGET_PORT, "protocol": "TCP"}],
                "endpoints": [endpoint(pod, ip, {"ready": True, "serving": True, "terminating": False}) for pod, ip in ready] +
                             [endpoint(pod, ip, {"ready": False, "serving": True, "terminating": True}) for pod, ip in terminating]}

    def _write_slice(self, index: int, ready, terminating) -> None:
        namespace, service = service_name(index)
        self.discovery.replace_namespaced_endpoint_slice(f"{service}-slice", namespace, self._slice(index, ready, terminating))

    def take_service(self, rng: random.Random) -> int:
        """A service no other change is working on (its slice is written by one change at a
        time) that has a pod without a sidecar."""
        while True:
            index = rng.randrange(self.services)
            with self.lock:
                if index not in self.busy and len(self.endpoints[index]) > (1 if index < self.proxies else 0):
                    self.busy.add(index)
                    return index

    def _injected(self, index: int, position: int) -> bool:
        return index < self.proxies and position == 0

    def replace_pod(self, index: int, rng: random.Random) -> list[tuple[str, str, bool, float]]:
        """One pod without a sidecar replaced, as a Deployment's rollout does; the two
        EndpointSlice changes as (cluster, address, present after, moment sent)."""
        namespace, service = service_name(index)
        cluster = f"outbound|{PORT}||{service}.{namespace}.svc.cluster.local"
        try:
            pods = self.endpoints[index]
            position = rng.choice([p for p in range(len(pods)) if not self._injected(index, p)])
            old = pods[position]
            rest = pods[:position] + pods[position + 1:]
            gone_at = time.monotonic()
            self._write_slice(index, rest, [old])
            self.core.delete_namespaced_pod(old[0], namespace, grace_period_seconds=0)
            new = self.start_pod(index)
            pods = rest[:position] + [new] + rest[position:]
            came_at = time.monotonic()
            self._write_slice(index, pods, [])
            self.endpoints[index] = pods
            return [(cluster, old[1], False, gone_at), (cluster, new[1], True, came_at)]
        finally:
            with self.lock:
                self.busy.discard(index)


def churn(cluster: Cluster, rate: float, seconds: float, workers: int = 16) -> tuple[list, int]:
    """rate pod replacements a second for seconds, by workers that each take the next one when
    its moment comes: their EndpointSlice changes, and how many started late (more than half a
    second: the API server or this process could not keep the rate)."""
    total, started = int(rate * seconds), time.monotonic()
    counter, lock, changes, late = iter(range(total)), threading.Lock(), [], [0]

    def work() -> None:
        while True:
            with lock:
                count = next(counter, None)
            if count is None:
                return
            wait = started + count / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            rng = random.Random(count)
            index = cluster.take_service(rng)
            made = cluster.replace_pod(index, rng)
            with lock:
                changes.extend(made)
                late[0] += wait < -0.5

    threads = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(changes, key=lambda change: change[3]), late[0]


# The control plane, as a user runs it.

class ControlPlane:
    def __init__(self, folder: str, kubeconfig: str, log_path: str):
        from tests.harness import free_port

        self.port, self.status_port = free_port(), free_port()
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "meshwright.cli", "serve", "--mesh", folder, "--kubeconfig", f"bench={kubeconfig}",
             "--listen", f"127.0.0.1:{self.port}", "--status-listen", f"127.0.0.1:{self.status_port}", "--plaintext-loopback"],
            env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src")), stdout=self.log, stderr=subprocess.STDOUT)

    def status(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.status_port}/status", timeout=30) as response:
            return json.load(response)

    def wait_for_proxies(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"meshwright serve exited ({self.process.returncode}): see {self.log.name}")
            try:
                if len(self.status()["proxies"]) >= count:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the control plane did not make {count} proxies in {timeout:.0f} s: see {self.log.name}")

    def memory_mb(self) -> tuple[float, float]:
        """(peak, current) resident memory."""
        with open(f"/proc/{self.process.pid}/status") as handle:
            fields = {line.split(":")[0]: int(line.split()[1]) for line in handle if line.startswith(("VmHWM:", "VmRSS:"))}
        return fields["VmHWM"] / 1024, fields["VmRSS"] / 1024

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.process.pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def percentile(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.0f}"


def run(args, work: str) -> list[str]:
    from tests.kubernetes.api_server import start_api_server, stop_api_server

    say("starting the API server")
    api_server = start_api_server()
    plane = clients = None
    try:
        cluster = Cluster(api_server, args.services, args.pods, args.proxies)
        began = time.monotonic()
        cluster.create()
        say(f"{args.services} services, {args.pods} pods, {args.services} EndpointSlices written in {time.monotonic() - began:.0f} s")
        folder = os.path.join(work, "mesh")
        os.mkdir(folder)
        with open(os.path.join(folder, "mesh.yaml"), "w") as handle:
            handle.write(MESH)
        began = time.monotonic()
        plane = ControlPlane(folder, api_server.kubeconfig, os.path.join(work, "serve.log"))
        plane.wait_for_proxies(args.proxies, timeout=600)
        first = time.monotonic() - began
        proxies = sorted(entry["proxy"] for entry in plane.status()["proxies"])
        clients = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--clients", str(plane.port)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        clients.stdin.write(" ".join(proxies) + f"\n{args.services}\n")
        clients.stdin.flush()
        assert clients.stdout.readline().strip() == "R", "the clients did not get every cluster's endpoints"
        connected = time.monotonic() - began
        say(f"the control plane made {len(proxies)} proxies in {first:.0f} s; every client had every endpoint after {connected:.0f} s")
        cpu_before, load_before = plane.cpu_seconds(), os.getloadavg()[0]
        began = time.monotonic()
        changes, late = churn(cluster, args.rate, args.seconds)
        churn_seconds = time.monotonic() - began
        say(f"{len(changes) // 2} pods replaced in {churn_seconds:.0f} s ({late} started late); collecting the ACKs")
        clients.stdin.write(json.dumps(changes) + "\n")
        clients.stdin.flush()
        latencies = json.loads(clients.stdout.readline())
        cpu = plane.cpu_seconds() - cpu_before
        peak, current = plane.memory_mb()
        load = os.getloadavg()[0]
    finally:
        if clients:
            clients.stdin.close()
            clients.wait(timeout=30)
        if plane:
            plane.stop()
        stop_api_server(api_server)
    gone = [value for (_, _, present, _), value in zip(changes, latencies) if not present and value is not None]
    came = [value for (_, _, present, _), value in zip(changes, latencies) if present and value is not None]
    lost = sum(1 for value in latencies if value is None)
    return [
        f"{'pods':>5} {'services':>8} {'proxies':>7} {'changes':>7} {'lost':>4} {'gone p50':>8} {'p99':>5} {'came p50':>8} {'p99':>5} "
        f"{'peak MB':>7} {'RSS MB':>6} {'CPU s':>6} {'load':>9}",
        f"{args.pods:>5} {args.services:>8} {len(proxies):>7} {len(changes) // 2:>7} {lost:>4} {percentile(gone, 0.5):>8} "
        f"{percentile(gone, 0.99):>5} {percentile(came, 0.5):>8} {percentile(came, 0.99):>5} {peak:>7.0f} {current:>6.0f} {cpu:>6.1f} "
        f"{load_before:>4.1f}-{load:<4.1f}",
        f"milliseconds from an EndpointSlice write to the last of {len(proxies)} proxies' ACK; {args.rate:g} pod replacements/s "
        f"for {args.seconds:g} s ({churn_seconds:.0f} s taken, {late} late); CPU s: the control plane's over the churn and its ACKs",
    ]


class EventFeed:
    """Watch events handed to a registry in this process (--cost), each object with a new resourceVersion."""

    def __init__(self, registry):
        self.registry, self.kinds, self.version = registry, {kind.name: kind for kind in registry._kinds}, 0

    def send(self, kind: str, event: str, obj: dict) -> None:
        self.version += 1
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.version)}}
        self.registry._apply_event(self.kinds[kind], {"type": event, "object": obj}, str(self.version))


def cost_pod(index: int, name: str, ip: str | None, injected: bool = False) -> dict:
    namespace, service = service_name(index)
    pod = {"metadata": {"name": name, "namespace": namespace, "labels": {"app": service, **({TLS_MODE_LABEL: "istio"} if injected else {})}},
           "spec": {"containers": [{"name": "app", "image": "local.test/tools:1", "ports": [{"containerPort": TARGET_PORT}]}]}}
    if ip:
        pod["status"] = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "conditions": [{"type": "Ready", "status": "True"}]}
    return pod


def cost_slice(index: int, ready: list, terminating: list) -> dict:
    namespace, service = service_name(index)
    endpoint = lambda pod, ip, ok: {"addresses": [ip], "conditions": {"ready": ok, "serving": True, "terminating": not ok},  # noqa: E731
                                    "targetRef": {"kind": "Pod", "namespace": namespace, "name": pod}}
    return {"metadata": {"name": f"{service}-slice", "namespace": namespace, "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": TARGET_PORT, "protocol": "TCP"}],
            "endpoints": [endpoint(pod, ip, True) for pod, ip in ready] + [endpoint(pod, ip, False) for pod, ip in terminating]}


def change_cost(args) -> tuple[float, float]:
    """(CPU seconds of the first publish, CPU milliseconds per pod replaced) on the control
    plane's side, in this process (see --cost)."""
    from kubernetes import client

    from meshwright.serve.kubernetes import KubernetesRegistry
    from meshwright.serve.plane import ControlPlane
    from meshwright.serve.registries import publisher
    from meshwright.serve.source import load_valid

    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "mesh.yaml"), "w") as handle:
            handle.write(MESH)
        mesh, problems = load_valid([folder])
    assert not problems, problems
    plane = ControlPlane(mesh, require_identity=False)
    registry = KubernetesRegistry("kubernetes/bench", client.Configuration())
    registry._publish = publisher(plane, registry.name)
    feed, addresses, names = EventFeed(registry), (f"10.{64 + (v >> 16)}.{(v >> 8) & 255}.{v & 255}" for v in range(1, 1 << 22)), iter(range(1 << 30))
    per_service = [args.pods // args.services + (1 if index < args.pods % args.services else 0) for index in range(args.services)]
    endpoints = {}
    for index in range(args.services):
        namespace, service = service_name(index)
        feed.send("Service", "ADDED", {"metadata": {"name": service, "namespace": namespace},
                                       "spec": {"clusterIP": "None", "selector": {"app": service}, "ports": [{"name": "http", "port": PORT, "targetPort": TARGET_PORT}]}})
        endpoints[index] = [(f"{service}-{next(names):05d}", next(addresses)) for dummy in range(per_service[index])]
        for position, (pod, ip) in enumerate(endpoints[index]):
            feed.send("Pod", "ADDED", cost_pod(index, pod, ip, injected=position == 0 and index < args.proxies))
        feed.send("EndpointSlice", "ADDED", cost_slice(index, endpoints[index], []))
    started = time.process_time()
    registry._publish_view()
    first = time.process_time() - started
    assert len(plane.estate.proxies) == args.proxies and plane.rejection is None, plane.rejection
    rng = random.Random(15)
    started = time.process_time()
    for dummy in range(args.cost):
        index = rng.randrange(args.services)
        pods = endpoints[index]
        position = rng.choice([p for p in range(len(pods)) if not (index < args.proxies and p == 0)] or [None])
        if position is None:
            continue
        (old, old_ip), rest = pods[position], pods[:position] + pods[position + 1:]
        new = (f"{service_name(index)[1]}-{next(names):05d}", next(addresses))
        feed.send("EndpointSlice", "MODIFIED", cost_slice(index, rest, [pods[position]]))
        feed.send("Pod", "DELETED", cost_pod(index, old, old_ip))
        feed.send("Pod", "ADDED", cost_pod(index, new[0], None))
        feed.send("Pod", "MODIFIED", cost_pod(index, *new))
        endpoints[index] = rest[:position] + [new] + rest[position:]
        feed.send("EndpointSlice", "MODIFIED", cost_slice(index, endpoints[index], []))
        registry._publish_view()
    per_change = (time.process_time() - started) / args.cost * 1000
    assert plane.rejection is None, plane.rejection
    return first, per_change


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=500)
    parser.add_argument("--pods", type=int, default=5000)
    parser.add_argument("--proxies", type=int, default=200, help="injected pods, one in each of the first services; the clients connect as them")
    parser.add_argument("--rate", type=float, default=50, help="pod replacements a second")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--quick", action="store_true", help="50 services, 500 pods, 20 proxies, 10 changes/s for 10 s")
    parser.add_argument("--clients", type=int, help=argparse.SUPPRESS)  # the clients' process (internal)
    parser.add_argument("--cost", type=int, metavar="N", help="replace N pods in this process and print the CPU ms per change (no API server, no streams)")
    args = parser.parse_args(argv)
    if args.clients:
        return clients_main(args.clients)
    if args.cost:
        first, per_change = change_cost(args)
        print(f"{'pods':>5} {'changes':>7} {'first publish CPU s':>19} {'CPU ms per change':>17}")
        print(f"{args.pods:>5} {args.cost:>7} {first:>19.2f} {per_change:>17.1f}")
        print("the control plane's side alone (the registry's translation and publish of a pod replacement's five events, the plane's apply)")
        return 0
    if args.quick:
        args.services, args.pods, args.proxies, args.rate, args.seconds = 50, 500, 20, 10, 10
    if args.proxies > args.services:
        parser.error("--proxies: at most one injected pod per service (--services)")
    with tempfile.TemporaryDirectory() as work:
        for line in run(args, work):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
