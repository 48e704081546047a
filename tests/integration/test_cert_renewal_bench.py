"""bench/cert_renewal.py as CI runs it: the same processes as the 10-minute run (`meshwright
serve` with its CSR service, `meshwright join-token`, an agent per proxy, two Envoys talking
mutual TLS under constant load), with a 9 s lifetime for 14 s: each agent renews at least
twice, Envoy loads every certificate, no request fails, and the table says so."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_cert_renewal_bench_renews_under_load_with_no_failed_request():
    bench = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "cert_renewal.py"), "--lifetime", "9s", "--duration", "14s",
                            "--rate", "50"], capture_output=True, text=True, timeout=120)
    assert bench.returncode == 0, bench.stdout + bench.stderr
    lines = bench.stdout.splitlines()
    assert lines[0].split()[:4] == ["proxy", "written", "renewals", "loaded"]
    rows = {line.split()[0]: line.split() for line in lines[1:3]}
    assert set(rows) == {"server.default", "client.default"}
    for proxy, row in rows.items():
        written, renewals, loaded = int(row[1]), int(row[2]), int(row[3])
        assert renewals >= 2 and written >= renewals + 1, row  # the first certificate by the join token, then renewals
        assert loaded >= 3, row  # Envoy served with the first certificate and at least two renewed ones
        assert all(0 < float(ms) < 5000 for ms in row[4 + renewals:4 + 2 * renewals]), row
    summary = lines[3]
    assert summary.startswith("lifetime 9 s, load 50 req/s for 14 s:") and summary.endswith(", 0 failed"), summary
    assert int(summary.split(": ")[1].split()[0]) >= 600  # requests sent: the load ran at its rate
