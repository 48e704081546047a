"""The user's path on a big estate: `meshwright validate` and `meshwright render`, as processes.

For each size, bench/estate.py writes the estate of issue #11 (N services, 3 VM proxies each,
half of them Sidecar-scoped to 10 services, a gateway, mTLS STRICT, a VirtualService per ten
services) into a scratch folder; then, each a subprocess timed from start to exit, with its
peak resident memory (wait4's ru_maxrss):
- floor:    parsing the same files with PyYAML's C loader alone (yaml.load_all, CSafeLoader),
            the least any validator must spend reading them;
- validate: `meshwright validate --envoy none DIR`;
- render:   `meshwright render --envoy none --mesh DIR --proxy svc-00000-2.ns-0 --out TMP`
            (a proxy that sees every service; validation included);
- envoy:    with --envoy, also `meshwright validate DIR` with Envoy's `--mode validate`.
A run that passes --timeout is stopped and shows "timeout"; one that fails shows "exit N".
"peak MB" is the larger of validate's and render's. "ms/unit" is validate's milliseconds per
(services + proxies); "growth" is that over the previous size's: about 1 when validate grows
linearly, about the ratio of the sizes when it grows with proxies x services.

Targets (issue #11, 10,000 services, 2-core machine), PASS/MISS on rows of 10,000 services
or more, "-" on smaller ones: validate <= 15 s, peak <= 2 GB, validate <= 10x the floor;
render <= validate + 1 s.

Not bench/validate.py: bench/ is on sys.path when its scripts and tests run, and that name would
hide the `validate` package that Envoy's generated protos import.

Usage: python bench/validate_estate.py [--sizes 100 1000 [10000]] [--timeout S] [--envoy] [--strict]
(--strict: exit 1 when a target is missed, a timeout included).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from estate import WORKLOADS_PER_SERVICE, proxy_names, write_estate  # noqa: E402

SIZES = (100, 1_000)
TARGET_SIZE = 10_000
TARGET_VALIDATE_SECONDS = 15.0
TARGET_PEAK_MB = 2_048
TARGET_FLOOR_RATIO = 10.0
TARGET_RENDER_MARGIN = 1.0
RENDERED_PROXY = "svc-00000-2.ns-0"  # the second workload of the first service: not scoped, sees everything
FLOOR_SCRIPT = (
    "import os, sys, yaml\n"
    "for name in sorted(os.listdir(sys.argv[1])):\n"
    "    with open(os.path.join(sys.argv[1], name), encoding='utf-8') as handle:\n"
    "        list(yaml.load_all(handle, Loader=yaml.CSafeLoader))\n"
)


class Run:
    """One finished (or stopped) subprocess: seconds, peak MB, and how it ended."""

    def __init__(self, seconds: float, peak_mb: float, outcome: str, tail: str = ""):
        self.seconds, self.peak_mb, self.outcome, self.tail = seconds, peak_mb, outcome, tail

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    def cell(self) -> str:
        return f"{self.seconds:.2f}" if self.ok else self.outcome


def run_measured(command: list[str], timeout: float) -> Run:
    """Runs command to its end, or stops its process group at timeout; wait4 gives its peak memory."""
    with tempfile.TemporaryFile() as output:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        status, usage = wait_until(process.pid, start + timeout)
        seconds = time.perf_counter() - start
        if status is None:
            os.killpg(process.pid, signal.SIGKILL)
            _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        output.seek(0)
        tail = output.read().decode(errors="replace")[-600:]
    peak_mb = usage.ru_maxrss / 1024
    if seconds >= timeout:
        return Run(seconds, peak_mb, "timeout", tail)
    return Run(seconds, peak_mb, "ok" if process.returncode == 0 else f"exit {process.returncode}", tail)


def wait_until(pid: int, deadline: float):
    """(wait status, rusage) of pid once it exits, or (None, None) at the deadline."""
    while time.perf_counter() < deadline:
        waited, status, usage = os.wait4(pid, os.WNOHANG)
        if waited:
            return status, usage
        time.sleep(0.02)
    return None, None


def meshwright_command(*arguments: str) -> list[str]:
    return [os.path.join(os.path.dirname(sys.executable), "meshwright"), *arguments]


def measure(services: int, timeout: float, with_envoy: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="meshwright-bench-validate-") as scratch:
        estate, out = os.path.join(scratch, "estate"), os.path.join(scratch, "out")
        documents, size = write_estate(services, estate)
        row = {"services": services, "proxies": len(proxy_names(services)), "documents": documents, "bytes": size}
        row["floor"] = run_measured([sys.executable, "-c", FLOOR_SCRIPT, estate], timeout)
        row["validate"] = run_measured(meshwright_command("validate", "--envoy", "none", estate), timeout)
        row["render"] = run_measured(meshwright_command("render", "--envoy", "none", "--mesh", estate, "--proxy", RENDERED_PROXY, "--out", out), timeout)
        if with_envoy:
            row["envoy"] = run_measured(meshwright_command("validate", estate), timeout)
    return row


def per_unit(row: dict) -> float | None:
    """validate's seconds per (services + proxies), None when it did not finish."""
    return row["validate"].seconds / (row["services"] + row["proxies"]) if row["validate"].ok else None


def growth(row: dict, previous: dict | None) -> str:
    if previous is None or per_unit(row) is None or per_unit(previous) is None:
        return "-"
    return f"{per_unit(row) / per_unit(previous):.2f}"


def peak_mb(row: dict) -> float:
    return max(row[name].peak_mb for name in ("validate", "render"))


def ratio(row: dict) -> str:
    return f"{row['validate'].seconds / row['floor'].seconds:.1f}" if row["validate"].ok and row["floor"].ok else "-"


def verdicts(row: dict) -> tuple[str, str, str, str]:
    """PASS/MISS for validate's time, peak memory, ratio to the floor, and render's time; a run that did not finish misses."""
    if row["services"] < TARGET_SIZE:
        return "-", "-", "-", "-"
    validate, render, floor = row["validate"], row["render"], row["floor"]
    passes = (
        validate.ok and validate.seconds <= TARGET_VALIDATE_SECONDS,
        validate.ok and render.ok and peak_mb(row) <= TARGET_PEAK_MB,
        validate.ok and floor.ok and validate.seconds <= TARGET_FLOOR_RATIO * floor.seconds,
        validate.ok and render.ok and render.seconds <= validate.seconds + TARGET_RENDER_MARGIN,
    )
    return tuple("PASS" if ok else "MISS" for ok in passes)


COLUMNS = [
    # (header, width, format of a row and the row before it)
    ("services", 8, lambda r, p: f"{r['services']:,}"),
    ("proxies", 7, lambda r, p: f"{r['proxies']:,}"),
    ("documents", 9, lambda r, p: f"{r['documents']:,}"),
    ("MB", 5, lambda r, p: f"{r['bytes'] / 1e6:.1f}"),
    ("floor s", 7, lambda r, p: r["floor"].cell()),
    ("validate s", 10, lambda r, p: r["validate"].cell()),
    ("val/floor", 9, lambda r, p: ratio(r)),
    ("render s", 8, lambda r, p: r["render"].cell()),
    ("peak MB", 7, lambda r, p: f"{peak_mb(r):.0f}"),
    ("ms/unit", 7, lambda r, p: f"{per_unit(r) * 1000:.2f}" if per_unit(r) is not None else "-"),
    ("growth", 6, lambda r, p: growth(r, p)),
    ("<=15s", 5, lambda r, p: verdicts(r)[0]),
    ("<=2GB", 5, lambda r, p: verdicts(r)[1]),
    ("<=10x", 5, lambda r, p: verdicts(r)[2]),
    ("render<=v+1", 11, lambda r, p: verdicts(r)[3]),
]
ENVOY_COLUMN = ("envoy s", 8, lambda r, p: r["envoy"].cell())


def table_line(cells: list[str], columns: list) -> str:
    return "  ".join(cell.rjust(width) for cell, (_, width, _) in zip(cells, columns))


def failures(row: dict) -> list[str]:
    """What a failed run printed last, so a broken estate or command is not mistaken for a slow one."""
    return [f"  {name} {row[name].outcome}: {row[name].tail.strip()[-300:]}" for name in ("floor", "validate", "render", "envoy")
            if name in row and not row[name].ok and row[name].outcome != "timeout"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="numbers of services (default: 100 1000; add 10000 for the targets)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds each command may run before it is stopped (default 600)")
    parser.add_argument("--envoy", action="store_true", help="also time `meshwright validate` with Envoy's --mode validate")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    columns = COLUMNS[:9] + [ENVOY_COLUMN] + COLUMNS[9:] if args.envoy else COLUMNS
    print(f"the estate of bench/estate.py ({WORKLOADS_PER_SERVICE} VM proxies per service, a gateway); each command a process, "
          f"--timeout {args.timeout:g} s; load average {os.getloadavg()[0]:.2f}")
    print(table_line([header for header, _, _ in columns], columns))
    missed, previous = False, None
    for services in args.sizes:
        row = measure(services, args.timeout, args.envoy)
        print(table_line([cell(row, previous) for _, _, cell in columns], columns), flush=True)
        for line in failures(row):
            print(line)
        missed = missed or "MISS" in verdicts(row)
        previous = row
    print(f"targets at {TARGET_SIZE:,} services: validate <= {TARGET_VALIDATE_SECONDS:g} s, peak <= {TARGET_PEAK_MB / 1024:g} GB, "
          f"<= {TARGET_FLOOR_RATIO:g}x the floor; render <= validate + {TARGET_RENDER_MARGIN:g} s; load average now {os.getloadavg()[0]:.2f}")
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
