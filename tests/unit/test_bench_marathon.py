"""bench/marathon.py runs end to end on a tiny estate and reports every change it made."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_marathon_bench_measures_every_change():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "marathon.py"), "--apps", "2", "--tasks", "2", "--rate", "4", "--seconds", "1"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()[:2]
    columns = dict(zip(["tasks", "proxies", "first", "changes", "lost"], row.split()))
    assert header.split()[:2] == ["tasks", "proxies"]
    assert (columns["tasks"], columns["proxies"], columns["changes"], columns["lost"]) == ("4", "4", "4", "0")
