#!/usr/bin/python3
"""Bounded constant load from a Molecule host (standard library only; the tests copy it to a host
and run it there under systemd-run): GET `url` at `rate` requests a second until a stop file
appears, or until the request or time budget runs out, and write the counts to a JSON file.

It behaves as a well-behaved HTTP/1.1 client, as tests/constant_load.py does on the controller:
it keeps its connection alive and opens a new one when the server answers `Connection: close`
(what a draining Envoy sends). Any answer but a 200 - a 5xx, a reset, a refused connection, a
timeout - counts as failed, with the first ones kept for the report.

    constant_load.py URL --rate 25 --max-seconds 300 --out /tmp/load.json --stop /tmp/load.stop
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import time
import urllib.parse


def write(path: str, counts: dict) -> None:
    # Atomically: the test may read the file while the load runs.
    with open(path + ".tmp", "w") as handle:
        json.dump(counts, handle, sort_keys=True)
    os.replace(path + ".tmp", path)


def failed(counts: dict, what: str) -> None:
    counts["failed"] += 1
    if len(counts["failures"]) < 20:
        counts["failures"].append(f"{time.strftime('%H:%M:%S')} {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, default=25)
    parser.add_argument("--max-seconds", type=float, default=300)
    parser.add_argument("--max-requests", type=int, default=0, help="default: rate x max-seconds")
    parser.add_argument("--out", required=True)
    parser.add_argument("--stop", required=True, help="the load stops when this file exists")
    args = parser.parse_args()
    url = urllib.parse.urlsplit(args.url)
    path = url.path + ("?" + url.query if url.query else "")
    max_requests = args.max_requests or int(args.rate * args.max_seconds)
    counts = {"url": args.url, "succeeded": 0, "failed": 0, "failures": [], "done": False, "stopped_by": None}
    started = time.monotonic()
    deadline = started + args.max_seconds
    interval = 1.0 / args.rate
    due = started
    last_written = 0.0
    connection = None
    while True:
        now = time.monotonic()
        if os.path.exists(args.stop):
            counts["stopped_by"] = "stop file"
        elif now >= deadline:
            counts["stopped_by"] = "time budget"
        elif counts["succeeded"] + counts["failed"] >= max_requests:
            counts["stopped_by"] = "request budget"
        if counts["stopped_by"]:
            break
        try:
            if connection is None:
                connection = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=10)
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
            if response.status == 200:
                counts["succeeded"] += 1
            else:
                failed(counts, f"HTTP {response.status}: {body[:200]!r}")
            if (response.getheader("connection") or "").lower() == "close":
                connection.close()
                connection = None
        except (OSError, http.client.HTTPException) as error:
            failed(counts, f"{type(error).__name__}: {error}")
            if connection is not None:
                connection.close()
            connection = None
        if now - last_written >= 1:
            counts["seconds"] = round(now - started, 1)
            write(args.out, counts)
            last_written = now
        due += interval
        time.sleep(max(0.0, due - time.monotonic()))
    if connection is not None:
        connection.close()
    counts["done"] = True
    counts["seconds"] = round(time.monotonic() - started, 1)
    write(args.out, counts)


if __name__ == "__main__":
    main()
