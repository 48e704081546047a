"""Time `meshwright validate` on a generated VM estate (issue #11, item 2: check each distinct
resource once). Every service is a ServiceEntry with 3 WorkloadEntries (3 VM proxies), two
subsets, and one VirtualService per ten services. Prints wall time per estate size.

    python bench/check_once.py 100 300 [--envoy PATH]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKLOADS_PER_SERVICE = 3


def service_yaml(index: int) -> str:
    name = f"svc-{index}"
    documents = [f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{name}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: {name}}}}}
""", f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: default}}
spec:
  host: {name}.default.svc.cluster.local
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"""]
    for workload in range(WORKLOADS_PER_SERVICE):
        version = "v1" if workload % 2 == 0 else "v2"
        documents.append(f"""\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}-{workload}, namespace: default}}
spec: {{address: 10.{index // 250}.{index % 250}.{workload + 1}, labels: {{app: {name}, version: {version}}}}}
""")
    if index % 10 == 0:
        documents.append(f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{name}.default.svc.cluster.local]
  http:
  - route:
    - {{destination: {{host: {name}.default.svc.cluster.local, subset: v1}}, weight: 90}}
    - {{destination: {{host: {name}.default.svc.cluster.local, subset: v2}}, weight: 10}}
""")
    return "---\n".join(documents)


def write_estate(folder: Path, services: int) -> Path:
    """One file per service, as an estate kept in git would be."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(services):
        (folder / f"svc-{index:05d}.yaml").write_text(service_yaml(index))
    return folder


def time_validate(folder: Path, envoy: str) -> tuple[float, int]:
    start = time.perf_counter()
    result = subprocess.run([str(Path(sys.executable).with_name("meshwright")), "validate", "--envoy", envoy, str(folder)], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"validate failed on {folder}:\n{result.stderr[-2000:]}")
    return elapsed, result.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[100, 300])
    parser.add_argument("--envoy", default="none")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="meshwright-bench-") as scratch:
        print(f"{'services':>8} {'proxies':>8} {'validate s':>11}")
        for services in args.sizes:
            folder = write_estate(Path(scratch) / str(services), services)
            elapsed, _ = time_validate(folder, args.envoy)
            print(f"{services:>8} {services * WORKLOADS_PER_SERVICE:>8} {elapsed:>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
