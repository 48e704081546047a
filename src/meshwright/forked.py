"""Parts of one job done side by side, in forked copies of this process.

Check 4 compiles and checks each class of proxies on its own. On a machine with several
cores, copies of the process made by fork (which share the loaded mesh, copy on write, and
load nothing again) take a part of the classes each and send back what they found: the
wall-clock time of a big validation is divided by the cores. A copy whose work raises sends
the error, which is raised here; a copy that dies without a word (killed, out of memory)
has its part done here instead, so nothing it should have found is lost.
"""

from __future__ import annotations

import os
import pickle
import signal
import threading
from typing import Callable, TypeVar

Part = TypeVar("Part")
Result = TypeVar("Result")

# More copies than this gain little (shared work is done in each) and cost memory.
MAX_WORKERS = 4


def available_workers() -> int:
    """The cores this process may run on, up to MAX_WORKERS; 1 where fork is missing, or in a
    process with other threads (Ansible's workers have them): a lock one of them holds at
    the fork would stay held in the copy forever."""
    if not hasattr(os, "fork") or threading.active_count() > 1:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


def forked_map(work: Callable[[Part], Result], parts: list[Part]) -> list[Result]:
    """[work(part) for part in parts]: the first part in this process, each other in a
    forked copy, all at once. work's results and errors must pickle."""
    if len(parts) <= 1 or not hasattr(os, "fork"):
        return [work(part) for part in parts]
    pending: list[tuple[int, int, Part]] = []  # (pid, pipe, part) of copies not heard from yet
    try:
        for part in parts[1:]:
            pending.append((*_fork(work, part), part))
        results = [work(parts[0])]
        while pending:
            pid, read, part = pending.pop(0)
            results.append(_result(pid, read, lambda: work(part)))
        return results
    finally:
        for pid, read, dummy in pending:  # this process failed or was interrupted: stop the copies
            _stop(pid, read)


def _fork(work: Callable[[Part], Result], part: Part) -> tuple[int, int]:
    read, write = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write)
        return pid, read
    # The copy: never returns into the caller's code, never prints (a module's stdout is its result).
    os.close(read)
    try:
        try:
            outcome = ("result", work(part))
        except BaseException as error:  # noqa: B036 - the caller decides what an error means
            outcome = ("error", error)
        try:
            payload = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as error:  # an error that does not pickle: its text does
            payload = pickle.dumps(("error", RuntimeError(f"{type(outcome[1]).__name__}: {outcome[1]} ({error})")))
        with os.fdopen(write, "wb") as out:
            out.write(payload)
    finally:
        os._exit(0)


def _result(pid: int, read: int, redo: Callable[[], Result]) -> Result:
    with os.fdopen(read, "rb") as stream:
        payload = stream.read()
    os.waitpid(pid, 0)
    try:
        kind, value = pickle.loads(payload)
    except Exception:  # the copy died before it said anything whole: its part is done here
        return redo()
    if kind == "error":
        raise value
    return value


def _stop(pid: int, read: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.close(read)
    os.waitpid(pid, 0)
