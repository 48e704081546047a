"""A Gateway's selector picks gateway workloads in any namespace, as Istio's does by default
(PILOT_SCOPE_GATEWAY_TO_NAMESPACE=false), on real Envoy with real traffic.

Istio's Bookinfo shape: the Gateway and its VirtualService live in the application's namespace
(`bookinfo`), the ingress gateway workload (`istio: ingressgateway`) in `istio-system`. That
workload's proxy serves the Gateway; no standalone proxy is made for it.
"""

from __future__ import annotations

from tests.harness import free_offset, free_port, request

MESH = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: productpage, namespace: bookinfo}}
spec:
  hosts: [productpage.bookinfo.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {productpage}}}}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: ingressgateway
  namespace: istio-system
  annotations: {{meshwright.io/port-offset: "{offset}"}}
spec: {{address: 127.0.0.1, labels: {{istio: ingressgateway}}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: bookinfo-gateway, namespace: bookinfo}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {http_port}, name: http, protocol: http}}
    bind: 127.0.0.1
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bookinfo, namespace: bookinfo}}
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http:
  - match: [{{uri: {{exact: /productpage}}}}]
    route:
    - destination: {{host: productpage, port: {{number: 9080}}}}
"""


def test_the_gateway_workload_in_istio_system_serves_a_gateway_of_another_namespace(lab):
    productpage = lab.backend("productpage", "productpage-v1")
    offset, http_port = free_offset(), free_port()
    lab.write_mesh(MESH.format(productpage=productpage.port, offset=offset, http_port=http_port))
    lab.proxy("ingressgateway.istio-system", 15000 + offset)

    status, body, _ = request(http_port, "/productpage", host="bookinfo.example.com")
    assert (status, body["service"]) == (200, "productpage")
    assert request(http_port, "/other", host="bookinfo.example.com")[0] == 404
