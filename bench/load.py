"""Loading a 10,000-service estate: about 50,000 documents and 25 MB of YAML, as files.

Writes the estate (bench/compile.py's synthetic mesh, with a WorkloadEntry and a Sidecar per
service, as the YAML a user writes) into a scratch folder, one file per namespace, and times
`load_paths` on it, with the peak memory of this process. `--validate` also times the whole
`meshwright validate` (in a subprocess, as a user runs it).

    .venv/bin/python bench/load.py [--services N] [--validate]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compile import service_name, synthetic_mesh  # noqa: E402

from meshwright.model.load import load_paths  # noqa: E402


def estate_documents(services: int) -> dict[str, list[dict]]:
    """file name -> documents: the synthetic mesh plus, per service, two WorkloadEntries (v1,
    v2) and a Sidecar that scopes them to the service (five documents per service); every
    document has the labels and annotations estates put on them."""
    files: dict[str, list[dict]] = {}
    for res in synthetic_mesh(services):
        files.setdefault(f"{res.namespace}.yaml", []).append(res.document)
    for index in range(services):
        name, namespace = service_name(index)
        files[f"{namespace}.yaml"] += [
            {"apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry", "metadata": {"name": f"{name}-{version}", "namespace": namespace},
             "spec": {"address": f"10.{index // 250 % 256}.{index % 250}.{n + 1}", "labels": {"app": name, "version": version},
                      "ports": {"http": 8080}, "locality": f"region-a/zone-{n}", "serviceAccount": name}}
            for n, version in enumerate(("v1", "v2"))
        ] + [
            {"apiVersion": "networking.istio.io/v1", "kind": "Sidecar", "metadata": {"name": name, "namespace": namespace},
             "spec": {"workloadSelector": {"labels": {"app": name}}, "egress": [{"hosts": [f"./{name}.{namespace}.svc.cluster.local", "istio-system/*"]}]}},
        ]
    for documents in files.values():
        for document in documents:
            name = document["metadata"]["name"]
            document["metadata"]["labels"] = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "estate"}
            document["metadata"]["annotations"] = {"owner": f"team-{len(name) % 7}@example.com"}
    return files


def write_estate(services: int, folder: str) -> tuple[int, int]:
    """(documents, bytes) written."""
    documents = size = 0
    for name, docs in sorted(estate_documents(services).items()):
        text = yaml.dump_all(docs, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False)
        with open(os.path.join(folder, name), "w", encoding="utf-8") as handle:
            handle.write(text)
        documents += len(docs)
        size += len(text.encode())
    return documents, size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--validate", action="store_true", help="also time `meshwright validate --envoy none`")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="meshwright-bench-load-") as folder:
        documents, size = write_estate(args.services, folder)
        start, cpu_start = time.perf_counter(), time.process_time()
        loaded = load_paths([folder])
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{args.services} services: {documents} documents, {size / 1e6:.1f} MB: load {seconds:.2f} s ({cpu:.2f} s CPU), "
              f"peak {peak:.0f} MB, {len(loaded.resources)} resources, {len(loaded.problems)} problems")
        if args.validate:
            start = time.perf_counter()
            meshwright = os.path.join(os.path.dirname(sys.executable), "meshwright")
            result = subprocess.run([meshwright, "validate", "--envoy", "none", folder], capture_output=True, text=True)
            print(f"meshwright validate: exit {result.returncode} in {time.perf_counter() - start:.2f} s: {result.stdout.strip() or result.stderr[-300:]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
