"""What deploy's mesh_render does on a big estate: render every proxy, its files and its
validation bootstrap, one run (deliver.bundle.bundle_proxy with the run's RenderCache, as
bundle_proxies calls it), in a subprocess per size.

For each size, bench/estate.py writes the estate of issue #11 into a scratch folder; a
subprocess loads and validates it, then renders its proxies class by class
(compile/proxy_class.py), each bundle dropped once made and its digest taken (mesh_render
keeps them all: at 1,000 services that is gigabytes, more than this machine holds, which is
why this bench does not go through Ansible). Columns:
- first ms: median CPU milliseconds for the first proxy of a class (compiles and writes what
  the class shares);
- next ms: median for the others (the issue's target: <= 10 ms), and the same without the
  run's cache (baseline: every proxy written whole), measured in the same run;
- worst ms: the median of the others in the class where it is highest (proxies that see every
  service: their files are 24 MB of text each);
- all s: CPU seconds for every proxy of the estate (the target at 1,000 services: <= 60 s),
  measured when --sample is 0, otherwise estimated from the sample (marked ~).
- MB/proxy: the largest proxy's files plus its validation bootstrap.

Usage: python bench/render_all.py [--sizes 100 1000] [--sample N]   (N proxies per class; 0: all)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from estate import write_estate  # noqa: E402

RUN = r"""
import json, statistics, sys, time
from meshwright.collector import cyclic_collector_paused
from meshwright.compile.proxy import list_proxies
from meshwright.compile.proxy_class import proxy_classes
from meshwright.deliver.bundle import bundle_proxy, load_mesh
from meshwright.deliver.files import RenderCache

folder, sample, cached = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "cache"
with cyclic_collector_paused():
    mesh = load_mesh([folder])
    cache = RenderCache() if cached else None
    first, others, total, proxies, largest, worst = [], [], 0.0, 0, 0, 0.0
    for group in proxy_classes(mesh, list_proxies(mesh)):
        rendered = group if sample == 0 else group[:sample]
        seconds = []
        for proxy in rendered:
            start = time.process_time()
            bundle = bundle_proxy(mesh, proxy.id, "/etc/meshwright/envoy", cache=cache)
            bundle.digest
            size = sum(map(len, bundle.files.values())) + len(bundle.validation_bootstrap)
            seconds.append(time.process_time() - start)
            largest = max(largest, size)
        first.append(seconds[0])
        others += seconds[1:]
        if len(seconds) > 1:
            worst = max(worst, statistics.median(seconds[1:]))
        # Proxies not rendered cost as the median of their class's others.
        rest = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
        total += sum(seconds) + rest * (len(group) - len(rendered))
        proxies += len(group)
print(json.dumps({"first": statistics.median(first), "next": statistics.median(others) if others else 0.0,
                  "all": total, "proxies": proxies, "mb": largest / 1e6, "worst": worst}))
"""


def measure(folder: str, sample: int, cached: bool) -> dict:
    result = subprocess.run([sys.executable, "-c", RUN, folder, str(sample), "cache" if cached else "none"],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1_000])
    parser.add_argument("--sample", type=int, default=6, help="proxies rendered per class (0: every proxy)")
    args = parser.parse_args(argv)
    print(f"{'services':>8} {'proxies':>8} {'first ms':>9} {'next ms':>8} {'uncached':>9} {'ratio':>6} {'worst ms':>9} {'all s':>8} {'MB/proxy':>9}  <=10ms  <=60s")
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="mw-render-all-") as folder:
            write_estate(size, folder)
            cached = measure(folder, args.sample, True)
            baseline = measure(folder, min(args.sample, 3) or 3, False)
        estimated = "" if args.sample == 0 else "~"
        ratio = baseline["next"] / cached["next"] if cached["next"] else float("inf")
        target = size >= 1_000
        print(f"{size:>8,} {cached['proxies']:>8,} {cached['first'] * 1000:>9.0f} {cached['next'] * 1000:>8.0f} {baseline['next'] * 1000:>9.0f} "
              f"{ratio:>5.1f}x {cached['worst'] * 1000:>9.0f} {estimated + format(cached['all'], '.1f'):>8} {cached['mb']:>9.1f}  "
              f"{('PASS' if cached['worst'] <= 0.010 else 'MISS') if target else '-':>6}  {('PASS' if cached['all'] <= 60 else 'MISS') if target else '-':>5}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
