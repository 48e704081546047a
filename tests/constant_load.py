"""Bounded constant load on 127.0.0.1: a thread sends GET requests at a fixed rate until stopped
(or until its request or time budget runs out) and records every answer that is not a 200.

It behaves as a well-behaved HTTP/1.1 client: it keeps its connection alive and opens a new one
when the server answers `Connection: close` (what a draining Envoy sends). A request that fails
in any way - a 5xx, a reset, a refused connection, a timeout - counts as failed.
"""

from __future__ import annotations

import http.client
import threading
import time


class ConstantLoad:
    def __init__(self, port: int, path: str = "/", rate: float = 50, host: str = "", max_seconds: float = 900,
                 new_connection_each: bool = False):
        self.port, self.path, self.rate, self.host = port, path, rate, host
        self.max_requests = int(rate * max_seconds)
        self.new_connection_each = new_connection_each
        self.succeeded = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def sent(self) -> int:
        return self.succeeded + len(self.failures)

    def __enter__(self) -> "ConstantLoad":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        interval = 1.0 / self.rate
        due = time.monotonic()
        connection = None
        headers = {"Host": self.host} if self.host else {}
        while not self._stop.is_set() and self.sent < self.max_requests:
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                connection.request("GET", self.path, headers=headers)
                response = connection.getresponse()
                body = response.read()
                if response.status == 200:
                    self.succeeded += 1
                else:
                    self.failures.append(f"{time.strftime('%H:%M:%S')} HTTP {response.status}: {body[:200]!r}")
                if self.new_connection_each or (response.getheader("connection") or "").lower() == "close":
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as error:
                self.failures.append(f"{time.strftime('%H:%M:%S')} {error!r}")
                if connection is not None:
                    connection.close()
                connection = None
            due += interval
            self._stop.wait(max(0.0, due - time.monotonic()))
        if connection is not None:
            connection.close()
