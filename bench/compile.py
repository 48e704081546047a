"""Compile benchmark: how long one proxy's Envoy config takes to compile in large meshes.

Synthetic meshes of 100, 1,000 and 10,000 services (3 endpoints and 2 subsets each, one
VirtualService per 10 services, a DestinationRule per service and a mesh-wide default one)
are built in memory, as Resources with a Source: no YAML is parsed in the timed part.

For each mesh the table shows, each the best of a few runs (time.perf_counter):
- validate: validate_resources (shape, references, semantics) of the whole mesh;
- build:    Mesh.build (the registry and the indexes the compiler reads);
- full:     compile_proxy for a proxy that sees every service, the size of its output and
            the time json.dumps takes to serialize that output (the floor: no compiler can
            hand over its output faster than it can be written once), and compile/floor;
- gc:       a full garbage collection right after a full-view compile, its output alive.
            compile_proxy pauses the cyclic collector while it builds (the output holds no
            cycles); a caller that keeps the output meets this cost later, when the
            collector next walks everything alive;
- scoped:   compile_proxy for a proxy whose Sidecar imports 10 services (egress hosts);
- digest:   the first hex digits of the SHA-256 of both outputs; the same code and mesh
            always give the same digest (the compiler is deterministic).

Targets (10,000 services, on a 2-core machine): the full view in under 3 s and within 5x of
the floor; the scoped proxy in under 50 ms. Each gets a PASS/MISS column on the rows of at
least 10,000 services; smaller meshes show "-" there.

Usage: python bench/compile.py [--sizes 100 1000 10000] [--repeats N] [--strict]
(--strict: exit 1 when a target is missed).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import sys
import time

from meshwright.check.pipeline import validate_resources
from meshwright.compile.build import ProxyConfig, compile_proxy
from meshwright.compile.proxy import find_proxy
from meshwright.mesh import Mesh
from meshwright.model.load import LoadResult
from meshwright.model.resource import Resource, Source

SIZES = (100, 1_000, 10_000)
NAMESPACES = 10
SCOPED_SERVICES = 10
TARGET_SIZE = 10_000
TARGET_FULL_SECONDS = 3.0
TARGET_RATIO = 5.0
TARGET_SCOPED_SECONDS = 0.050
FULL_PROXY, SCOPED_PROXY = "client.ns-0", "scoped.ns-0"


def resource(kind: str, name: str, namespace: str, spec: dict, api_version: str = "networking.istio.io/v1") -> Resource:
    """A Resource as the loader would make it, with a made-up source line per resource."""
    metadata = {"name": name, "namespace": namespace}
    document = {"apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": spec}
    source = Source(f"synthetic/{kind}.yaml", 1)
    return Resource(api_version, kind, name, namespace, metadata, spec, source, document=document)


def service_name(index: int) -> tuple[str, str]:
    """(name, namespace) of the index-th service; services are spread over the namespaces."""
    return f"svc-{index:05d}", f"ns-{index % NAMESPACES}"


def fqdn(index: int) -> str:
    name, namespace = service_name(index)
    return f"{name}.{namespace}.svc.cluster.local"


def service_resources(index: int) -> list[Resource]:
    """A ServiceEntry with 3 endpoints (2 at v1, 1 at v2, over two zones), its DestinationRule
    with subsets v1 and v2, and for every 10th service a VirtualService."""
    name, namespace = service_name(index)
    host = fqdn(index)
    endpoints = [
        {"address": f"10.{index // 250 % 256}.{index % 250}.{n + 1}", "labels": {"app": name, "version": version}, "locality": f"region-a/zone-{n % 2}"}
        for n, version in enumerate(("v1", "v1", "v2"))
    ]
    entry = {
        "hosts": [host],
        "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}],
        "location": "MESH_INTERNAL",
        "resolution": "STATIC",
        "endpoints": endpoints,
    }
    rule = {
        "host": host,
        "trafficPolicy": {
            "connectionPool": {"tcp": {"maxConnections": 100}, "http": {"http1MaxPendingRequests": 50}},
            "outlierDetection": {"consecutive5xxErrors": 5, "interval": "10s", "baseEjectionTime": "30s"},
        },
        "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}, "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}},
        ],
    }
    out = [resource("ServiceEntry", name, namespace, entry), resource("DestinationRule", name, namespace, rule)]
    if index % 10 == 0:
        routes = {
            "hosts": [host],
            "http": [
                {"match": [{"headers": {"end-user": {"exact": "tester"}}}], "route": [{"destination": {"host": host, "subset": "v2"}}]},
                {
                    "route": [{"destination": {"host": host, "subset": "v1"}, "weight": 90}, {"destination": {"host": host, "subset": "v2"}, "weight": 10}],
                    "timeout": "5s",
                    "retries": {"attempts": 3, "perTryTimeout": "2s"},
                },
            ],
        }
        out.append(resource("VirtualService", name, namespace, routes))
    return out


def synthetic_mesh(count: int) -> list[Resource]:
    """count services, plus two client workloads in ns-0: "client" sees every service,
    "scoped" has a Sidecar whose egress hosts name 10 services spread over the mesh."""
    resources = [resource("MeshConfig", "mesh", "istio-system", {"trustDomain": "cluster.local"}, "meshwright.io/v1alpha1")]
    for index in range(count):
        resources += service_resources(index)
    # A mesh-wide default, as many meshes have; every service's own rule takes precedence.
    resources.append(resource("DestinationRule", "default", "istio-system", {"host": "*.svc.cluster.local", "trafficPolicy": {"loadBalancer": {"simple": "LEAST_REQUEST"}}}))
    for name in ("client", "scoped"):
        resources.append(resource("WorkloadEntry", name, "ns-0", {"address": "127.0.0.1", "labels": {"app": name}, "serviceAccount": name}))
    step = count // SCOPED_SERVICES
    egress_hosts = [f"{service_name(i * step)[1]}/{fqdn(i * step)}" for i in range(SCOPED_SERVICES)]
    resources.append(resource("Sidecar", "scoped", "ns-0", {"workloadSelector": {"labels": {"app": "scoped"}}, "egress": [{"hosts": egress_hosts}]}))
    return resources


def best_of(repeats: int, run):
    """(best time in seconds, result of the last run)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def collection_after(run) -> float:
    """Seconds of a full garbage collection right after run(), while its result is alive."""
    gc.collect()
    result = run()
    start = time.perf_counter()
    gc.collect()
    seconds = time.perf_counter() - start
    del result
    return seconds


def as_document(config: ProxyConfig) -> dict:
    return {"listeners": config.listeners, "routes": config.routes, "clusters": config.clusters, "endpoints": config.endpoints}


def serialize(config: ProxyConfig) -> str:
    """The floor: the standard library's C encoder, keys sorted as delivery sorts them."""
    return json.dumps(as_document(config), sort_keys=True)


def measure(count: int, repeats: int) -> dict:
    resources = synthetic_mesh(count)
    validate_seconds, (mesh, problems) = best_of(repeats, lambda: validate_resources(LoadResult(resources=list(resources))))
    if problems:
        raise SystemExit("the synthetic mesh does not validate:\n" + "\n".join(str(p) for p in problems[:10]))
    build_seconds, mesh = best_of(repeats, lambda: Mesh.build(resources))
    full, scoped = find_proxy(mesh, FULL_PROXY), find_proxy(mesh, SCOPED_PROXY)
    # First, while only the mesh is alive: what the collector spends on one compile's output.
    gc_seconds = min(collection_after(lambda: compile_proxy(mesh, full)) for _ in range(repeats))
    full_seconds, full_config = best_of(repeats, lambda: compile_proxy(mesh, full))
    dumps_seconds, full_text = best_of(repeats, lambda: serialize(full_config))
    scoped_seconds, scoped_config = best_of(max(repeats, 5), lambda: compile_proxy(mesh, scoped))
    if serialize(compile_proxy(mesh, full)) != full_text:
        raise SystemExit(f"{count} services: two compiles of {FULL_PROXY} differ: the compiler is not deterministic")
    digest = hashlib.sha256((full_text + "\n" + serialize(scoped_config)).encode()).hexdigest()
    return {
        "count": count,
        "resources": len(resources),
        "validate": validate_seconds,
        "build": build_seconds,
        "full": full_seconds,
        "clusters": len(full_config.clusters),
        "bytes": len(full_text.encode()),
        "dumps": dumps_seconds,
        "gc": gc_seconds,
        "scoped": scoped_seconds,
        "scoped_bytes": len(serialize(scoped_config).encode()),
        "digest": digest[:12],
    }


def verdicts(row: dict) -> tuple[str, str, str]:
    """PASS/MISS for the full-view time, the ratio to the floor and the scoped time."""
    if row["count"] < TARGET_SIZE:
        return "-", "-", "-"
    passes = (row["full"] < TARGET_FULL_SECONDS, row["full"] / row["dumps"] <= TARGET_RATIO, row["scoped"] < TARGET_SCOPED_SECONDS)
    return tuple("PASS" if ok else "MISS" for ok in passes)


COLUMNS = [
    # (header, width, format of a row)
    ("services", 8, lambda r: f"{r['count']:,}"),
    ("resources", 9, lambda r: f"{r['resources']:,}"),
    ("validate s", 10, lambda r: f"{r['validate']:.3f}"),
    ("build s", 7, lambda r: f"{r['build']:.3f}"),
    ("full s", 7, lambda r: f"{r['full']:.3f}"),
    ("clusters", 8, lambda r: f"{r['clusters']:,}"),
    ("full MB", 7, lambda r: f"{r['bytes'] / 1e6:.2f}"),
    ("dumps s", 7, lambda r: f"{r['dumps']:.3f}"),
    ("ratio", 5, lambda r: f"{r['full'] / r['dumps']:.1f}"),
    ("gc s", 5, lambda r: f"{r['gc']:.3f}"),
    ("scoped ms", 9, lambda r: f"{r['scoped'] * 1000:.1f}"),
    ("scoped KB", 9, lambda r: f"{r['scoped_bytes'] / 1e3:.1f}"),
    ("<3s", 4, lambda r: verdicts(r)[0]),
    ("<=5x", 4, lambda r: verdicts(r)[1]),
    ("<50ms", 5, lambda r: verdicts(r)[2]),
    ("digest", 12, lambda r: r["digest"]),
]


def table_line(cells: list[str]) -> str:
    return "  ".join(cell.rjust(width) for cell, (_, width, _) in zip(cells, COLUMNS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="numbers of services (default: 100 1000 10000)")
    parser.add_argument("--repeats", type=int, help="runs per measurement, the best counts (default: 5, 3 from 10,000 services)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    print(f"compile_proxy of {FULL_PROXY} (every service) and {SCOPED_PROXY} (Sidecar: {SCOPED_SERVICES} services); best of N runs")
    print(table_line([header for header, _, _ in COLUMNS]))
    missed = False
    for count in args.sizes:
        repeats = args.repeats or (3 if count >= TARGET_SIZE else 5)
        row = measure(count, repeats)
        print(table_line([cell(row) for _, _, cell in COLUMNS]), flush=True)
        missed = missed or "MISS" in verdicts(row)
    print(f"targets at {TARGET_SIZE:,} services: full view < {TARGET_FULL_SECONDS:g} s and <= {TARGET_RATIO:g}x json.dumps; scoped < {TARGET_SCOPED_SECONDS * 1000:g} ms")
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
