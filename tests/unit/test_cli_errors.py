"""Bad command lines and broken Envoy binaries get a clear error and exit 2, never a traceback,
and meshwright stops in time (issue #10, item 17). The bad-input corpus runs these as a user
does; here, what needs a closer look."""

from __future__ import annotations

import os
import time

from meshwright.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASIC = os.path.join(ROOT, "examples", "basic", "mesh.yaml")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().split()[2] != "Z"


def test_a_hanging_envoy_is_stopped_with_its_children(tmp_path, capsys):
    """A wrapper script whose child hangs: after --envoy-timeout both are gone and the message
    says what happened and how to give it more time."""
    child_pid = tmp_path / "child.pid"
    envoy = tmp_path / "envoy"
    envoy.write_text(f"#!/bin/sh\nsleep 300 &\necho $! > {child_pid}\nwait\n")
    envoy.chmod(0o755)
    start = time.monotonic()
    code = main(["validate", "--envoy", str(envoy), "--envoy-timeout", "1", BASIC])
    assert time.monotonic() - start < 8
    assert code == 2
    assert capsys.readouterr().err == (f"error: --envoy: {envoy} did not finish `--mode validate` within 1 s "
                                       "(it was stopped; give more time with --envoy-timeout)\n")
    assert not alive(int(child_pid.read_text()))


def test_an_envoy_that_cannot_run_is_a_usage_error(tmp_path, capsys):
    plain = tmp_path / "envoy"
    plain.write_text("#!/bin/sh\n")
    for envoy, reason in ((tmp_path / "missing", "does not exist"), (plain, "is not executable"), (tmp_path, "is not a file")):
        assert main(["validate", "--envoy", str(envoy), BASIC]) == 2
        assert capsys.readouterr().err == f"error: --envoy: {envoy} {reason} (give an Envoy binary, or 'none' to skip envoy --mode validate)\n"


def test_out_that_is_a_file_or_cannot_be_written(tmp_path, capsys):
    a_file = tmp_path / "out"
    a_file.write_text("mine\n")
    for out, message in ((a_file, f"error: --out {a_file}: not a directory\n"),
                         ("/proc/meshwright", "error: --out /proc/meshwright: cannot write there: No such file or directory\n")):
        assert main(["render", "--envoy", "none", "--mesh", BASIC, "--proxy", "frontend.default", "--out", str(out)]) == 2
        assert capsys.readouterr().err == message
    assert a_file.read_text() == "mine\n"


def test_an_unexpected_error_is_a_short_internal_error(monkeypatch, capsys):
    """The last resort, for bugs: one line and exit 3, not a traceback."""
    monkeypatch.setattr("meshwright.cli.load_paths", lambda paths: 1 / 0)
    assert main(["validate", "--envoy", "none", BASIC]) == 3
    assert capsys.readouterr().err == "internal error (a bug in meshwright, please report it): ZeroDivisionError: division by zero\n"
