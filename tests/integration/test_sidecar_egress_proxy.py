"""Sidecar outboundTrafficPolicy.egressProxy on real Envoy with real traffic: a sidecar with
an explicit HTTP egress listener sends requests for hosts the mesh knows to their services,
and requests for any other Host to the egress proxy (here an app standing in for an egress
gateway), Host and path untouched; the same sidecar without egressProxy answers 404."""

from __future__ import annotations

from tests.harness import free_offset, free_port, request

MESH = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: istio-egressgateway, namespace: istio-system}}
spec:
  hosts: [istio-egressgateway.istio-system.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {egress}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: payments, namespace: shop}}
spec:
  hosts: [payments.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {payments}}}}}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: shop}}
spec:
  egress:
  - port: {{number: {listener}, protocol: HTTP, name: http}}
    hosts: ["./*", "istio-system/*"]
  {policy}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: orders
  namespace: shop
  annotations: {{meshwright.io/port-offset: "{offset}"}}
spec: {{address: 127.0.0.1, labels: {{app: orders}}}}
"""

EGRESS_PROXY = """outboundTrafficPolicy:
    mode: ALLOW_ANY
    egressProxy:
      host: istio-egressgateway.istio-system.svc.cluster.local
      port: {number: 80}"""


def start(lab, policy: str):
    egress, payments = lab.backend("istio-egressgateway", "egress-1"), lab.backend("payments", "payments-1")
    offset, listener = free_offset(), free_port()
    lab.write_mesh(MESH.format(egress=egress.port, payments=payments.port, listener=listener, offset=offset, policy=policy))
    lab.proxy("orders.shop", 15000 + offset)
    return egress, payments, listener


def test_unknown_hosts_go_to_the_egress_proxy_and_known_ones_to_their_service(lab):
    egress, payments, listener = start(lab, EGRESS_PROXY)
    status, body, _ = request(listener, "/v1/charges", host="api.stripe.example")
    assert (status, body["instance"], body["path"]) == (200, "egress-1", "/v1/charges")
    assert egress.requests[-1]["headers"]["host"] == "api.stripe.example"
    status, body, _ = request(listener, "/pay", host="payments")
    assert (status, body["instance"]) == (200, "payments-1")
    assert (egress.count, payments.count) == (1, 1)


def test_without_egress_proxy_an_unknown_host_gets_404(lab):
    egress, _, listener = start(lab, "")
    status, _, _ = request(listener, "/v1/charges", host="api.stripe.example")
    assert status == 404 and egress.count == 0
