"""A service under systemd: one unit file in /etc/systemd/system, driven with systemctl.

Standard library only: shipped to hosts as Ansible module_utils.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess

from ansible.module_utils.mesh_file_set import write_atomic
from ansible.module_utils.mesh_service_control import ServiceError, read_text, tail_file

HEADER = "# Managed by meshwright (mesh_service); changes here are overwritten.\n"


def systemd_usable() -> bool:
    """PID 1 is systemd and systemctl can talk to it (not so in most containers)."""
    try:
        with open("/proc/1/comm", encoding="utf-8") as handle:
            if handle.read().strip() != "systemd":
                return False
    except OSError:
        return False
    systemctl = shutil.which("systemctl")
    if not systemctl:
        return False
    result = subprocess.run([systemctl, "show", "--property=Version", "--value"], capture_output=True, text=True, check=False)
    return result.returncode == 0


def quote(value: str, dollar: bool = True) -> str:
    """One word for a unit file: double-quoted, C escapes, % specifiers and $ variables kept literal."""
    value = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    if dollar:
        value = value.replace("$", "$$")
    return f'"{value}"'


def render_unit(spec) -> str:
    service = [f"ExecStart={' '.join(quote(part) for part in spec.command)}"]
    if spec.user:
        service.append(f"User={spec.user}")
    if spec.group:
        service.append(f"Group={spec.group}")
    if spec.working_dir:
        service.append(f"WorkingDirectory={spec.working_dir.replace('%', '%%')}")
    for key, value in sorted(spec.environment.items()):
        service.append(f"Environment={quote(f'{key}={value}', dollar=False)}")
    if spec.log_file:
        # stderr goes where stdout goes (StandardError defaults to inherit).
        service.append(f"StandardOutput=append:{spec.log_file.replace('%', '%%')}")
    service += ["Restart=always", "RestartSec=1", "TimeoutStopSec=15"]
    return HEADER + "\n".join([
        "[Unit]", f"Description=meshwright {spec.name}", "Wants=network-online.target", "After=network-online.target", "",
        "[Service]", "Type=simple", *service, "",
        "[Install]", "WantedBy=multi-user.target", "",
    ])


class SystemdUnit:
    name = "systemd"

    def __init__(self, spec, enabled: bool | None = None, unit_dir: str = "/etc/systemd/system"):
        self.spec = spec
        self.enabled = enabled
        self.unit = f"{spec.name}.service"
        self.config_path = os.path.join(unit_dir, self.unit)

    def desired_config(self, state: str) -> str:
        return render_unit(self.spec)

    def _systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise ServiceError(f"systemctl {' '.join(args)} failed: {(result.stderr or result.stdout).strip()}", self.log_tail())
        return result

    def _active(self) -> bool:
        return self._systemctl("is-active", "--quiet", self.unit, check=False).returncode == 0

    def _failed(self) -> bool:
        """Failed units (start limit hit, say) must be reset before systemctl starts them again."""
        return self._systemctl("is-failed", "--quiet", self.unit, check=False).returncode == 0

    def _is_enabled(self) -> bool:
        return self._systemctl("is-enabled", "--quiet", self.unit, check=False).returncode == 0

    def status(self) -> tuple[str, int | None]:
        out = self._systemctl("show", "--property=ActiveState", "--property=MainPID", self.unit, check=False).stdout
        values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        if values.get("ActiveState") == "active":
            return "running", int(values.get("MainPID", "0")) or None
        return "stopped", None

    def log_tail(self) -> str:
        """The unit's journal (systemd's own word on why it failed, such as a log file it could not
        open) and, when the process logs to a file, that file's end."""
        try:
            journal = subprocess.run(["journalctl", "-u", self.unit, "-n", "20", "--no-pager"],
                                     capture_output=True, text=True, check=False).stdout.strip()
        except OSError:
            journal = ""
        if not self.spec.log_file:
            return journal
        return f"journalctl -u {self.unit}:\n{journal}\n{self.spec.log_file}:\n{tail_file(self.spec.log_file)}"

    def plan(self, state: str) -> list[str]:
        exists = os.path.exists(self.config_path)
        active = self._active()
        if state == "absent":
            actions = ["stop"] if active else []
            if exists:
                if self._is_enabled():
                    actions.append("disable")
                actions += ["remove unit file", "daemon-reload"]
            return actions
        actions = ["give the log file to its user"] if self._log_file_foreign() else []
        changed = read_text(self.config_path) != self.desired_config(state)
        if changed:
            actions += ["write unit file", "daemon-reload"]
        if state in ("started", "reloaded") and not active:
            actions.append("start")
        elif (state in ("started", "reloaded") and changed) or state == "restarted":
            actions.append("restart")
        elif state == "reloaded":
            actions.append("send SIGHUP")
        elif state == "stopped" and active:
            actions.append("stop")
        if actions[-1:] in (["start"], ["restart"]) and self._failed():
            actions.insert(-1, "reset-failed")
        enabled = self.enabled if self.enabled is not None else (True if state != "stopped" else None)
        if enabled is not None and (exists and self._is_enabled()) != enabled:
            actions.append("enable" if enabled else "disable")
        return actions

    def _log_file_foreign(self) -> bool:
        """Whether the log file is missing or not the service user's: systemd opens it as root,
        but a process that reopens its stdout (Envoy's access log at /dev/stdout) needs it as
        its own."""
        if not (self.spec.log_file and self.spec.user):
            return False
        try:
            account, status = pwd.getpwnam(self.spec.user), os.stat(self.spec.log_file)
        except (KeyError, FileNotFoundError):
            return True
        return (status.st_uid, status.st_gid) != (account.pw_uid, account.pw_gid)

    def _give_log_file_to_user(self) -> None:
        try:
            account = pwd.getpwnam(self.spec.user)
        except KeyError:
            raise ServiceError(f"the service's user {self.spec.user!r} does not exist on this host") from None
        os.makedirs(os.path.dirname(self.spec.log_file), exist_ok=True)
        os.close(os.open(self.spec.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640))
        os.chown(self.spec.log_file, account.pw_uid, account.pw_gid)

    def ensure(self, state: str, check_mode: bool) -> list[str]:
        actions = self.plan(state)
        if check_mode:
            return actions
        if self.spec.log_file and {"write unit file", "start", "restart"} & set(actions):
            # systemd opens the log file but makes no folder for it (the unit would fail, 209/STDOUT).
            os.makedirs(os.path.dirname(self.spec.log_file), exist_ok=True)
        for action in actions:
            if action == "give the log file to its user":
                self._give_log_file_to_user()
            elif action == "write unit file":
                write_atomic(self.config_path, self.desired_config(state))
            elif action == "remove unit file":
                os.unlink(self.config_path)
            elif action == "daemon-reload":
                self._systemctl("daemon-reload")
            elif action == "send SIGHUP":
                # To the main process only, as `systemctl reload` would with kill -HUP $MAINPID.
                self._systemctl("kill", "--kill-whom=main", "--signal=SIGHUP", self.unit)
            else:
                self._systemctl(action, self.unit)
        return actions
