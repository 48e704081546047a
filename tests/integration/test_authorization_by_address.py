"""AuthorizationPolicy by address and host on real Envoy (issue 12): Istio's ipBlocks,
notIpBlocks, remoteIpBlocks and operation hosts, on a sidecar's HTTP and TCP inbound ports.

Loopback addresses stand in for different peers: the server sidecar listens on 127.0.0.1 and
clients connect from 127.0.0.1, 127.0.0.2, 127.0.0.3 (all of 127/8 is local on Linux).

- DENY ipBlocks [127.0.0.2]: that peer gets 403 on HTTP (its connection closed on TCP), even
  when it claims another address in X-Forwarded-For (ipBlocks is the direct peer).
- DENY remoteIpBlocks [10.0.0.0/8]: a request whose X-Forwarded-For names 10.1.2.3 gets 403
  (remoteIpBlocks is the original client: a sidecar takes it from X-Forwarded-For).
- DENY hosts [admin.example, "admin.example:*"] on the HTTP port: matched ignoring case, with
  or without port (the port keeps the rule off the TCP port: on TCP a DENY rule loses its
  HTTP-only fields and, as in Istio, would deny every connection).
- ALLOW ipBlocks [127.0.0.0/29] but notIpBlocks [127.0.0.3]: 127.0.0.3 and 127.0.0.9 get 403
  from the ALLOW filter; 127.0.0.1 gets 200.
"""

from __future__ import annotations

import http.client
import socket

import pytest

from tests.harness import free_offset, free_port
from tests.integration.test_authorization_holes import Server as MtlsServer

MESH = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: server, namespace: default}}
spec:
  hosts: [server.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}, {{number: 81, name: tcp, protocol: TCP}}]
  workloadSelector: {{labels: {{app: server}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: server, namespace: default, annotations: {{meshwright.io/port-offset: "{offset}"}}}}
spec: {{address: 127.0.0.1, ports: {{http: {http}, tcp: {tcp}}}, labels: {{app: server}}}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: server, namespace: default}}
spec:
  workloadSelector: {{labels: {{app: server}}}}
  ingress:
  - port: {{number: {http}, protocol: HTTP, name: http}}
    bind: 127.0.0.1
    defaultEndpoint: 127.0.0.1:{app}
  - port: {{number: {tcp}, protocol: TCP, name: tcp}}
    bind: 127.0.0.1
    defaultEndpoint: 127.0.0.1:{app}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: block, namespace: default}}
spec:
  selector: {{matchLabels: {{app: server}}}}
  action: DENY
  rules:
  - from: [{{source: {{ipBlocks: [127.0.0.2]}}}}]
  - from: [{{source: {{remoteIpBlocks: [10.0.0.0/8]}}}}]
  - to: [{{operation: {{hosts: [admin.example, "admin.example:*"], ports: ["{http}"]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: local-peers, namespace: default}}
spec:
  selector: {{matchLabels: {{app: server}}}}
  rules:
  - from: [{{source: {{ipBlocks: [127.0.0.0/29], notIpBlocks: [127.0.0.3]}}}}]
"""


class Server:
    def __init__(self, lab):
        offset = free_offset()
        self.http, self.tcp = free_port(), free_port()
        self.app = lab.backend("server", "server-1")
        lab.write_mesh(MESH.format(offset=offset, http=self.http, tcp=self.tcp, app=self.app.port))
        self.envoy = lab.proxy("server.default", 15000 + offset)

    def get(self, source: str, host: str = "server", headers: dict | None = None, port: int | None = None) -> int:
        """GET / from the local address source; the status, or 0 when the connection is
        closed without an answer (a TCP connection the network RBAC filter denied)."""
        connection = http.client.HTTPConnection("127.0.0.1", port or self.http, timeout=10, source_address=(source, 0))
        try:
            connection.request("GET", "/", headers={"Host": host, **(headers or {})})
            response = connection.getresponse()
            response.read()
            return response.status
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, socket.timeout):
            return 0
        finally:
            connection.close()

    def rbac(self, name: str) -> int:
        return self.envoy.stat(f"http.inbound_{self.http}.rbac.{name}")


@pytest.fixture
def server(lab):
    return Server(lab)


def test_ip_blocks_are_the_direct_peer(server):
    """127.0.0.2 is denied (403, counted by the DENY filter, never reaching the app), also when
    its X-Forwarded-For claims 127.0.0.1; 127.0.0.1 is let in."""
    before, denied = server.app.count, server.rbac("deny.denied")
    assert server.get("127.0.0.2") == 403
    assert server.get("127.0.0.2", headers={"X-Forwarded-For": "127.0.0.1"}) == 403
    assert server.rbac("deny.denied") == denied + 2
    assert server.app.count == before
    assert server.get("127.0.0.1") == 200
    assert server.app.count == before + 1


def test_remote_ip_blocks_are_the_original_client(server):
    """The same peer (127.0.0.1) is denied when X-Forwarded-For names a client in 10.0.0.0/8,
    and let in when it names one outside."""
    assert server.get("127.0.0.1", headers={"X-Forwarded-For": "10.1.2.3"}) == 403
    assert server.get("127.0.0.1", headers={"X-Forwarded-For": "192.0.2.10"}) == 200


def test_not_ip_blocks_in_an_allow_policy(server):
    """The ALLOW policy admits 127.0.0.0/29 except 127.0.0.3: 127.0.0.3 and 127.0.0.9 are
    refused by the ALLOW filter (allow.denied), 127.0.0.4 is let in."""
    denied = server.rbac("allow.denied")
    assert server.get("127.0.0.3") == 403
    assert server.get("127.0.0.9") == 403
    assert server.rbac("allow.denied") == denied + 2
    assert server.get("127.0.0.4") == 200


@pytest.mark.parametrize("host, status", [
    ("admin.example", 403), ("ADMIN.Example", 403), ("admin.example:8080", 403), ("Admin.Example:1", 403),
    ("admin.example.org", 200), ("server", 200),
], ids=["exact", "upper-case", "with-port", "upper-case-with-port", "longer-name", "other"])
def test_hosts_match_ignoring_case(server, host, status):
    assert server.get("127.0.0.1", host=host) == status


def test_ip_blocks_on_a_tcp_port(server):
    """On the TCP port the network RBAC filter closes 127.0.0.2's connection and 127.0.0.3's
    (not allowed); 127.0.0.1 reaches the app through the TCP proxy (the hosts rule names the
    HTTP port only)."""
    before = server.app.count
    assert server.get("127.0.0.2", port=server.tcp) == 0
    assert server.get("127.0.0.3", port=server.tcp) == 0
    assert server.app.count == before
    assert server.envoy.stat(f"inbound_{server.tcp}.deny.rbac.denied") == 1
    assert server.envoy.stat(f"inbound_{server.tcp}.allow.rbac.denied") == 1
    assert server.get("127.0.0.1", port=server.tcp, host="admin.example") == 200


SERVICE_ACCOUNTS = """
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reports, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  rules:
  - from: [{source: {serviceAccounts: [reports, ops/auditor]}}]
    to: [{operation: {paths: ["/sa/*"]}}]
"""


@pytest.mark.parametrize("spiffe_id, status", [
    ("spiffe://example.org/ns/default/sa/reports", 200),
    ("spiffe://example.org/ns/ops/sa/auditor", 200),
    ("spiffe://example.org/ns/default/sa/reports-v2", 403),
    ("spiffe://example.org/ns/ops/sa/reports", 403),
    ("spiffe://example.org/ns/default/sa/auditor", 403),
], ids=["name-in-policy-namespace", "namespace-and-name", "longer-name", "other-namespace", "name-without-its-namespace"])
def test_service_accounts_match_the_client_certificate(lab, spiffe_id, status):
    """serviceAccounts (Istio 1.25+) on the mTLS server of test_authorization_holes: NAME is in
    the policy's namespace, NAMESPACE/NAME elsewhere; a longer name or another namespace is
    not the account."""
    server = MtlsServer(lab, SERVICE_ACCOUNTS).start()
    assert server.get(server.client(spiffe_id), "/sa/report") == status
