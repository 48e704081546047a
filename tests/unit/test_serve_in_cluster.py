"""`meshwright serve --in-cluster NAME` (the cluster serve runs in as a pod) says what is wrong
outside a pod; tests/kubernetes_node runs it in a pod of the real node."""

from __future__ import annotations

from tests.unit.test_serve_certificates import run_cli


def test_in_cluster_outside_a_pod_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code, dummy, err = run_cli(["serve", "--mesh", str(tmp_path), "--plaintext-loopback", "--in-cluster", "east"])
    assert code == 2 and "--in-cluster east: not running in a Kubernetes pod" in err and "use --kubeconfig" in err, err
    code, dummy, err = run_cli(["serve", "--mesh", str(tmp_path), "--plaintext-loopback", "--in-cluster", "East_1"])
    assert code == 2 and "--in-cluster 'East_1': expected a DNS-1123 label" in err
