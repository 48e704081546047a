"""`meshwright serve --marathon URL` as a user runs it: the server process follows the Marathon
double, its tasks become proxies, and `meshwright status` says where the registry follows from
and what went wrong last."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request

from tests.fakes.marathon import MarathonDouble
from tests.harness import free_port
from tests.unit.test_serve_cli import run, write_mesh

APP = {"id": "/shop/payment", "cmd": "./payment", "instances": 2, "portDefinitions": [{"port": 0, "name": "http"}]}


def status_when(port: int, condition, process, timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=1) as response:
                status = json.loads(response.read())
            if condition(status):
                return status
        except OSError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, process.communicate(timeout=5)
        time.sleep(0.1)


def test_serve_follows_marathon_and_status_shows_the_registry(tmp_path):
    double = MarathonDouble(credentials=("mesh", "s3cret"))
    double.cluster.put_app(APP, force=False)
    credentials = tmp_path / "marathon-credentials"
    credentials.write_text("mesh:s3cret\n")
    status_port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "meshwright.cli", "serve", "--mesh", write_mesh(tmp_path), "--plaintext-loopback",
                                "--listen", f"127.0.0.1:{free_port()}", "--status-listen", f"127.0.0.1:{status_port}",
                                "--marathon", f"http://127.0.0.1:{free_port()}", "--marathon", double.url, "--marathon-name", "prod",
                                "--marathon-credentials", str(credentials)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        status = status_when(status_port, lambda s: len(s["proxies"]) == 4, process)
        task_proxies = sorted(p["proxy"] for p in status["proxies"] if p["proxy"].startswith("payment-"))
        assert len(task_proxies) == 2 and all(p.endswith(".shop") for p in task_proxies)
        [registry] = status["registries"]
        assert (registry["name"], registry["connected_to"], registry["apps"]) == ("marathon/prod", f"{double.url}/v2/events", 1)
        double.fail_next("/v2/apps", 500, b'{"message":"internal error"}', times=1000)
        double.drop_streams()
        status = status_when(status_port, lambda s: (s["registries"][0]["last_error"] or "").find("HTTP 500") >= 0, process)
        assert len(status["proxies"]) == 4  # the last good resources stay
        code, out, _ = run(["status", "--server", f"127.0.0.1:{status_port}"])
        assert code == 0
        # Between two tries the stream may be open for a moment: connected or not, the line says which.
        [line] = [line for line in out.splitlines() if line.startswith("registry marathon/prod: ")]
        assert re.fullmatch(r"registry marathon/prod: (NOT CONNECTED|following http://127\.0\.0\.1:\d+/v2/events) \(1 apps, 0 pods\)", line), line
        assert f"  last error: GET {double.url}/v2/apps?embed=apps.tasks&embed=apps.deployments: HTTP 500" in out
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
        double.stop()
    assert process.returncode == 0 and "Traceback" not in stderr
    assert "registry marathon/prod started" in stderr
    assert "keeping the last good endpoints" in stderr


def test_marathon_sidecar_outside_a_task_or_with_a_relative_certs_dir_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("MESOS_TASK_ID", raising=False)
    common = ["marathon-sidecar", "--proxy", "payment-x.shop", "--identity", "spiffe://cluster.local/ns/shop/sa/payment",
              "--xds", "127.0.0.1:15012", "--csr", "127.0.0.1:15016", "--ca", str(tmp_path / "roots.pem")]
    code, dummy, err = run([*common, "--certs-dir", str(tmp_path / "certs")])
    assert (code, err.strip()) == (2, "error: no task id: run in a Marathon task ($MESOS_TASK_ID) or give --task-id")
    code, dummy, err = run([*common, "--task-id", "shop_payment.instance-1.meshwright-sidecar", "--certs-dir", "certs"])
    assert (code, err.strip()) == (2, "error: --certs-dir certs: give an absolute path")
