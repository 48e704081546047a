"""AuthorizationPolicy action CUSTOM with a gRPC external authorizer (the MeshConfig's
envoyExtAuthzGrpc provider, Istio's sample-ext-authz-grpc) on real Envoy, with a local
authorizer speaking Envoy's Authorization service: it is asked about the HTTP requests the
policy's rules name (allowing those whose x-ext-authz header is "allow") and, as in Istio,
about the TCP connections they name (allowed while it says so)."""

from __future__ import annotations

import socket
import threading
from concurrent import futures

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2, status_pb2

from tests.harness import free_offset, free_port, request

MESH = """
apiVersion: meshwright.io/v1alpha1
kind: MeshConfig
metadata: {{name: mesh}}
spec:
  extensionProviders:
  - name: "sample-ext-authz-grpc"
    envoyExtAuthzGrpc:
      service: "ext-authz.foo.svc.cluster.local"
      port: "9000"
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ext-authz, namespace: foo}}
spec:
  hosts: [ext-authz.foo.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9000, name: grpc, protocol: GRPC}}]
  endpoints: [{{address: 127.0.0.1, ports: {{grpc: {authorizer}}}}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: httpbin, namespace: foo, annotations: {{meshwright.io/port-offset: "{offset}"}}}}
spec: {{address: 127.0.0.1, labels: {{app: httpbin}}}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: httpbin, namespace: foo}}
spec:
  workloadSelector: {{labels: {{app: httpbin}}}}
  ingress:
  - port: {{number: {http_inbound}, protocol: HTTP, name: http}}
    bind: 127.0.0.1
    defaultEndpoint: 127.0.0.1:{app}
  - port: {{number: {tcp_inbound}, protocol: TCP, name: tcp}}
    bind: 127.0.0.1
    defaultEndpoint: 127.0.0.1:{app}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ext-authz
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: CUSTOM
  provider:
    name: sample-ext-authz-grpc
  rules:
  - to:
    - operation:
        paths: ["/headers"]
  - to:
    - operation:
        ports: ["{tcp_inbound}"]
"""


class Authorizer(external_auth_pb2_grpc.AuthorizationServicer):
    """Envoy's Authorization service: HTTP checks by the x-ext-authz header, TCP checks by
    allow_tcp; every check is recorded (its HTTP path, or "tcp")."""

    def __init__(self):
        self.checks, self.allow_tcp, self.lock = [], True, threading.Lock()

    def Check(self, check, context):
        http = check.attributes.request.http
        with self.lock:
            self.checks.append(http.path or "tcp")
        allowed = http.headers.get("x-ext-authz") == "allow" if http.path else self.allow_tcp
        return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK if allowed else code_pb2.PERMISSION_DENIED))


@pytest.fixture
def mesh(lab):
    authorizer = Authorizer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(authorizer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    app = lab.backend("httpbin", "httpbin-1")
    offset, http_inbound, tcp_inbound = free_offset(), free_port(), free_port()
    lab.write_mesh(MESH.format(authorizer=port, offset=offset, http_inbound=http_inbound, tcp_inbound=tcp_inbound, app=app.port))
    lab.proxy("httpbin.foo", 15000 + offset)
    yield authorizer, app, http_inbound, tcp_inbound
    server.stop(0)


def tcp_get(port: int) -> bytes:
    """An HTTP request carried over the TCP port: the answer's first bytes, b"" if closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /raw HTTP/1.1\r\nHost: httpbin\r\nConnection: close\r\n\r\n")
        try:
            return sock.recv(12)
        except ConnectionResetError:
            return b""


def test_the_grpc_authorizer_decides_the_http_requests_the_rules_name(mesh):
    authorizer, app, http_inbound, _ = mesh
    assert request(http_inbound, "/headers", host="httpbin", headers={"x-ext-authz": "allow"})[0] == 200
    assert request(http_inbound, "/headers", host="httpbin", headers={"x-ext-authz": "deny"})[0] == 403
    assert request(http_inbound, "/ip", host="httpbin")[0] == 200  # not named: not asked
    assert (authorizer.checks, app.count) == (["/headers", "/headers"], 2)


def test_the_grpc_authorizer_decides_the_tcp_connections_the_rules_name(mesh):
    authorizer, app, _, tcp_inbound = mesh
    assert tcp_get(tcp_inbound) == b"HTTP/1.1 200"
    authorizer.allow_tcp = False
    assert tcp_get(tcp_inbound) == b""
    assert authorizer.checks == ["tcp", "tcp"] and app.count == 1
