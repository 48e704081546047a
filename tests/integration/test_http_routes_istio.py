"""VirtualService matches that depend on where routes are built, and the newer http actions,
on real Envoy with real traffic.

One VirtualService for `web` (namespace shop), bound to the sidecars and to an ingress gateway
with two HTTP ports: /admin answers 403 only on the gateway's first port (match.port); /old
redirects only at the gateway (match.gateways), to the port the request came in on
(derivePort FROM_REQUEST_PORT); /preview answers only clients in namespace shop
(sourceNamespace); /scheme answers plain-HTTP requests (scheme); /grpc aborts gRPC calls with
UNAVAILABLE; everything else goes to web and is mirrored to two shadows.
"""

from __future__ import annotations

import time

from tests.harness import free_offset, free_port, request

MESH = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web, namespace: shop}}
spec:
  hosts: [web.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {web}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: shadow-a, namespace: shop}}
spec:
  hosts: [shadow-a.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {shadow_a}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: shadow-b, namespace: shop}}
spec:
  hosts: [shadow-b.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {shadow_b}}}}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: storefront
  namespace: shop
  annotations: {{meshwright.io/port-offset: "{storefront}"}}
spec: {{address: 127.0.0.1, labels: {{app: storefront}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: partner
  namespace: partners
  annotations: {{meshwright.io/port-offset: "{partner}"}}
spec: {{address: 127.0.0.1, labels: {{app: partner}}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: edge
  namespace: istio-system
  annotations: {{meshwright.io/port-offset: "{edge}"}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {admin_port}, name: http-admin, protocol: HTTP}}
    bind: 127.0.0.1
    hosts: ["shop/*"]
  - port: {{number: {public_port}, name: http, protocol: HTTP}}
    bind: 127.0.0.1
    hosts: ["shop/*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: shop}}
spec:
  hosts: [web.shop.svc.cluster.local]
  gateways: [mesh, istio-system/edge]
  http:
  - match: [{{port: {admin_port}, uri: {{prefix: /admin}}}}]
    directResponse: {{status: 403, body: {{string: "admin only inside"}}}}
  - match: [{{gateways: [istio-system/edge], uri: {{prefix: /old}}}}]
    redirect: {{uri: /new, derivePort: FROM_REQUEST_PORT}}
  - match: [{{sourceNamespace: shop, uri: {{prefix: /preview}}}}]
    directResponse: {{status: 200, body: {{string: "preview for shop"}}}}
  - match: [{{scheme: {{exact: http}}, uri: {{prefix: /scheme}}}}]
    directResponse: {{status: 200, body: {{string: "plain http"}}}}
  - match: [{{uri: {{prefix: /grpc}}}}]
    fault: {{abort: {{grpcStatus: UNAVAILABLE}}}}
    route:
    - destination: {{host: web.shop.svc.cluster.local}}
  - match: [{{statPrefix: web-default}}]
    route:
    - destination: {{host: web.shop.svc.cluster.local}}
    mirrors:
    - destination: {{host: shadow-a.shop.svc.cluster.local}}
    - destination: {{host: shadow-b.shop.svc.cluster.local}}
      percentage: {{value: 100}}
"""

WEB = "web.shop.svc.cluster.local"


PARTNERS_OWN = """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: partners}}
spec:
  hosts: [web.shop.svc.cluster.local]
  exportTo: ["."]
  http:
  - directResponse: {{status: 200, body: {{string: "the partners' own route"}}}}
"""


def start(lab, proxies: tuple[str, ...], mesh: str = MESH):
    """The backends, the mesh, and Envoy for each proxy named; {proxy: port to call}."""
    lab.envoy_of = {}
    web, shadow_a, shadow_b = lab.backend("web", "web-1"), lab.backend("shadow-a", "a-1"), lab.backend("shadow-b", "b-1")
    offsets = {"storefront": free_offset()}
    offsets["partner"] = free_offset((offsets["storefront"],))
    offsets["edge"] = free_offset((offsets["storefront"], offsets["partner"]))
    ports = {"admin_port": free_port(), "public_port": free_port()}
    lab.write_mesh(mesh.format(web=web.port, shadow_a=shadow_a.port, shadow_b=shadow_b.port, **offsets, **ports))
    for proxy in proxies:
        lab.envoy_of[proxy] = lab.proxy(proxy, 15000 + offsets[proxy.split(".")[0]])
    calls = {"storefront.shop": 15001 + offsets["storefront"], "partner.partners": 15001 + offsets["partner"]}
    return calls, ports, (web, shadow_a, shadow_b)


def text(body: dict) -> str:
    return body.get("raw", "")


def test_a_port_match_and_a_gateways_match_apply_only_where_they_say(lab):
    _, ports, (web, _, _) = start(lab, ("edge.istio-system",))
    admin, public = ports["admin_port"], ports["public_port"]
    status, body, _ = request(admin, "/admin/users", host=WEB)
    assert (status, text(body)) == (403, "admin only inside")
    status, body, _ = request(public, "/admin/users", host=WEB)
    assert (status, body["service"], body["path"]) == (200, "web", "/admin/users")
    # The redirect names the port the request came in on.
    status, _, headers = request(public, "/old/page", host=WEB)
    assert (status, headers["location"]) == (301, f"http://{WEB}:{public}/new")
    # sourceNamespace shop: the gateway (namespace istio-system) is not a client of shop.
    status, body, _ = request(public, "/preview", host=WEB)
    assert (status, body["path"]) == (200, "/preview")
    assert [r["path"] for r in web.requests] == ["/admin/users", "/preview"]


def test_source_namespace_scheme_grpc_abort_and_mirrors_at_sidecars(lab):
    calls, _, (web, shadow_a, shadow_b) = start(lab, ("storefront.shop", "partner.partners"))
    shop, partners = calls["storefront.shop"], calls["partner.partners"]
    status, body, _ = request(shop, "/preview", host=WEB)
    assert (status, text(body)) == (200, "preview for shop")
    status, body, _ = request(partners, "/preview", host=WEB)
    assert (status, body["service"]) == (200, "web")
    # Sidecars: /admin is matched on the gateway's admin port only; /old only at the gateway.
    for path in ("/admin", "/old"):
        status, body, _ = request(shop, path, host=WEB)
        assert (status, body["path"]) == (200, path)
    status, body, _ = request(shop, "/scheme", host=WEB)
    assert (status, text(body)) == (200, "plain http")
    status, _, headers = request(shop, "/grpc/Check", host=WEB, method="POST", headers={"content-type": "application/grpc"})
    assert (status, headers["grpc-status"]) == (200, "14")
    # Every request the default route carries is copied to both shadows.
    deadline = time.monotonic() + 5
    while (shadow_a.count < web.count or shadow_b.count < web.count) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [r["path"] for r in web.requests] == ["/preview", "/admin", "/old"]  # the aborted call never reached web
    assert [r["path"] for r in shadow_a.requests] == [r["path"] for r in shadow_b.requests] == [r["path"] for r in web.requests]
    assert {r["headers"]["host"] for r in shadow_a.requests} == {f"{WEB}-shadow"}
    # The default route's own statistics, under its statPrefix.
    counted = {name: value for name, value in lab.envoy_of["storefront.shop"].stats().items() if ".route.web-default.upstream_rq_completed" in name}
    assert list(counted.values()) == [2], counted  # /admin and /old from storefront


def test_export_to_gives_each_namespace_its_own_virtual_service(lab):
    """shop's VirtualService exported to shop and the gateway's namespace only; partners route
    web with their own, exported to themselves."""
    mesh = MESH.replace("  gateways: [mesh, istio-system/edge]\n", "  gateways: [mesh, istio-system/edge]\n  exportTo: [., istio-system]\n") + PARTNERS_OWN
    calls, _, (web, _, _) = start(lab, ("storefront.shop", "partner.partners"), mesh)
    status, body, _ = request(calls["partner.partners"], "/preview", host=WEB)
    assert (status, text(body)) == (200, "the partners' own route")
    status, body, _ = request(calls["storefront.shop"], "/preview", host=WEB)
    assert (status, text(body)) == (200, "preview for shop")
    assert web.count == 0
