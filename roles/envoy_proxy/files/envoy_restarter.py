"""Run Envoy so that it can be hot restarted: the process a service manager (systemd,
supervisord) keeps running in place of Envoy itself. Standard library only.

    envoy-restarter --base-id-path FILE [--socket-path PATH] -- ENVOY [ENVOY ARGS...]

It starts ENVOY with restart epoch 0 and a dynamic base ID (written to FILE). On SIGHUP it
starts the next epoch with the same base ID: the new Envoy takes the listen sockets over from
the old one, which drains its connections and exits (Envoy's hot restart, the process of
Envoy's own restarter/hot-restarter.py). ENVOY is run by path each time, so a path through a
`current` link starts whatever version the link points to then. A SIGHUP that comes while an
older epoch is still draining waits until only one Envoy runs (Envoy restarts from one parent
at a time). SIGTERM and SIGINT go to every Envoy; it exits when the last one has. SIGUSR1
goes to every Envoy, which reopens its access logs (log rotation), as Envoy's restarter does.

The Envoys of two epochs talk over Unix sockets named after PATH (default: `hot-restart` beside
FILE), never over Envoy's default abstract socket, which any local user could reach: PATH's
folder must be the proxy user's own (no access for group or others), or the restarter refuses
to start.

Envoy opens an access log of /dev/stdout by name, which reopens its stdout: where the service
manager made that a pipe of its own user's (supervisord runs as root and the proxy as its user),
the proxy's user may not open it. The restarter then puts a pipe of its own in between and
copies what comes through it to the stdout it was given.

As in Envoy's restarter, an Envoy that exits with an error takes the others down with it and
the restarter exits with that status, so that the service manager starts the proxy afresh.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time

HANDLED = {signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGUSR1}


def log(message: str) -> None:
    print(f"envoy-restarter[{os.getpid()}]: {message}", file=sys.stderr, flush=True)


class Restarter:
    def __init__(self, command: list[str], base_id_path: str, socket_path: str):
        self.command = command
        self.base_id_path = base_id_path
        self.socket_path = socket_path
        self.children: list[tuple[int, subprocess.Popen]] = []  # (epoch, process), oldest first
        self.epoch = -1
        self.pending_restart = False
        self.stopping = False
        self.status = 0

    def start_next_epoch(self) -> None:
        self.epoch += 1
        if self.epoch == 0:
            args = ["--restart-epoch", "0", "--use-dynamic-base-id", "--base-id-path", self.base_id_path]
        else:
            try:
                with open(self.base_id_path, encoding="utf-8") as handle:
                    base_id = handle.read().strip()
            except OSError as error:
                self.epoch -= 1
                log(f"no hot restart: epoch 0 has not written its base ID yet ({error})")
                return
            args = ["--restart-epoch", str(self.epoch), "--base-id", base_id]
        args += ["--socket-path", self.socket_path, "--socket-mode", "600"]
        # The children must not inherit this process's blocked signals.
        process = subprocess.Popen(self.command + args, preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED))
        self.children.append((self.epoch, process))
        log(f"started {os.path.realpath(self.command[0])} epoch {self.epoch} as pid {process.pid}")

    def signal_all(self, signum: int) -> None:
        for dummy, process in self.children:
            if process.poll() is None:
                try:
                    process.send_signal(signum)
                except ProcessLookupError:
                    pass

    def reap(self) -> None:
        for epoch, process in list(self.children):
            code = process.poll()
            if code is None:
                continue
            self.children.remove((epoch, process))
            log(f"epoch {epoch} (pid {process.pid}) exited with status {code}")
            if code != 0 and not self.stopping:
                # As Envoy's restarter: no half-restarted proxy; the service manager starts it afresh.
                log("an Envoy failed: stopping the others")
                self.status = code if code > 0 else 128 - code
                self.stopping = True
                self.signal_all(signal.SIGTERM)
        if self.pending_restart and len(self.children) == 1 and not self.stopping:
            self.pending_restart = False
            self.start_next_epoch()

    def hot_restart(self) -> None:
        if self.stopping:
            return
        if len(self.children) > 1:
            log(f"hot restart waits until epoch {self.children[0][0]} has drained and exited")
            self.pending_restart = True
            return
        self.start_next_epoch()

    def remove_shared_memory(self) -> None:
        """Envoy leaves its hot restart shared memory (/dev/shm/envoy_shared_memory_<base ID x 10>)
        behind when the last epoch exits; with a new dynamic base ID per start, remove it."""
        try:
            with open(self.base_id_path, encoding="utf-8") as handle:
                name = f"/dev/shm/envoy_shared_memory_{int(handle.read().strip()) * 10}"
            os.unlink(name)
        except (OSError, ValueError):
            pass

    def run(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
        copier = make_stdout_reopenable()
        self.start_next_epoch()
        while self.children:
            # A timeout as a safety net: a SIGCHLD merged with another one is still reaped.
            received = signal.sigtimedwait(HANDLED, 1.0)
            signum = received.si_signo if received else signal.SIGCHLD
            if signum == signal.SIGHUP:
                self.hot_restart()
            elif signum in (signal.SIGTERM, signal.SIGINT):
                log(f"{signal.Signals(signum).name}: stopping every Envoy")
                self.stopping = True
                self.pending_restart = False
                self.signal_all(signum)
            elif signum == signal.SIGUSR1:
                log("SIGUSR1: every Envoy reopens its access logs")
                self.signal_all(signum)
            self.reap()
        if copier:  # the last Envoy is gone: copy what it wrote last, up to the pipe's end
            os.close(1)
            copier.join(5)
        self.remove_shared_memory()
        return self.status


def copy_all(source: int, target: int) -> None:
    while data := os.read(source, 65536):
        while data:
            data = data[os.write(target, data):]


def make_stdout_reopenable() -> threading.Thread | None:
    """Give this process (and so every Envoy) a stdout its own user can open by name (see above).
    Called with the handled signals blocked: the copying thread must never receive them."""
    try:
        os.close(os.open("/dev/stdout", os.O_WRONLY | os.O_NONBLOCK))
        return None
    except PermissionError:
        pass
    except OSError:
        return None  # not a permission problem (no reader yet): nothing this can mend
    read_end, write_end = os.pipe()
    given = os.dup(1)
    os.dup2(write_end, 1)
    os.close(write_end)
    copier = threading.Thread(target=copy_all, args=(read_end, given), name="stdout", daemon=True)
    copier.start()
    log("stdout is a pipe this user may not reopen: Envoy writes to one of its own, copied to it")
    return copier


def private_folder_problem(folder: str) -> str | None:
    """Why the hot restart sockets may not live in this folder (None when they may)."""
    try:
        status = os.stat(folder)
    except OSError as error:
        return f"{folder}: {error.strerror}"
    if status.st_uid != os.geteuid():
        return f"{folder} belongs to uid {status.st_uid}, not to this proxy's user (uid {os.geteuid()})"
    if status.st_mode & 0o077:
        return f"{folder} has mode {status.st_mode & 0o777:04o}: other users could reach the hot restart socket (want 0700)"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-id-path", required=True, help="where epoch 0 writes the base ID the later epochs use")
    parser.add_argument("--socket-path", help="the hot restart sockets' name prefix, in a folder of the proxy user's own "
                        "(default: hot-restart beside --base-id-path)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- ENVOY [ARGS...]")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the Envoy command after --")
    os.makedirs(os.path.dirname(os.path.abspath(args.base_id_path)), mode=0o700, exist_ok=True)
    socket_path = os.path.abspath(args.socket_path or os.path.join(os.path.dirname(args.base_id_path), "hot-restart"))
    problem = private_folder_problem(os.path.dirname(socket_path))
    if problem:
        log(f"refusing to start: {problem}")
        return 1
    # Epoch 0 writes the base ID; a stale file from an earlier run must not be read before that.
    if os.path.exists(args.base_id_path):
        os.unlink(args.base_id_path)
    started = time.monotonic()
    status = Restarter(command, args.base_id_path, socket_path).run()
    log(f"exiting with status {status} after {time.monotonic() - started:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
