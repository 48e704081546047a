"""Every input of the bad-input corpus (tests/bad_input/corpus.py), given to the real
`meshwright validate` and `meshwright render` as a user runs them: exit 1 (config) or 2
(usage) with a message naming the file or argument at fault and the problem, within 10 s,
within 500 MB of address space, no traceback, and nothing written: not outside --out, not
inside it either (the command failed).

The runs go in parallel, once per session; each test then checks one run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from tests.bad_input.corpus import CASES, Case, argv_for, write_case

MESHWRIGHT = os.path.join(os.path.dirname(sys.executable), "meshwright")
TIME_LIMIT = 10.0
MEMORY_LIMIT_KB = 500 * 1024
RUNS = [(case, command) for case in CASES for command in case.commands]


@dataclass
class Run:
    argv: list[str]
    folder: str
    code: int
    output: str  # stderr then stdout
    seconds: float
    before: dict
    after: dict
    out_before: dict
    out_after: dict


def snapshot(folder: str, skip: str | None = None) -> dict:
    """path -> (mode, size, mtime) of every file under folder, (mode,) of every folder
    (a scratch file made and removed again changes only its folder's mtime)."""
    found = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if os.path.join(root, d) != skip]
        for name in dirs:
            found[os.path.join(root, name)] = (os.lstat(os.path.join(root, name)).st_mode,)
        for name in files:
            info = os.lstat(os.path.join(root, name))
            found[os.path.join(root, name)] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return found


def run_case(case: Case, command: str, folder: str) -> Run:
    write_case(case, folder)
    scratch = os.path.join(folder, "tmp")
    os.mkdir(scratch)
    out = os.path.join(folder, "out")
    before, out_before = snapshot(folder, skip=out), snapshot(out) if os.path.isdir(out) else {}
    argv = argv_for(case, command, folder)
    env = {**os.environ, **case.env, "TMPDIR": scratch}
    # RLIMIT_AS through the shell: preexec_fn is not safe with the threads that run the corpus.
    limited = ["sh", "-c", f'ulimit -v {MEMORY_LIMIT_KB}; exec "$@"', "sh", MESHWRIGHT, *argv]
    start = time.monotonic()
    try:
        result = subprocess.run(limited, cwd=folder, env=env, capture_output=True, text=True, errors="replace",
                                timeout=TIME_LIMIT, stdin=subprocess.DEVNULL)
        code, output = result.returncode, result.stderr + result.stdout
    except subprocess.TimeoutExpired as timeout:
        code, output = -1, f"TIMED OUT after {TIME_LIMIT} s: {timeout.stderr!r}"
    seconds = time.monotonic() - start
    out_after = snapshot(out) if os.path.isdir(out) else {}
    if os.path.lexists(out) and not os.path.isdir(out):
        out_after = out_before = {out: os.lstat(out).st_size}
    return Run(argv, folder, code, output, seconds, before, snapshot(folder, skip=out), out_before, out_after)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("corpus")
    # One run per core: the time limit is each run's wall time, which runs in excess of the
    # cores would stretch.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        futures = {(case.name, command): pool.submit(run_case, case, command, str(root / f"{case.name}-{command}")) for case, command in RUNS}
        return {key: future.result() for key, future in futures.items()}


def test_the_corpus_has_every_kind_of_bad_input():
    names = [case.name for case in CASES]
    assert len(names) == len(set(names)) and len(names) >= 60
    for kind in ("alias-", "huge-", "deep-", "binary-", "utf16-", "latin-1", "fifo-", "socket-", "dev-zero", "symlink-loop",
                 "directory-named-yaml", "file-name-with-newline", "file-name-shell", "name-with-", "int-", "usage-"):
        assert any(name.startswith(kind) for name in names), kind


@pytest.mark.parametrize("case,command", RUNS, ids=[f"{case.name}-{command}" for case, command in RUNS])
def test_bad_input_gets_a_clear_error(runs, case, command):
    run = runs[(case.name, command)]
    where = case.where.replace("{case}", run.folder)
    report = f"{' '.join(run.argv)}\nexit {run.code} in {run.seconds:.1f} s:\n{run.output[-3000:]}"
    assert run.seconds < TIME_LIMIT, report
    assert "Traceback" not in run.output and "internal error" not in run.output, report
    assert run.code == case.code, report
    assert case.problem in run.output, report
    assert where in run.output, report
    assert run.after == run.before, f"wrote outside --out: {sorted(set(run.after.items()) ^ set(run.before.items()))}\n{report}"
    assert run.out_after == run.out_before, f"wrote into --out although it failed\n{report}"

