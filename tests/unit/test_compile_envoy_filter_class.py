"""EnvoyFilter patch.filterClass, as Istio places an inserted HTTP filter: AUTHN after the
authentication filter (JWT), AUTHZ after the authorization filters (RBAC), STATS just before
the router; whatever the insert operation says. Elsewhere it is refused."""

from __future__ import annotations

import pytest

from meshwright.check.pipeline import validate_mesh
from meshwright.compile.build import compile_proxy
from meshwright.compile.proxy import find_proxy
from meshwright.model.load import load_paths

MESH = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: orders, namespace: shop}
spec: {address: 10.0.0.1, labels: {app: orders}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: shop}
spec:
  jwtRules:
  - issuer: https://accounts.example.com
    jwks: '{"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "x": "axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY", "y": "T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU"}]}'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: shop}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: [/admin]}}]}]
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: placed, namespace: shop}
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_INBOUND
      listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager}}}
    patch:
      operation: {operation}
      filterClass: {filter_class}
      value:
        name: mesh.placed
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
          default_source_code: {inline_string: "function envoy_on_request(h) end"}
"""


def validate(tmp_path, filter_class: str, operation: str = "ADD"):
    (tmp_path / "mesh.yaml").write_text(MESH.replace("{operation}", operation).replace("{filter_class}", filter_class))
    return validate_mesh(load_paths([str(tmp_path / "mesh.yaml")]))


def inbound_filters(tmp_path, filter_class: str, operation: str = "ADD") -> list[str]:
    mesh, problems = validate(tmp_path, filter_class, operation)
    assert not problems, "\n".join(str(p) for p in problems)
    config = compile_proxy(mesh, find_proxy(mesh, "orders.shop"))
    inbound = next(listener for listener in config.listeners if listener["name"].endswith("_9080"))
    return [f["name"] for f in inbound["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]]


@pytest.mark.parametrize("filter_class, operation, after", [
    ("AUTHN", "ADD", "envoy.filters.http.jwt_authn"),
    ("AUTHZ", "INSERT_FIRST", "envoy.filters.http.rbac"),
    ("STATS", "INSERT_BEFORE", "envoy.filters.http.fault"),
])
def test_the_class_places_the_filter(tmp_path, filter_class, operation, after):
    names = inbound_filters(tmp_path, filter_class, operation)
    assert names[names.index("mesh.placed") - 1] == after
    assert names[-1] == "envoy.filters.http.router"


def test_filter_class_on_a_merge_is_refused(tmp_path):
    _, problems = validate(tmp_path, "AUTHZ", "MERGE")
    assert any("spec.configPatches[0].patch.filterClass: filterClass places an HTTP filter that a patch inserts" in str(p) for p in problems)
