"""AuthorizationPolicy action CUSTOM with an HTTP external authorizer, as Istio's External
Authorization task sets it up (the MeshConfig's envoyExtAuthzHttp provider, a policy whose
rules say when to ask it), on real Envoy with a local authorizer: it allows requests whose
x-ext-authz header is "allow" and denies the rest with 403 and its own header; requests the
rules do not name never reach it."""

from __future__ import annotations

from tests.harness import free_offset, free_port, request

MESH = """
apiVersion: meshwright.io/v1alpha1
kind: MeshConfig
metadata: {{name: mesh}}
spec:
  extensionProviders:
  - name: "sample-ext-authz-http"
    envoyExtAuthzHttp:
      service: "ext-authz.foo.svc.cluster.local"
      port: "8000"
      includeRequestHeadersInCheck: ["x-ext-authz"]
      headersToDownstreamOnDeny: ["x-ext-authz-check-result"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ext-authz, namespace: foo}}
spec:
  hosts: [ext-authz.foo.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8000, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {authorizer}}}}}]
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
  - port: {{number: {inbound}, protocol: HTTP, name: http}}
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
    name: sample-ext-authz-http
  rules:
  - to:
    - operation:
        paths: ["/headers"]
"""


def authorize(handler, count):
    """Istio's sample authorizer: allow when x-ext-authz is "allow"."""
    if handler.headers.get("x-ext-authz") == "allow":
        return 200, {}
    return 403, {"denied": True}, {"x-ext-authz-check-result": "denied"}


def start(lab):
    authorizer = lab.backend("ext-authz", "ext-authz-1", behaviour=authorize)
    app = lab.backend("httpbin", "httpbin-1")
    offset, inbound = free_offset(), free_port()
    lab.write_mesh(MESH.format(authorizer=authorizer.port, offset=offset, inbound=inbound, app=app.port))
    lab.proxy("httpbin.foo", 15000 + offset)
    return authorizer, app, inbound


def test_the_authorizer_allows_and_denies_what_the_rules_send_it(lab):
    authorizer, app, inbound = start(lab)
    status, body, _ = request(inbound, "/headers", host="httpbin", headers={"x-ext-authz": "allow"})
    assert (status, body["instance"]) == (200, "httpbin-1")
    status, _, headers = request(inbound, "/headers", host="httpbin", headers={"x-ext-authz": "deny"})
    assert (status, headers.get("x-ext-authz-check-result")) == (403, "denied")
    assert (authorizer.count, app.count) == (2, 1)
    # The check carries the header the provider names, to the authorizer's path.
    assert authorizer.requests[0]["headers"]["x-ext-authz"] == "allow" and authorizer.requests[0]["path"] == "/headers"


def test_requests_the_rules_do_not_name_never_reach_the_authorizer(lab):
    authorizer, app, inbound = start(lab)
    status, _, _ = request(inbound, "/ip", host="httpbin", headers={"x-ext-authz": "deny"})
    assert (status, authorizer.count, app.count) == (200, 0, 1)
