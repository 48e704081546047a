"""`meshwright serve`, `meshwright status` and `meshwright xds-bootstrap` as a user runs them:
the server as a process (plaintext loopback mode; mTLS is tests/integration/test_control_plane.py),
its status table, a clean stop on SIGTERM, and usage errors without tracebacks."""

from __future__ import annotations

import contextlib
import io
import json
import signal
import subprocess
import sys
import time
import urllib.request

import yaml

from meshwright.cli import main
from tests.harness import free_port
from tests.unit.test_serve_ads import MESH


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def write_mesh(tmp_path) -> str:
    folder = tmp_path / "mesh"
    folder.mkdir()
    (folder / "mesh.yaml").write_text(MESH.format(address="10.0.0.1", timeout="5s"))
    return str(folder)


def test_serve_runs_reports_status_and_stops_on_sigterm(tmp_path):
    mesh = write_mesh(tmp_path)
    grpc_port, status_port = free_port(), free_port()
    process = subprocess.Popen([sys.executable, "-m", "meshwright.cli", "serve", "--mesh", mesh, "--listen", f"127.0.0.1:{grpc_port}",
                                "--status-listen", f"127.0.0.1:{status_port}", "--plaintext-loopback"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{status_port}/status", timeout=1) as response:
                    status = json.loads(response.read())
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, process.communicate(timeout=5)
                time.sleep(0.1)
        assert [p["proxy"] for p in status["proxies"]] == ["client.default", "reviews-v1.default"]
        code, out, _ = run(["status", "--server", f"127.0.0.1:{status_port}"])
        assert code == 0
        lines = out.splitlines()
        assert lines[0].split() == ["NAME", "INSTANCE", "CDS", "LDS", "EDS", "RDS", "SDS", "CERTIFICATE", "EXPIRES", "ENVOY"]
        assert lines[1].split() == ["client.default"] + ["-"] * 8  # connected nowhere
        assert f"instance 127.0.0.1:{grpc_port}: mesh generation 1" in lines
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert f"serving 2 proxies over ADS on 127.0.0.1:{grpc_port} (plaintext, loopback only)" in stderr
    assert "Traceback" not in stderr


def test_serve_needs_a_certificate_or_the_plaintext_loopback_mode(tmp_path):
    mesh = write_mesh(tmp_path)
    code, _, err = run(["serve", "--mesh", mesh, "--tls-cert", "c.pem"])
    assert code == 2 and "give --tls-key, --ca" in err and "--plaintext-loopback" in err
    code, _, err = run(["serve", "--mesh", mesh, "--plaintext-loopback", "--listen", "0.0.0.0:15012"])
    assert code == 2 and err == "error: --plaintext-loopback listens on loopback only, not 0.0.0.0\n"
    code, _, err = run(["serve", "--mesh", mesh, "--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", "k", "--ca", "c"])
    assert code == 2 and "--tls-cert" in err and "cannot read it" in err


def test_serve_refuses_an_invalid_mesh_with_validate_messages(tmp_path):
    mesh = write_mesh(tmp_path)
    path = tmp_path / "mesh" / "mesh.yaml"
    path.write_text(path.read_text().replace("resolution: STATIC", "resolution: SOMETIMES"))
    code, _, err = run(["serve", "--mesh", mesh, "--plaintext-loopback", "--listen", f"127.0.0.1:{free_port()}"])
    assert code == 1 and err.startswith(f"{path}:") and "SOMETIMES" in err and "nothing was written" in err


def test_status_without_a_server_says_so(tmp_path):
    port = free_port()
    code, _, err = run(["status", "--server", f"127.0.0.1:{port}"])
    assert code == 2 and err.startswith(f"error: --server 127.0.0.1:{port}: no status from meshwright serve there")


def test_xds_bootstrap_writes_a_bootstrap_for_the_control_plane(tmp_path):
    mesh = write_mesh(tmp_path)
    out = tmp_path / "client" / "bootstrap.yaml"
    code, stdout, _ = run(["xds-bootstrap", "--mesh", mesh, "--proxy", "client.default", "--xds", "127.0.0.1:15012",
                           "--certs-dir", "/etc/meshwright/certs", "--out", str(out)])
    assert code == 0 and stdout == f"client.default: xDS bootstrap written to {out}\n"
    bootstrap = yaml.safe_load(out.read_text())
    assert bootstrap["node"]["metadata"]["CERTS_DIR"] == "/etc/meshwright/certs"
    assert bootstrap["dynamic_resources"]["ads_config"]["api_type"] == "GRPC"
    code, _, err = run(["xds-bootstrap", "--mesh", mesh, "--proxy", "client.default", "--xds", "127.0.0.1:15012", "--out", str(out)])
    assert code == 2 and "--certs-dir" in err
    code, _, err = run(["xds-bootstrap", "--mesh", mesh, "--proxy", "ghost.default", "--xds", "127.0.0.1:15012",
                        "--plaintext-loopback", "--out", str(out)])
    assert code == 2 and "no proxy named 'ghost.default'" in err
