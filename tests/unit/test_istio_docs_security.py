"""Security documents in the shapes Istio's task and reference pages use (authorization with
JWT, ingress access control by IP, policy conditions, serviceAccounts, request
authentication), written for this test, beside the workloads they assume (httpbin in foo, an
ingress gateway). Each is accepted and compiled, the JWT task's jwksUri over https as a JWKS
that Envoy fetches through a cluster of its own."""

from __future__ import annotations

import json
import textwrap

import pytest

from meshwright.check.pipeline import validate_mesh
from meshwright.compile.build import compile_proxy
from meshwright.compile.proxy import find_proxy
from meshwright.model.load import load_paths

BASE = """\
apiVersion: meshwright.io/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec:
  certificates: {}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: httpbin, namespace: foo}
spec:
  hosts: [httpbin.foo.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8000, name: http, protocol: HTTP, targetPort: 8080}]
  workloadSelector: {labels: {app: httpbin}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: httpbin, namespace: foo}
spec: {address: 10.0.0.10, labels: {app: httpbin, version: v1}, serviceAccount: httpbin}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: httpbin, namespace: foo}
spec:
  workloadSelector: {labels: {app: httpbin}}
  ingress:
  - port: {number: 8080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:18080
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: httpbin-gateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8081, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin, namespace: foo}
spec:
  hosts: ["*"]
  gateways: [istio-system/httpbin-gateway]
  http:
  - route:
    - destination: {host: httpbin, port: {number: 8000}}
"""

# A key set in the shape of Istio's security/tools/jwt/samples/jwks.json (one RSA key).
JWKS = json.dumps({"keys": [{"e": "AQAB", "kid": "DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ", "kty": "RSA", "n": "xAE7eB6qugXyCAG3yhh7pkDkT65pHymX-P7KfIupjf59vsdo91bSP9C8H07pSAGQO1MV_xFj9VswgsCg4R6otmg5PV2He95lZdHtOcU5DXIg_pbhLdKXbi66GlVeK6ABZOUW3WYtnNHD-91gVuoeJT_DwtGGcp4ignkgXfkiEm4sw-4sfb4qdt5oLbyVpmW6x9cfa7vs2WTfURiCrBoUqgBo_-4WTiULmmHSGZHOjzwa8WtrtOQGsAFjIbno85jp6MnGGGZPYZbDAa_b3y5u-YpW7ypZrvD8BgtKVjgtQgZhLAGezMt0ua3DRrWnKqTZ0BJ_EyxOGuHJrLsn00fnMQ"}]})

JWT_TASK = f"""\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: "jwt-example"
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  jwtRules:
  - issuer: "testing@secure.istio.io"
    jwks: '{JWKS}'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: require-jwt
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: ALLOW
  rules:
  - from:
    - source:
       requestPrincipals: ["testing@secure.istio.io/testing@secure.istio.io"]
    when:
    - key: request.auth.claims[groups]
      values: ["group1"]
"""

INGRESS_IP_TASK = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ingress-policy
  namespace: istio-system
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  action: ALLOW
  rules:
  - from:
    - source:
        ipBlocks: ["1.2.3.4", "5.6.7.0/24"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ingress-deny
  namespace: istio-system
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  action: DENY
  rules:
  - from:
    - source:
        remoteIpBlocks: ["8.8.8.8"]
"""

CONDITIONS_PAGE = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: conditions
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  rules:
  - to:
    - operation:
        hosts: ["httpbin.foo.svc.cluster.local", "httpbin.foo.svc.cluster.local:*"]
    when:
    - key: request.headers[User-Agent]
      values: ["Mozilla/*"]
    - key: source.ip
      values: ["10.1.2.3", "10.2.0.0/16"]
    - key: remote.ip
      values: ["10.1.2.3", "10.2.0.0/16"]
    - key: request.auth.principal
      values: ["issuer.example.com/subject-admin"]
    - key: request.auth.audiences
      values: ["example.com"]
    - key: request.auth.presenter
      values: ["123456789012.example.com"]
    - key: request.auth.claims[iss]
      values: ["*@foo.com"]
    - key: request.auth.claims[nested1][nested2]
      values: ["some-value"]
    - key: destination.ip
      values: ["10.1.2.3", "10.2.0.0/16"]
    - key: destination.port
      values: ["80", "443"]
    - key: connection.sni
      values: ["www.example.com"]
  - from:
    - source:
        serviceAccounts: ["bar/sleep", "sleep"]
"""

JWKS_OVER_HTTPS = """\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: "jwt-example"
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  jwtRules:
  - issuer: "testing@secure.istio.io"
    jwksUri: "https://raw.githubusercontent.com/istio/istio/release-1.28/security/tools/jwt/samples/jwks.json"
"""


def validated(tmp_path, document: str):
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "doc.yaml").write_text(textwrap.dedent(document))
    return validate_mesh(load_paths([str(tmp_path)]))


def http_filter_names(mesh, proxy: str) -> list[str]:
    config = compile_proxy(mesh, find_proxy(mesh, proxy))
    return [
        http_filter["name"]
        for listener in config.listeners
        for chain in listener["filter_chains"]
        for network_filter in chain["filters"]
        if network_filter["name"] == "envoy.filters.network.http_connection_manager"
        for http_filter in network_filter["typed_config"]["http_filters"]
    ]


@pytest.mark.parametrize("document, proxy, filters", [
    (JWT_TASK, "httpbin.foo", ["envoy.filters.http.jwt_authn", "envoy.filters.http.rbac"]),
    (INGRESS_IP_TASK, "httpbin-gateway.istio-system", ["envoy.filters.http.rbac", "envoy.filters.http.rbac"]),
    (CONDITIONS_PAGE, "httpbin.foo", ["envoy.filters.http.rbac"]),
], ids=["authorization-with-jwt", "ingress-ip-blocks", "conditions-and-service-accounts"])
def test_istio_documents_are_accepted_and_compiled(tmp_path, document, proxy, filters):
    mesh, problems = validated(tmp_path, document)
    assert not problems, "\n".join(str(p) for p in problems)
    names = http_filter_names(mesh, proxy)
    assert names[:len(filters)] == filters, names


def test_a_jwks_uri_over_https_is_fetched_by_envoy_through_its_own_cluster(tmp_path):
    mesh, problems = validated(tmp_path, JWKS_OVER_HTTPS)
    assert not problems, "\n".join(str(p) for p in problems)
    config = compile_proxy(mesh, find_proxy(mesh, "httpbin.foo"))
    jwt, *others = [f for listener in config.listeners for chain in listener["filter_chains"] for n in chain["filters"]
              if n["name"] == "envoy.filters.network.http_connection_manager" for f in n["typed_config"]["http_filters"]
              if f["name"] == "envoy.filters.http.jwt_authn"]
    assert all(other == jwt for other in others)  # every inbound chain has the same filter
    uri = "https://raw.githubusercontent.com/istio/istio/release-1.28/security/tools/jwt/samples/jwks.json"
    cluster_name = "jwks|https|raw.githubusercontent.com|443"
    assert jwt["typed_config"]["providers"]["origins-0"]["remote_jwks"] == {
        "http_uri": {"uri": uri, "cluster": cluster_name, "timeout": "5s"}, "cache_duration": "1200s"}
    cluster = next(c for c in config.clusters if c["name"] == cluster_name)
    assert cluster["type"] == "STRICT_DNS" and cluster["transport_socket"]["typed_config"]["sni"] == "raw.githubusercontent.com"
