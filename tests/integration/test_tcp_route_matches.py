"""VirtualService tcp routes' matches on real Envoy with real connections (HTTP carried by the
TCP proxies): the gateway's TCP server takes the route whose match names the gateway (db v2),
a sidecar whose labels a mesh match names takes that route (v2), another sidecar of the
namespace the service itself (either version)."""

from __future__ import annotations

from tests.harness import free_offset, free_port, request

MESH = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: db, namespace: shop}}
spec:
  hosts: [db.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 5432, name: tcp, protocol: TCP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{tcp: {v1}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{tcp: {v2}}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: db, namespace: shop}}
spec:
  host: db.shop.svc.cluster.local
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db, namespace: shop}}
spec:
  hosts: [db.shop.svc.cluster.local]
  gateways: [mesh, db-gateway]
  tcp:
  - match: [{{gateways: [db-gateway], port: {gateway_port}}}]
    route: [{{destination: {{host: db.shop.svc.cluster.local, subset: v2}}}}]
  - match: [{{gateways: [mesh], sourceLabels: {{app: reports}}}}]
    route: [{{destination: {{host: db.shop.svc.cluster.local, subset: v2}}}}]
  - match: [{{gateways: [mesh]}}]
    route: [{{destination: {{host: db.shop.svc.cluster.local, subset: v1}}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: db-gateway, namespace: shop, annotations: {{meshwright.io/port-offset: "{gateway_offset}"}}}}
spec:
  servers:
  - port: {{number: {gateway_port}, name: tcp, protocol: TCP}}
    bind: 127.0.0.1
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: shop}}
spec:
  egress:
  - port: {{number: {egress_port}, protocol: TCP, name: tcp}}
    hosts: ["./db.shop.svc.cluster.local"]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: reports, namespace: shop, annotations: {{meshwright.io/port-offset: "{reports_offset}"}}}}
spec: {{address: 127.0.0.1, labels: {{app: reports}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: orders, namespace: shop, annotations: {{meshwright.io/port-offset: "{orders_offset}"}}}}
spec: {{address: 127.0.0.1, labels: {{app: orders}}}}
"""


def distinct_offsets(count: int) -> list[int]:
    offsets: list[int] = []
    while len(offsets) < count:
        offset = free_offset()
        if all(abs(offset - other) >= 100 for other in offsets):
            offsets.append(offset)
    return offsets


def test_each_proxy_takes_the_tcp_route_its_matches_give_it(lab):
    v1, v2 = lab.backend("db", "db-v1", version="v1"), lab.backend("db", "db-v2", version="v2")
    gateway_offset, reports_offset, orders_offset = distinct_offsets(3)
    gateway_port, egress_port = free_port(), free_port()
    lab.write_mesh(MESH.format(v1=v1.port, v2=v2.port, gateway_port=gateway_port, egress_port=egress_port,
                               gateway_offset=gateway_offset, reports_offset=reports_offset, orders_offset=orders_offset))
    lab.proxy("db-gateway.shop", 15000 + gateway_offset)
    lab.proxy("reports.shop", 15000 + reports_offset)
    # reports and orders share the egress port number: start one sidecar at a time.
    assert request(gateway_port, "/q")[1]["instance"] == "db-v2"
    assert {request(egress_port, "/q")[1]["instance"] for _ in range(4)} == {"db-v2"}
    lab.envoys.pop().stop()
    lab.proxy("orders.shop", 15000 + orders_offset)
    assert {request(egress_port, "/q")[1]["instance"] for _ in range(4)} == {"db-v1"}
