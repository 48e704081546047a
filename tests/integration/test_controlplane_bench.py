"""bench/controlplane.py keeps working: its --quick size (20 services, 40 lightweight ADS
clients, 2 real Envoys, 2 endpoint and 2 VirtualService edits, a reconnect storm) runs to its
table, every edit reaches the proxies it changes, and the real Envoys ACK the very versions
their twin clients ACK."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_quick_bench_runs_and_clients_behave_as_envoy(tmp_path):
    out = tmp_path / "results.json"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "controlplane.py"), "--quick", "--json", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout
    for measure in ("memory (RSS) at steady state", "endpoint change to every ACK", "VirtualService change to every ACK",
                    "reconnect storm", "files/xDS"):
        assert measure in table, table
    run = json.loads(out.read_text())["results"][-1]
    assert run["connect"] is not None and run["storm"] is not None, table
    for kind in ("endpoint", "routes"):
        assert run[kind] and all(change["affected"] > 0 and not change["missing"] for change in run[kind]), run[kind]
    assert run["envoys_differ"] == [], run["envoys_differ"]
    assert run["errors"] == [], run["errors"]
    assert 0 < run["rss"] < 1536
