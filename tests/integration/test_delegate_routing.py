"""VirtualService delegation (Istio's example), on real Envoy with real traffic: an ingress
gateway's root VirtualService delegates /productpage and /reviews to the teams' VirtualServices
without hosts; their routes decide within what the root hands them."""

from __future__ import annotations

from tests.harness import free_offset, free_port, request

MESH = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: mygateway
  namespace: default
  annotations: {{meshwright.io/port-offset: "{offset}"}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: http, protocol: HTTP}}
    bind: 127.0.0.1
    hosts: [bookinfo.com]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: productpage, namespace: nsa}}
spec:
  hosts: [productpage.nsa.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {productpage_v1}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{http: {productpage_v2}}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: productpage, namespace: nsa}}
spec:
  host: productpage.nsa.svc.cluster.local
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: nsb}}
spec:
  hosts: [reviews.nsb.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {reviews}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bookinfo, namespace: default}}
spec:
  hosts: [bookinfo.com]
  gateways: [mygateway]
  http:
  - match:
    - uri: {{prefix: /productpage}}
    delegate: {{name: productpage, namespace: nsa}}
  - match:
    - uri: {{prefix: /reviews}}
    delegate: {{name: reviews, namespace: nsb}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: productpage, namespace: nsa}}
spec:
  http:
  - match:
    - uri: {{prefix: /productpage/v2/}}
    route:
    - destination: {{host: productpage.nsa.svc.cluster.local, subset: v2}}
  - match:
    - uri: {{prefix: /elsewhere}}
    route:
    - destination: {{host: reviews.nsb.svc.cluster.local}}
  - route:
    - destination: {{host: productpage.nsa.svc.cluster.local, subset: v1}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: nsb}}
spec:
  http:
  - match:
    - headers: {{end-user: {{exact: jason}}}}
    directResponse: {{status: 200, body: {{string: "jason's reviews"}}}}
  - route:
    - destination: {{host: reviews.nsb.svc.cluster.local}}
"""


def test_the_root_hands_each_prefix_to_its_delegate(lab):
    v1, v2 = lab.backend("productpage", "productpage-v1", "v1"), lab.backend("productpage", "productpage-v2", "v2")
    reviews = lab.backend("reviews", "reviews-1")
    offset, port = free_offset(), free_port()
    lab.write_mesh(MESH.format(offset=offset, port=port, productpage_v1=v1.port, productpage_v2=v2.port, reviews=reviews.port))
    lab.proxy("mygateway.default", 15000 + offset)
    answers = {}
    for path, headers in (("/productpage", {}), ("/productpage/v2/x", {}), ("/reviews/1", {}), ("/reviews/1", {"end-user": "jason"})):
        status, body, _ = request(port, path, host="bookinfo.com", headers=headers)
        answers[path, tuple(headers.values())] = (status, body.get("instance") or body.get("raw"))
    assert answers == {
        ("/productpage", ()): (200, "productpage-v1"),
        ("/productpage/v2/x", ()): (200, "productpage-v2"),
        ("/reviews/1", ()): (200, "reviews-1"),
        ("/reviews/1", ("jason",)): (200, "jason's reviews"),
    }
    # The delegate's /elsewhere is outside the root's /productpage: Istio leaves it out, and
    # nothing else of the root matches it.
    status, _, _ = request(port, "/elsewhere", host="bookinfo.com")
    assert status == 404
    assert reviews.count == 1
