#!/usr/bin/env python3
"""A tiny HTTP app for demos and tests: answers JSON naming its service, instance and version.

With --call, a request whose path starts with --call-prefix is also sent on to another
service through this app's sidecar (its egress listener), and that answer is included:
this is how order-service calls payment-service in the seed demo. Standard library only.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import urllib.parse

# Headers a mesh app must copy from its request to its outgoing calls, for tracing.
PROPAGATED = ("x-request-id", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags", "b3", "traceparent", "tracestate")


def make_handler(args):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: without TCP_NODELAY each answer would
        # wait for the client's delayed ACK (about 40 ms).
        disable_nagle_algorithm = True

        def do_GET(self):
            answer = {"service": args.service, "instance": args.instance, "version": args.version, "path": self.path}
            status = 200
            if args.call and self.path.startswith(args.call_prefix):
                target = urllib.parse.urlsplit(args.call)
                headers = {"Host": args.call_host}
                headers.update({name: self.headers[name] for name in PROPAGATED if self.headers.get(name)})
                connection = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
                try:
                    connection.request("GET", target.path or "/", headers=headers)
                    response = connection.getresponse()
                    raw = response.read()
                    status = 200 if response.status == 200 else 502
                    try:
                        answer["upstream"] = json.loads(raw)
                    except ValueError:
                        answer["upstream"] = {"status": response.status, "body": raw.decode(errors="replace")[:200]}
                    answer["upstream_status"] = response.status
                except OSError as error:
                    status = 502
                    answer["upstream_error"] = str(error)
                finally:
                    connection.close()
            body = (json.dumps(answer, sort_keys=True) + "\n").encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *unused):
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--service", required=True)
    parser.add_argument("--instance", required=True)
    parser.add_argument("--version", default="v1")
    parser.add_argument("--listen", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--call", help="URL of the sidecar egress listener to call, e.g. http://127.0.0.1:15201/payment")
    parser.add_argument("--call-host", default="", help="Host header of the call: the mesh name of the service")
    parser.add_argument("--call-prefix", default="/", help="only requests under this path make the call")
    args = parser.parse_args()
    server = http.server.ThreadingHTTPServer((args.listen, args.port), make_handler(args))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
