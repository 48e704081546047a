"""EnvoyFilter applyTo BOOTSTRAP and EXTENSION_CONFIG, and patch.filterClass, on real Envoy
with real traffic: a BOOTSTRAP MERGE adds a runtime layer the running proxy reports (admin
/runtime); an inbound HTTP filter that asks for its config by extension config discovery
gets the EXTENSION_CONFIG of its name: its Lua code adds a response header to the answers;
placed by filterClass AUTHZ after the authorization filter (whatever its INSERT_FIRST says),
it never sees a request that authorization refuses: the /admin it would answer itself gets
authorization's 403."""

from __future__ import annotations

import json

from tests.harness import free_offset, free_port, request

MESH = """
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: productpage
  namespace: default
  annotations: {{meshwright.io/port-offset: "{offset}"}}
spec: {{address: 127.0.0.1, labels: {{app: productpage}}}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: productpage, namespace: default}}
spec:
  workloadSelector: {{labels: {{app: productpage}}}}
  ingress:
  - port: {{number: {inbound}, protocol: HTTP, name: http}}
    bind: 127.0.0.1
    defaultEndpoint: 127.0.0.1:{app}
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {{name: productpage-tuning, namespace: default}}
spec:
  workloadSelector: {{labels: {{app: productpage}}}}
  configPatches:
  - applyTo: BOOTSTRAP
    patch:
      operation: MERGE
      value:
        layered_runtime:
          layers:
          - name: mesh-tuning
            static_layer: {{mesh.tuning.marker: 42}}
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_INBOUND
      listener:
        filterChain:
          filter:
            name: envoy.filters.network.http_connection_manager
            subFilter: {{name: envoy.filters.http.router}}
    patch:
      operation: INSERT_FIRST   # the class decides: after authorization
      filterClass: AUTHZ
      value:
        name: mesh.served-by
        config_discovery:
          config_source: {{ads: {{}}, initial_fetch_timeout: 0s}}
          type_urls: [type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua]
  - applyTo: EXTENSION_CONFIG
    patch:
      operation: ADD
      value:
        name: mesh.served-by
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
          default_source_code:
            inline_string: |
              function envoy_on_request(handle)
                if handle:headers():get(":path") == "/admin" then
                  handle:respond({{[":status"] = "200"}}, "answered by the filter")
                end
              end
              function envoy_on_response(handle)
                handle:headers():add("x-served-by", "productpage-sidecar")
              end
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny-admin, namespace: default}}
spec:
  selector: {{matchLabels: {{app: productpage}}}}
  action: DENY
  rules: [{{to: [{{operation: {{paths: [/admin]}}}}]}}]
"""


def start(lab):
    app = lab.backend("productpage", "productpage-1")
    offset, inbound = free_offset(), free_port()
    lab.write_mesh(MESH.format(offset=offset, inbound=inbound, app=app.port))
    envoy = lab.proxy("productpage.default", 15000 + offset)
    return envoy, inbound, app


def test_the_bootstrap_patch_is_in_the_running_proxys_runtime(lab):
    envoy, _, _ = start(lab)
    runtime = json.loads(envoy.admin("/runtime"))
    assert runtime["entries"]["mesh.tuning.marker"]["final_value"] == "42"
    assert "mesh-tuning" in [layer for layer in runtime["layers"]]


def test_the_extension_config_runs_in_the_filter_that_asked_for_it(lab):
    _, inbound, app = start(lab)
    status, body, headers = request(inbound, "/productpage")
    assert (status, body["instance"]) == (200, "productpage-1")
    assert {k.lower(): v for k, v in headers.items()}["x-served-by"] == "productpage-sidecar"
    assert app.count == 1


def test_filter_class_authz_runs_the_filter_after_authorization(lab):
    _, inbound, app = start(lab)
    status, body, _ = request(inbound, "/admin")
    assert (status, body) == (403, {"raw": "RBAC: access denied"})
    assert app.count == 0
