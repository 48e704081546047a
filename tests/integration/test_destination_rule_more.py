"""DestinationRule fields past the basics, on real Envoy with real traffic: consistent hash on
a query parameter (ring hash and Maglev) keeps a user on one endpoint; a rule's
workloadSelector gives that hashing to the client it picks only; tcp idleTimeout closes an
idle TCP connection; local-origin errors (a refused connection) eject an endpoint; the
deprecated fault delay.percent delays requests.

Four instances of `catalog` on 127.0.0.1 (one port each); two clients, `frontend` and
`batch`, each an Envoy with explicit listeners (a Sidecar's egress on free ports)."""

from __future__ import annotations

import socket
import time

import pytest

from tests.harness import free_offset, free_port, request

INSTANCES = 4
USERS = [f"user-{n}" for n in range(24)]

MESH = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: catalog, namespace: shop}}
spec:
  hosts: [catalog.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints:
{endpoints}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: db, namespace: shop}}
spec:
  hosts: [db.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 5432, name: tcp, protocol: TCP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{tcp: {db_port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: shop}}
spec:
  egress:
  - port: {{number: {http_port}, protocol: HTTP, name: http}}
    bind: 127.0.0.1
    hosts: ["./catalog.shop.svc.cluster.local"]
  - port: {{number: {tcp_port}, protocol: TCP, name: tcp}}
    bind: 127.0.0.1
    hosts: ["./db.shop.svc.cluster.local"]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: {client}
  namespace: shop
  annotations: {{meshwright.io/port-offset: "{offset}"}}
spec: {{address: 127.0.0.1, labels: {{app: {client}}}}}
"""


def rule(text: str) -> str:
    return "\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n" + text


class Client:
    """One client proxy and its listener ports."""

    def __init__(self, lab, name: str, extra: str, db_port: int = 9):
        self.http_port, self.tcp_port, offset = free_port(), free_port(), free_offset()
        endpoints = "\n".join(f"  - {{address: 127.0.0.1, ports: {{http: {b.port}}}}}" for b in lab.catalog)
        lab.write_mesh(MESH.format(endpoints=endpoints, db_port=db_port, http_port=self.http_port, tcp_port=self.tcp_port,
                                   client=name, offset=offset) + extra)
        self.envoy = lab.proxy(f"{name}.shop", 15000 + offset)

    def instance_for(self, path: str) -> str:
        status, body, _ = request(self.http_port, path, host="catalog.shop.svc.cluster.local")
        assert status == 200, (status, body)
        return body["instance"]


@pytest.fixture
def catalog(lab):
    lab.catalog = [lab.backend("catalog", f"catalog-{n}") for n in range(INSTANCES)]
    return lab


def instances_per_user(client: Client, repeats: int = 4) -> dict[str, set[str]]:
    return {user: {client.instance_for(f"/item?user={user}") for _ in range(repeats)} for user in USERS}


@pytest.mark.parametrize("algorithm", ["ringHash: {minimumRingSize: 1024}", "maglev: {tableSize: 65537}"])
def test_a_query_parameter_keeps_each_user_on_one_instance(catalog, algorithm):
    client = Client(catalog, "frontend", rule(f"""\
metadata: {{name: catalog, namespace: shop}}
spec:
  host: catalog
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpQueryParameterName: user
        {algorithm}
"""))
    seen = instances_per_user(client)
    assert all(len(instances) == 1 for instances in seen.values()), seen
    # Different users are spread over the instances, not all sent to one.
    assert len(set().union(*seen.values())) >= 2, seen


def test_a_rule_with_a_workload_selector_hashes_for_the_client_it_picks_only(catalog):
    rules = rule("""\
metadata: {name: catalog, namespace: shop}
spec:
  host: catalog
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
""") + rule("""\
metadata: {name: catalog-frontend, namespace: shop}
spec:
  host: catalog
  workloadSelector: {matchLabels: {app: frontend}}
  trafficPolicy: {loadBalancer: {consistentHash: {httpQueryParameterName: user}}}
""")
    frontend = Client(catalog, "frontend", rules)
    assert all(len(instances) == 1 for instances in instances_per_user(frontend).values())
    # batch gets the namespace's rule: round robin, one user's requests go everywhere.
    batch = Client(catalog, "batch", rules)
    assert {batch.instance_for("/item?user=user-1") for _ in range(2 * INSTANCES)} == {f"catalog-{n}" for n in range(INSTANCES)}


def test_tcp_idle_timeout_closes_an_idle_connection(catalog):
    """An idle TCP connection through the tcp_proxy is closed after the rule's idleTimeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    try:
        client = Client(catalog, "frontend", rule("""\
metadata: {name: db, namespace: shop}
spec:
  host: db
  trafficPolicy: {connectionPool: {tcp: {idleTimeout: 1s}}}
"""), db_port=server.getsockname()[1])
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", client.tcp_port), timeout=10) as connection:
            accepted, _ = server.accept()
            with accepted:
                connection.sendall(b"ping")
                assert accepted.recv(4) == b"ping"
                # Nothing more is sent either way: Envoy closes both sides at the idle timeout.
                assert connection.recv(16) == b""
        elapsed = time.monotonic() - started
        assert 0.9 <= elapsed < 5, elapsed
        assert client.envoy.stat("tcp.outbound_" + str(client.tcp_port) + ".idle_timeout") == 1
    finally:
        server.close()


def test_fault_delay_percent_delays_every_request_at_100(catalog):
    client = Client(catalog, "frontend", """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: catalog, namespace: shop}
spec:
  hosts: [catalog]
  http:
  - fault: {delay: {percent: 100, fixedDelay: 0.5s}}
    route: [{destination: {host: catalog}}]
""")
    started = time.monotonic()
    client.instance_for("/")
    assert time.monotonic() - started >= 0.5
    assert client.envoy.stat("http.outbound_" + str(client.http_port) + ".fault.delays_injected") == 1


def test_local_origin_failures_eject_an_endpoint_that_refuses_connections(lab):
    """One instance's port is closed: with splitExternalLocalOriginErrors and
    consecutiveLocalOriginFailures 1, its first refused connection ejects it (counted as a
    local-origin ejection); retries (Istio's default, on connect-failure) answer every call."""
    lab.catalog = [lab.backend("catalog", "catalog-0")]
    closed = free_port()
    client = Client(lab, "frontend", rule("""\
metadata: {name: catalog, namespace: shop}
spec:
  host: catalog
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection:
      splitExternalLocalOriginErrors: true
      consecutiveLocalOriginFailures: 1
      interval: 1s
      baseEjectionTime: 30s
      maxEjectionPercent: 100
"""))
    # The second endpoint: a port nothing listens on.
    lab.write_mesh(open(lab.mesh_path).read().replace("  endpoints:\n", f"  endpoints:\n  - {{address: 127.0.0.1, ports: {{http: {closed}}}}}\n", 1))
    lab.rerender("frontend.shop")
    cluster = "outbound|8080||catalog.shop.svc.cluster.local"
    deadline = time.monotonic() + 10
    while client.envoy.stat(f"cluster.{cluster}.membership_total") != 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [client.instance_for("/") for _ in range(6)] == ["catalog-0"] * 6
    assert client.envoy.cluster_stat(cluster, "outlier_detection.ejections_enforced_consecutive_local_origin_failure") == 1
    assert client.envoy.cluster_stat(cluster, "upstream_cx_connect_fail") == 1
