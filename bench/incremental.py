"""Incremental recompile on a big estate: one WorkloadEntry's address changed, through apply.

The control plane's path, in one process. For each size, the estate of issue #11
(bench/estate.py: N services, 3 VM proxies each, half of them Sidecar-scoped to 10 services,
a gateway) is read from /tmp/est/N when it is there (never written to) or written into a
scratch folder; then, each timed with time.perf_counter:
- load:     load_paths of the folder;
- validate: validate_mesh (the mesh built, every class of proxies compiled and checked);
            with --skip-validation, Mesh.build alone (the estates are valid; validation of
            10,000 services still takes minutes), shown as "skipped";
- estate:   compile_estate (every proxy's config, each shared resource hashed once), then
            gc.freeze() as a control plane keeping the estate does (docs/architecture.md);
- change:   apply of a WorkloadEntry whose address changed, on the estate the previous
            change left, --changes times over workloads spread through the estate: the
            median and the slowest. "proxies" is how many proxies the median change
            reports, "resources" how many (proxy, resource) pairs, "kinds" which kinds of
            resource any change reported: the target wants endpoints only;
- arrive:   apply of a new WorkloadEntry beside an existing one (a pod or task that comes:
            the services selecting it gain its endpoint, its proxy joins its class), the
            median of --changes; leave: apply of its removal, the median;
- edit:     with --edit, apply of a VirtualService's new weights (the full path: validate
            and compile everything again, compared class by class), once.
"peak MB" is the process's peak resident memory so far (getrusage).

Target (issue #11, 10,000 services): a WorkloadEntry's address change in <= 100 ms, and
only endpoints reported; PASS/MISS on rows of 10,000 services or more, "-" on smaller ones.

Usage: python bench/incremental.py [--sizes 1000 10000] [--changes N] [--edit] [--skip-validation] [--strict]
(--strict: exit 1 when the target is missed).
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import resource
import statistics
import sys
import tempfile
import time

from meshwright.check.incremental import apply
from meshwright.check.pipeline import validate_mesh
from meshwright.compile.incremental import compile_estate
from meshwright.mesh import Mesh
from meshwright.model.load import load_paths

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from estate import proxy_names, spread, workload_name, write_estate  # noqa: E402
from compile import service_name  # noqa: E402

SIZES = (1_000, 10_000)
READY_MADE = "/tmp/est/{}"
TARGET_SIZE = 10_000
TARGET_CHANGE_SECONDS = 0.100
CHANGES = 7


def timed(call):
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def estate_folder(services: int, scratch: str) -> str:
    """The ready-made estate of that size when it has the expected proxies, else a new one."""
    ready = READY_MADE.format(services)
    if os.path.isdir(ready):
        return ready
    folder = os.path.join(scratch, "estate")
    write_estate(services, folder)
    return folder


def address_change(mesh, index: int, replica: int, number: int) -> dict:
    name, namespace = workload_name(index, replica), service_name(index)[1]
    document = copy.deepcopy(mesh.find("WorkloadEntry", namespace, name).document)
    document["spec"]["address"] = f"10.250.{number // 250}.{number % 250 + 1}"
    return document


def arrival(mesh, index: int, number: int) -> dict:
    """A new WorkloadEntry beside an existing v1 one (another pod of its deployment)."""
    document = address_change(mesh, index, 0, number)
    document["metadata"]["name"] += f"-new-{number}"
    document["spec"]["address"] = f"10.251.{number // 250}.{number % 250 + 1}"
    return document


def weight_edit(mesh) -> dict:
    virtual_service = next(vs for vs in mesh.of_kind("VirtualService") if vs.namespace != "istio-system")
    document = copy.deepcopy(virtual_service.document)
    document["spec"]["http"][1]["route"][0]["weight"], document["spec"]["http"][1]["route"][1]["weight"] = 80, 20
    return document


def measure(services: int, changes: int, with_edit: bool, skip_validation: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="meshwright-bench-incremental-") as scratch:
        folder = estate_folder(services, scratch)
        row = {"services": services, "proxies": len(proxy_names(services)), "folder": folder}
        loaded, row["load"] = timed(lambda: load_paths([folder]))
        if skip_validation:
            mesh, row["validate"] = Mesh.build(loaded.resources), None
        else:
            (mesh, problems), row["validate"] = timed(lambda: validate_mesh(loaded))
            if mesh is None:
                raise SystemExit(f"{folder} does not validate: {problems[0]}")
    estate, row["estate"] = timed(lambda: compile_estate(mesh))
    # What a control plane does with an estate it keeps: its objects leave the cyclic
    # collector's generations, whose full passes would otherwise walk them all (seconds at
    # 10,000 services) at whatever moment allocations trigger one, a change included.
    gc.freeze()
    runs, kinds = [], set()
    for number, index in enumerate(spread(services, changes)):
        document = address_change(estate.mesh, index, number % 3, number)
        (estate, reported), seconds = timed(lambda: apply(estate, document))
        kinds.update(kind for diff in reported.values() for kind in diff)
        runs.append((seconds, len(reported), sum(len(names) for diff in reported.values() for names in diff.values())))
    arrivals, departures = [], []
    for number, index in enumerate(spread(services, changes)):
        document = arrival(estate.mesh, index, number)
        (estate, _), seconds = timed(lambda: apply(estate, document))
        arrivals.append(seconds)
        (estate, _), seconds = timed(lambda: apply(estate, document, removed=True))
        departures.append(seconds)
    row.update(arrive=statistics.median(arrivals), leave=statistics.median(departures))
    median = sorted(runs)[len(runs) // 2]
    row.update(change=statistics.median(s for s, _, _ in runs), slowest=max(s for s, _, _ in runs), reported=median[1],
               resources=median[2], kinds=",".join(sorted(kinds)) or "none")
    if with_edit:
        _, row["edit"] = timed(lambda: apply(estate, weight_edit(estate.mesh)))
    row["peak"] = peak_mb()
    return row


def verdict(row: dict) -> str:
    if row["services"] < TARGET_SIZE:
        return "-"
    return "PASS" if row["change"] <= TARGET_CHANGE_SECONDS and row["kinds"] == "endpoints" else "MISS"


COLUMNS = [
    ("services", 8, lambda r: f"{r['services']:,}"),
    ("proxies", 7, lambda r: f"{r['proxies']:,}"),
    ("load s", 6, lambda r: f"{r['load']:.2f}"),
    ("validate s", 10, lambda r: f"{r['validate']:.2f}" if r["validate"] is not None else "skipped"),
    ("estate s", 8, lambda r: f"{r['estate']:.2f}"),
    ("change ms", 9, lambda r: f"{r['change'] * 1000:.1f}"),
    ("slowest ms", 10, lambda r: f"{r['slowest'] * 1000:.1f}"),
    ("proxies", 7, lambda r: f"{r['reported']:,}"),
    ("resources", 9, lambda r: f"{r['resources']:,}"),
    ("kinds", 9, lambda r: r["kinds"]),
    ("arrive ms", 9, lambda r: f"{r['arrive'] * 1000:.1f}"),
    ("leave ms", 8, lambda r: f"{r['leave'] * 1000:.1f}"),
    ("edit s", 6, lambda r: f"{r['edit']:.2f}" if "edit" in r else "-"),
    ("peak MB", 7, lambda r: f"{r['peak']:.0f}"),
    ("<=100ms", 7, verdict),
]


def table_line(cells: list[str]) -> str:
    return "  ".join(cell.rjust(width) for cell, (_, width, _) in zip(cells, COLUMNS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="numbers of services (default: 1000 10000)")
    parser.add_argument("--changes", type=int, default=CHANGES, help=f"address changes timed per size (default {CHANGES})")
    parser.add_argument("--edit", action="store_true", help="also time a VirtualService edit (the full path: minutes at 10,000)")
    parser.add_argument("--skip-validation", action="store_true",
                        help="build the mesh without validating it (Mesh.build): the estate is known to be valid, and validation of 10,000 services takes minutes")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args(argv)
    print(f"the estate of bench/estate.py, in one process; a WorkloadEntry address change through apply, the median of "
          f"{args.changes}; load average {os.getloadavg()[0]:.2f}")
    print(table_line([header for header, _, _ in COLUMNS]))
    missed = False
    for services in args.sizes:
        row = measure(services, args.changes, args.edit, args.skip_validation)
        print(table_line([cell(row) for _, _, cell in COLUMNS]), f"  ({row['folder']})", flush=True)
        missed = missed or verdict(row) == "MISS"
    print(f"target at {TARGET_SIZE:,} services: a WorkloadEntry address change applied in <= {TARGET_CHANGE_SECONDS * 1000:g} ms, "
          f"endpoints only reported; load average now {os.getloadavg()[0]:.2f}")
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
