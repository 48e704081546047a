# Copied from module_utils/mesh_service_control.py by tools/sync_collection.py: edit the source, then run it.
"""Bring a long-running process to a state under a service manager (systemd or supervisord),
then wait until it answers. The managers themselves are mesh_systemd and mesh_supervisor.

Standard library only: shipped to hosts as Ansible module_utils.
"""

from __future__ import annotations

import os
import re
import time
import urllib.error
from dataclasses import dataclass, field

from ansible.module_utils.urls import open_url

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")


class ServiceError(Exception):
    def __init__(self, message: str, log_tail: str = ""):
        self.log_tail = log_tail
        super().__init__(message)


@dataclass(frozen=True)
class ServiceSpec:
    """What runs: the same for every manager."""

    name: str
    command: tuple
    user: str | None = None
    group: str | None = None
    environment: dict = field(default_factory=dict)
    working_dir: str | None = None
    log_file: str | None = None

    def problems(self, needs_command: bool = True) -> list[str]:
        out = []
        if not NAME.match(self.name):
            out.append(f"name {self.name!r} may hold only letters, digits and _.@- (it names files and units)")
        if needs_command and not self.command:
            out.append("command must name the program to run")
        if any("\n" in str(part) or "\0" in str(part) for part in self.command):
            out.append("command arguments cannot hold newlines")
        for key, value in self.environment.items():
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key) or "\n" in str(value):
                out.append(f"environment variable {key!r} needs a plain name and a one-line value")
        return out


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def tail_file(path: str | None, lines: int = 20) -> str:
    if not path:
        return ""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def wait_for_http(url: str, timeout: float) -> tuple[bool, str]:
    """Poll until the URL answers 200 -> (True, ""), or (False, what it last said)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            with open_url(url, timeout=max(0.5, min(5.0, deadline - time.monotonic())), use_proxy=False) as response:
                if response.status == 200:
                    return True, ""
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as error:
            last = f"HTTP {error.code}"
        except (OSError, ValueError) as error:
            last = str(getattr(error, "reason", error))
        if time.monotonic() >= deadline:
            return False, last
        time.sleep(0.2)


def ensure_service(manager, state: str, check_mode: bool, ready_url: str | None = None, ready_timeout: float = 30) -> dict:
    """Bring the service to `state` through its manager; after a start, wait for ready_url.
    Check mode takes the same decisions and skips the side effects."""
    before_config = read_text(manager.config_path)
    before_status, dummy = manager.status()
    actions = manager.ensure(state, check_mode)
    if state in ("started", "restarted", "reloaded") and ready_url and not check_mode:
        ready, last = wait_for_http(ready_url, ready_timeout)
        if not ready:
            raise ServiceError(f"{manager.spec.name} did not answer 200 on {ready_url} within {ready_timeout:g} s "
                               f"(last: {last})", manager.log_tail())
    if check_mode:
        status, pid = ("running" if state in ("started", "restarted", "reloaded") else "stopped"), manager.status()[1]
    else:
        status, pid = manager.status()
    after_config = None if state == "absent" else manager.desired_config(state)
    diff = []
    if before_config != after_config:
        diff.append({"before_header": manager.config_path if before_config is not None else "/dev/null",
                     "after_header": manager.config_path if after_config is not None else "/dev/null",
                     "before": before_config or "", "after": after_config or ""})
    if before_status != status:
        diff.append({"before": f"status: {before_status}\n", "after": f"status: {status}\n"})
    return dict(changed=bool(actions), actions=actions, status=status, pid=pid, manager=manager.name,
                config_file=manager.config_path, diff=diff)
