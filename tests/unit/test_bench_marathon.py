"""bench/marathon.py runs end to end on a tiny estate and reports every change it made."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_marathon_bench_measures_every_change():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "marathon.py"), "--apps", "2", "--tasks", "2", "--rate", "4", "--seconds", "1",
                             "--clients", "2"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()[:2]
    columns = dict(zip(["tasks", "proxies", "first", "changes", "lost", "applied50", "applied99", "acked50", "acked99"], row.split()))
    assert header.split()[:5] == ["tasks", "proxies", "first", "s", "changes"]
    assert (columns["tasks"], columns["proxies"], columns["changes"], columns["lost"]) == ("4", "6", "4", "0")
    assert int(columns["acked99"]) >= int(columns["applied50"]) > 0  # every kill applied, then ACKed by both proxies
