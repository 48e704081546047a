"""mesh_service: long-running processes under a real supervisord (this machine has no systemd),
and systemd unit files checked by systemd's own parser.

Every test removes what it started; a fixture stops any supervisord a failing test leaves behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.harness import free_port
from tests.modules.conftest import run_module  # first: it puts module_utils/ on ansible.module_utils' path
from ansible.module_utils.mesh_service_control import ServiceSpec
from ansible.module_utils.mesh_systemd import render_unit

APP = """\
import http.server, os, sys

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{os.environ.get('GREETING', 'hello')} from {os.getcwd()}".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

print("app: serving on", sys.argv[1], flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""
SUPERVISORCTL = os.path.join(os.path.dirname(sys.executable), "supervisorctl")


def alive(pid: int | None) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, TypeError):
        return False


def supervisord_pid(supervisor_dir: str) -> int | None:
    try:
        with open(os.path.join(supervisor_dir, "supervisord.pid")) as handle:
            pid = int(handle.read().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if alive(pid) else None


def get(url: str) -> str | None:
    """The body of a 200 answer, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().decode()
    except OSError:
        return None


def wait_gone(pid: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid), f"process {pid} still running"


@pytest.fixture
def lab(tmp_path):
    """A supervisor folder, the app script, and a clean-up that stops whatever is left running."""

    class Lab:
        supervisor_dir = str(tmp_path / "supervisor")
        app = str(tmp_path / "app.py")
        leftovers: list[int] = []

        def args(self, name: str, port: int, **extra) -> dict:
            return {"name": name, "manager": "supervisord", "supervisor_dir": self.supervisor_dir,
                    "command": [sys.executable, self.app, str(port)], "ready_url": f"http://127.0.0.1:{port}/",
                    "ready_timeout": 10, **extra}

    (tmp_path / "app.py").write_text(APP)
    lab = Lab()
    yield lab
    pid = supervisord_pid(lab.supervisor_dir)
    if pid:
        os.kill(pid, signal.SIGTERM)  # it stops its programs first
        wait_gone(pid)
    for pid in lab.leftovers:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_supervised_process_lifecycle(lab, tmp_path):
    """Check mode starts nothing; the first run starts supervisord and the app and waits until it
    answers; re-runs change nothing; a killed or hand-stopped app runs again; a new environment
    restarts it; stopped stops it; absent removes it and stops supervisord; absent again is a no-op."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    args = lab.args("app", port, environment={"GREETING": "hi"}, working_dir=str(tmp_path))
    program_file = os.path.join(lab.supervisor_dir, "programs", "app.conf")

    check = run_module("mesh_service", check=True, diff=True, **args)
    assert check["changed"] is True
    assert check["actions"] == ["write supervisord.conf", "write program file", "start supervisord"]
    assert check["diff"][0]["after_header"] == program_file and "[program:app]" in check["diff"][0]["after"]
    assert check["diff"][1] == {"before": "status: stopped\n", "after": "status: running\n"}
    assert not os.path.exists(lab.supervisor_dir) and get(url) is None

    started = run_module("mesh_service", **args)
    assert started["changed"] is True, started
    assert (started["status"], started["manager"], started["config_file"]) == ("running", "supervisord", program_file)
    assert get(url) == f"hi from {tmp_path}"
    assert supervisord_pid(lab.supervisor_dir)
    pid = started["pid"]
    assert alive(pid)

    again = run_module("mesh_service", **args)
    assert (again["changed"], again["pid"]) == (False, pid)
    assert run_module("mesh_service", check=True, **args)["changed"] is False

    # Killed: supervisord or this run starts it again, either way it answers with a new process.
    os.kill(pid, signal.SIGKILL)
    repaired = run_module("mesh_service", **args)
    assert repaired["status"] == "running" and repaired["pid"] != pid and alive(repaired["pid"])
    assert get(url) == f"hi from {tmp_path}"

    subprocess.run([SUPERVISORCTL, "-c", os.path.join(lab.supervisor_dir, "supervisord.conf"), "stop", "app"],
                   check=True, capture_output=True)
    assert get(url) is None
    restarted = run_module("mesh_service", **args)
    assert (restarted["changed"], restarted["actions"]) == (True, ["start"])
    assert get(url) == f"hi from {tmp_path}"

    # Quotes and % reach the process as written (supervisord's conf expands %(...)s).
    args["environment"] = {"GREETING": 'say "hello" 100%'}
    changed = run_module("mesh_service", diff=True, **args)
    assert changed["changed"] is True and changed["pid"] != restarted["pid"]
    assert changed["diff"][0]["before"] != changed["diff"][0]["after"]
    assert get(url) == f'say "hello" 100% from {tmp_path}'

    stopped = run_module("mesh_service", **{**args, "state": "stopped"})
    assert (stopped["changed"], stopped["status"], stopped["pid"]) == (True, "stopped", None)
    assert get(url) is None and not alive(changed["pid"])
    assert run_module("mesh_service", **{**args, "state": "stopped"})["changed"] is False

    daemon = supervisord_pid(lab.supervisor_dir)
    check = run_module("mesh_service", check=True, name="app", manager="supervisord", supervisor_dir=lab.supervisor_dir, state="absent")
    assert check["changed"] is True and os.path.exists(program_file) and alive(daemon)
    removed = run_module("mesh_service", name="app", manager="supervisord", supervisor_dir=lab.supervisor_dir, state="absent")
    assert removed["changed"] is True
    assert removed["actions"] == ["remove program", "remove program file", "stop supervisord"]
    assert not os.path.exists(program_file) and not alive(daemon)
    assert run_module("mesh_service", name="app", manager="supervisord", supervisor_dir=lab.supervisor_dir, state="absent")["changed"] is False


def test_a_host_that_lost_everything_gets_it_back(lab):
    """supervisord and the app both killed (as after a crash or a reboot): the next run starts
    supervisord, which starts the app, and reports the change."""
    port = free_port()
    args = lab.args("app", port)
    first = run_module("mesh_service", **args)
    daemon = supervisord_pid(lab.supervisor_dir)
    lab.leftovers.append(first["pid"])
    os.kill(daemon, signal.SIGKILL)
    os.kill(first["pid"], signal.SIGKILL)
    wait_gone(first["pid"])

    back = run_module("mesh_service", **args)
    assert back["changed"] is True and back["actions"] == ["start supervisord"], back
    assert back["status"] == "running" and get(f"http://127.0.0.1:{port}/") is not None
    assert supervisord_pid(lab.supervisor_dir) not in (None, daemon)
    run_module("mesh_service", name="app", manager="supervisord", supervisor_dir=lab.supervisor_dir, state="absent")
    assert supervisord_pid(lab.supervisor_dir) is None


def test_programs_share_one_supervisord_until_the_last_is_removed(lab):
    """Two services on one host share its supervisord; removing one leaves the other running."""
    port_a, port_b = free_port(), free_port()
    assert run_module("mesh_service", **lab.args("app-a", port_a))["status"] == "running"
    assert run_module("mesh_service", **lab.args("app-b", port_b))["status"] == "running"
    daemon = supervisord_pid(lab.supervisor_dir)

    removed = run_module("mesh_service", name="app-a", manager="supervisord", supervisor_dir=lab.supervisor_dir, state="absent")
    assert removed["actions"] == ["remove program", "remove program file"]
    assert get(f"http://127.0.0.1:{port_a}/") is None and get(f"http://127.0.0.1:{port_b}/") is not None
    assert supervisord_pid(lab.supervisor_dir) == daemon

    last = run_module("mesh_service", name="app-b", manager="supervisord", supervisor_dir=lab.supervisor_dir, state="absent")
    assert last["actions"] == ["remove program", "remove program file", "stop supervisord"]
    wait_gone(daemon)


def test_a_process_that_never_gets_ready_fails_with_its_log(lab):
    """ready_url not answering within ready_timeout fails the task with the end of the log."""
    port = free_port()
    args = lab.args("slow", port, ready_timeout=1)
    args["command"] = [sys.executable, "-c", "import time; print('slow: loading plugins', flush=True); time.sleep(60)"]
    result = run_module("mesh_service", **args)
    assert result.get("failed") is True
    assert f"did not answer 200 on http://127.0.0.1:{port}/ within 1 s" in result["msg"]
    assert "slow: loading plugins" in result["log_tail"]
    run_module("mesh_service", name="slow", manager="supervisord", supervisor_dir=lab.supervisor_dir, state="absent")
    assert supervisord_pid(lab.supervisor_dir) is None


def test_an_environment_supervisord_cannot_express_fails_before_anything_is_written(lab):
    """supervisord's environment= has no escapes: a value with both kinds of quotes is refused with
    a clear message instead of reaching the process changed."""
    result = run_module("mesh_service", **lab.args("app", free_port(), environment={"MOTD": 'it\'s "quoted" here'}))
    assert result.get("failed") is True
    assert "cannot pass the value of MOTD" in result["msg"]
    assert not os.path.exists(lab.supervisor_dir)


def test_systemd_unit_passes_systemd_analyze(tmp_path):
    """The unit written for systemd hosts parses cleanly with systemd's own verifier, with arguments
    and environment values holding spaces, quotes, % and $ kept literal."""
    log = tmp_path / "envoy.log"
    spec = ServiceSpec("envoy-payment-1", ("/bin/sh", "-c", 'echo "50% of $HOME" > /dev/null'), environment={"MOTD": 'say "hi" 100%'},
                       working_dir=str(tmp_path), log_file=str(log))
    unit = render_unit(spec)
    assert 'ExecStart="/bin/sh" "-c" "echo \\"50%% of $$HOME\\" > /dev/null"' in unit
    assert 'Environment="MOTD=say \\"hi\\" 100%%"' in unit
    assert f"StandardOutput=append:{log}" in unit
    path = tmp_path / "envoy-payment-1.service"
    path.write_text(unit)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(path)], capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (0, "")
