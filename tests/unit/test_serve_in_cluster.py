"""`meshwright serve --in-cluster NAME` (the cluster serve runs in as a pod) says what is wrong
outside a pod; tests/kubernetes_node runs it in a pod of the real node."""

from __future__ import annotations

import os
import subprocess
import sys


def serve(*args: str) -> subprocess.CompletedProcess:
    # A process of its own: other unit tests put bench/ first on sys.path, where bench/kubernetes.py
    # would stand in for the Kubernetes client.
    environment = {name: value for name, value in os.environ.items() if not name.startswith("KUBERNETES_SERVICE_")}
    return subprocess.run([sys.executable, "-m", "meshwright.cli", "serve", *args], capture_output=True, text=True, timeout=60,
                          env=environment, check=False)


def test_in_cluster_outside_a_pod_is_a_usage_error(tmp_path):
    outside = serve("--mesh", str(tmp_path), "--plaintext-loopback", "--in-cluster", "east")
    assert outside.returncode == 2 and "--in-cluster east: not running in a Kubernetes pod" in outside.stderr, outside.stderr
    assert "use --kubeconfig" in outside.stderr and "Traceback" not in outside.stderr
    badly_named = serve("--mesh", str(tmp_path), "--plaintext-loopback", "--in-cluster", "East_1")
    assert badly_named.returncode == 2 and "--in-cluster 'East_1': expected a DNS-1123 label" in badly_named.stderr
