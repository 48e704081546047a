# Copied from module_utils/mesh_supervisor.py by tools/sync_collection.py: edit the source, then run it.
"""A program under this host's own supervisord (hosts without systemd, such as the local demo).

One supervisord per supervisor_dir: its conf, socket, pid file and log live there, and it
includes programs/*.conf, one file per program. It is started when its socket does not answer
and stopped when its last program is removed. Talks to it by XML-RPC over the unix socket.

Standard library only: shipped to hosts as Ansible module_utils.
"""

from __future__ import annotations

import contextlib
import glob
import http.client
import os
import shlex
import signal
import socket
import subprocess
import time
import xmlrpc.client

from ansible_collections.meshwright.mesh.plugins.module_utils.mesh_file_set import write_atomic
from ansible_collections.meshwright.mesh.plugins.module_utils.mesh_service_control import ServiceError, read_text, tail_file

# supervisord's fault codes (supervisor.xmlrpc.Faults) that are answers, not errors.
BAD_NAME, ALREADY_STARTED, NOT_RUNNING = 10, 60, 70
# Process states in which supervisord is running the program or about to.
ACTIVE = ("RUNNING", "STARTING", "BACKOFF")
HEADER = "; Managed by meshwright (mesh_service); changes here are overwritten.\n"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str, timeout: float):
        super().__init__()
        self._path, self._timeout = path, timeout

    def make_connection(self, host):
        return _UnixConnection(self._path, self._timeout)


def _escape(value: str) -> str:
    """supervisord expands %(name)s in its conf: a literal % is %%."""
    return str(value).replace("%", "%%")


def _environment_pair(key: str, value: str) -> str:
    """KEY="value" as supervisord reads it: a quoted word without escapes, so a value can hold
    one kind of quote, and cannot start or end with one."""
    value = str(value)
    quote = '"' if '"' not in value else "'"
    if quote in value or (value and (value[0] in "'\"" or value[-1] in "'\"")):
        raise ServiceError(f"supervisord cannot pass the value of {key} as written: it holds both kinds of quotes, "
                           "or starts or ends with one")
    return f"{key}={quote}{_escape(value)}{quote}"


class SupervisorProgram:
    name = "supervisord"

    def __init__(self, spec, supervisor_dir: str, supervisord: str):
        self.spec = spec
        self.dir = supervisor_dir
        self.supervisord = supervisord
        self.daemon_conf = os.path.join(supervisor_dir, "supervisord.conf")
        self.socket = os.path.join(supervisor_dir, "supervisor.sock")
        self.programs = os.path.join(supervisor_dir, "programs")
        self.config_path = os.path.join(self.programs, f"{spec.name}.conf")
        self.log_file = spec.log_file or os.path.join(supervisor_dir, "logs", f"{spec.name}.log")

    # -- what the files say ---------------------------------------------------------------

    def daemon_config(self) -> str:
        d = _escape(self.dir)
        return HEADER + "\n".join([
            "[unix_http_server]", f"file={d}/supervisor.sock", "chmod=0700", "",
            "[supervisord]", f"logfile={d}/supervisord.log", "logfile_maxbytes=10MB", "logfile_backups=3",
            f"pidfile={d}/supervisord.pid", f"childlogdir={d}/logs", "",
            "[rpcinterface:supervisor]", "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
            "[supervisorctl]", f"serverurl=unix://{d}/supervisor.sock", "",
            "[include]", f"files = {d}/programs/*.conf", "",
        ])

    def desired_config(self, state: str) -> str:
        spec = self.spec
        lines = [f"[program:{spec.name}]", "command=" + _escape(shlex.join(str(part) for part in spec.command))]
        if spec.working_dir:
            lines.append(f"directory={_escape(spec.working_dir)}")
        if spec.user:
            lines.append(f"user={_escape(spec.user)}")
        if spec.environment:
            lines.append("environment=" + ",".join(_environment_pair(k, v) for k, v in sorted(spec.environment.items())))
        lines += [
            # A stopped program stays stopped when supervisord (re)starts.
            f"autostart={'false' if state == 'stopped' else 'true'}",
            "autorestart=true", "startsecs=1", "startretries=3",
            "stopsignal=TERM", "stopwaitsecs=15", "stopasgroup=true", "killasgroup=true",
            "redirect_stderr=true", f"stdout_logfile={_escape(self.log_file)}",
            "stdout_logfile_maxbytes=10MB", "stdout_logfile_backups=3",
        ]
        return HEADER + "\n".join(lines) + "\n"

    # -- what runs ------------------------------------------------------------------------

    def _rpc(self, timeout: float = 60):
        return xmlrpc.client.ServerProxy("http://localhost", transport=_UnixTransport(self.socket, timeout)).supervisor

    def _daemon_answers(self) -> bool:
        try:
            return self._rpc(timeout=5).getState()["statename"] == "RUNNING"
        except (OSError, xmlrpc.client.Error):
            return False

    def _info(self) -> dict | None:
        """The program's process info, or None when supervisord is down or does not run it."""
        try:
            return self._rpc(timeout=5).getProcessInfo(self.spec.name)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode == BAD_NAME:
                return None
            raise
        except OSError:
            return None

    def status(self) -> tuple[str, int | None]:
        info = self._info()
        if info and info["statename"] == "RUNNING":
            return "running", info["pid"]
        return "stopped", None

    def log_tail(self) -> str:
        return tail_file(self.log_file)

    # -- deciding and doing ----------------------------------------------------------------

    def _other_programs(self) -> list[str]:
        return [path for path in glob.glob(os.path.join(glob.escape(self.programs), "*.conf")) if path != self.config_path]

    def plan(self, state: str) -> list[str]:
        """The actions that bring the program to `state`, decided by reading only."""
        up = self._daemon_answers()
        info = self._info() if up else None
        running = bool(info) and info["statename"] in ACTIVE
        if state == "absent":
            actions = []
            if info:
                actions.append("remove program")
            if os.path.exists(self.config_path):
                actions.append("remove program file")
            if up and not self._other_programs():
                actions.append("stop supervisord")
            if not up and self._orphans():
                actions.append("stop orphaned processes")
            return actions

        actions = []
        if read_text(self.daemon_conf) != self.daemon_config():
            actions.append("write supervisord.conf")
        conf_changed = read_text(self.config_path) != self.desired_config(state)
        if conf_changed:
            actions.append("write program file")
        if not up:
            if state == "stopped":
                return actions  # nothing runs it, nothing to start
            return actions + ["start supervisord"]  # it starts the program (autostart)
        if "write supervisord.conf" in actions:
            return actions + ["restart supervisord"]
        if conf_changed or info is None or self._loaded_differs():
            return actions + ["update program"]  # remove and add: stops, then autostarts it unless stopped
        if state in ("started", "reloaded") and not running:
            actions.append("start")
        elif state == "reloaded":
            actions.append("send SIGHUP")
        elif state == "restarted":
            actions.append("restart")
        elif state == "stopped" and running:
            actions.append("stop")
        return actions

    def _orphans(self) -> list[int]:
        """The program's processes that outlived their supervisord (killed outright, it stops
        none): supervisord marks each program's environment with its socket and the name."""
        marks = {f"SUPERVISOR_SERVER_URL=unix://{self.socket}".encode(), f"SUPERVISOR_PROCESS_NAME={self.spec.name}".encode()}
        pids = []
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{entry}/environ", "rb") as handle:
                    environment = set(handle.read().split(b"\0"))
            except OSError:  # not a process, gone, or not ours to read
                continue
            if entry.isdigit() and marks <= environment:
                pids.append(int(entry))
        return sorted(pids)

    def _stop_orphans(self, timeout: float = 15) -> None:
        for signal_number in (signal.SIGTERM, signal.SIGKILL):
            for pid in self._orphans():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal_number)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and not all(_gone(pid) for pid in self._orphans()):
                time.sleep(0.1)
            if all(_gone(pid) for pid in self._orphans()):
                return

    def _loaded_differs(self) -> bool:
        """Whether supervisord runs an older version of the program file (a reread, as
        `supervisorctl reread` does: it applies nothing)."""
        added, changed, removed = self._rpc().reloadConfig()[0]
        return self.spec.name in added + changed + removed

    def ensure(self, state: str, check_mode: bool) -> list[str]:
        actions = self.plan(state)
        if not check_mode:
            for action in actions:
                self._do(action, state)
            if state in ("started", "restarted", "reloaded"):
                self._wait_running()
        return actions

    def _do(self, action: str, state: str) -> None:
        name = self.spec.name
        if action == "write supervisord.conf":
            for folder in (self.dir, self.programs, os.path.join(self.dir, "logs")):
                os.makedirs(folder, exist_ok=True)
            write_atomic(self.daemon_conf, self.daemon_config())
        elif action == "write program file":
            os.makedirs(self.programs, exist_ok=True)
            os.makedirs(os.path.dirname(self.log_file), exist_ok=True)
            write_atomic(self.config_path, self.desired_config(state))
        elif action == "start supervisord":
            self._start_daemon()
        elif action == "restart supervisord":
            self._stop_daemon()
            self._start_daemon()
        elif action == "update program":
            # As `supervisorctl update NAME`: a changed program is removed (stopped) and added
            # again, and then autostarts unless it is to stay stopped.
            added, changed, removed = self._rpc().reloadConfig()[0]
            if name in changed + removed:
                self._stop()
                self._rpc().removeProcessGroup(name)
            if name in added + changed:
                self._rpc().addProcessGroup(name)
        elif action == "start":
            self._start()
        elif action == "restart":
            self._stop()
            self._start()
        elif action == "stop":
            self._stop()
        elif action == "send SIGHUP":
            # To the program's own process, not its group: the restarter decides what its Envoys get.
            self._rpc().signalProcess(name, "HUP")
        elif action == "remove program":
            self._stop()
            self._rpc().removeProcessGroup(name)
        elif action == "remove program file":
            os.unlink(self.config_path)
        elif action == "stop supervisord":
            self._stop_daemon()
        elif action == "stop orphaned processes":
            self._stop_orphans()

    def _stop_daemon(self) -> None:
        pid = self._rpc().getPID()
        self._rpc().shutdown()
        self._wait_daemon(lambda: _gone(pid), "stop")

    def _start_daemon(self) -> None:
        # supervisord binds its socket, then forks into the background and the parent exits;
        # the daemon closes the inherited stdout/stderr, so this returns once it is up.
        try:
            result = subprocess.run([self.supervisord, "-c", self.daemon_conf], stdin=subprocess.DEVNULL,
                                    capture_output=True, text=True, timeout=60, cwd=self.dir, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise ServiceError(f"cannot start {self.supervisord}: {error}") from error
        if result.returncode != 0:
            raise ServiceError(f"{self.supervisord} -c {self.daemon_conf} exited {result.returncode}: "
                               f"{(result.stdout + result.stderr).strip()}", tail_file(os.path.join(self.dir, "supervisord.log")))
        self._wait_daemon(self._daemon_answers, "start")

    def _wait_daemon(self, done, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise ServiceError(f"supervisord in {self.dir} did not {what} within {timeout:g} s",
                                   tail_file(os.path.join(self.dir, "supervisord.log")))
            time.sleep(0.1)

    def _start(self) -> None:
        try:
            self._rpc().startProcess(self.spec.name, True)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode != ALREADY_STARTED:
                raise ServiceError(f"supervisord could not start {self.spec.name}: {fault.faultString}", self.log_tail())

    def _stop(self) -> None:
        try:
            self._rpc().stopProcess(self.spec.name, True)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode not in (NOT_RUNNING, BAD_NAME):
                raise

    def _wait_running(self, timeout: float = 60) -> None:
        """Until supervisord reports the program RUNNING (it stayed up startsecs), or gave up."""
        deadline = time.monotonic() + timeout
        while True:
            info = self._info()
            state = info["statename"] if info else "ABSENT"
            if state == "RUNNING":
                return
            if state not in ("STARTING", "BACKOFF") or time.monotonic() > deadline:
                raise ServiceError(f"{self.spec.name} is {state} under supervisord, not RUNNING "
                                   f"({info.get('description', '') if info else 'not loaded'})", self.log_tail())
            time.sleep(0.1)


def _gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its parent counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
