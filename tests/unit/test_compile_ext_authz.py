"""AuthorizationPolicy action CUSTOM as Istio's External Authorization task writes it: the
MeshConfig's envoyExtAuthzHttp / envoyExtAuthzGrpc providers, a shadow RBAC filter whose
rules enable the ext_authz filter, both before the DENY and ALLOW filters; the authorizer's
cluster on the proxy whatever its Sidecar imports; and what validation refuses."""

from __future__ import annotations

import textwrap

from meshwright.check.pipeline import validate_mesh
from meshwright.compile.build import compile_proxy
from meshwright.compile.proxy import find_proxy
from meshwright.model.load import load_paths

MESH = """\
apiVersion: meshwright.io/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec:
  extensionProviders:
  - name: "sample-ext-authz-grpc"
    envoyExtAuthzGrpc:
      service: "ext-authz.foo.svc.cluster.local"
      port: "9000"
      failOpen: true
  - name: "sample-ext-authz-http"
    envoyExtAuthzHttp:
      service: "foo/ext-authz.foo.svc.cluster.local"
      port: "8000"
      pathPrefix: /check
      includeRequestHeadersInCheck: ["x-ext-authz"]
      statusOnError: "503"
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext-authz, namespace: foo}
spec:
  hosts: [ext-authz.foo.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8000, name: http, protocol: HTTP}, {number: 9000, name: grpc, protocol: GRPC}]
  endpoints: [{address: 10.0.0.50}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: httpbin, namespace: foo}
spec: {address: 10.0.0.1, labels: {app: httpbin}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: foo}
spec:
  ingress:
  - port: {number: 8000, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:80
  egress:
  - hosts: ["./nothing.foo.svc.cluster.local"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: foo}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: [/admin]}}]}]
"""


def policy(provider: str, name: str = "ext-authz") -> str:
    return f"""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  action: CUSTOM
  provider: {{name: {provider}}}
  rules: [{{to: [{{operation: {{paths: ["/headers"]}}}}]}}]
"""


def validate(tmp_path, *extra: str):
    (tmp_path / "mesh.yaml").write_text("---\n".join([MESH, *[textwrap.dedent(text) for text in extra]]))
    return validate_mesh(load_paths([str(tmp_path / "mesh.yaml")]))


def http_filters(tmp_path, provider: str) -> tuple[list[dict], list[str]]:
    mesh, problems = validate(tmp_path, policy(provider))
    assert not problems, "\n".join(str(p) for p in problems)
    config = compile_proxy(mesh, find_proxy(mesh, "httpbin.foo"))
    inbound = next(listener for listener in config.listeners if listener["name"].endswith("_8000"))
    return inbound["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"], [c["name"] for c in config.clusters]


def test_custom_comes_before_deny_enabled_by_its_shadow_rules(tmp_path):
    filters, clusters = http_filters(tmp_path, "sample-ext-authz-grpc")
    assert [f["name"] for f in filters][:3] == ["envoy.filters.http.rbac", "envoy.filters.http.ext_authz", "envoy.filters.http.rbac"]
    shadow = filters[0]["typed_config"]
    assert list(shadow["shadow_rules"]["policies"]) == ["istio-ext-authz-ns[foo]-policy[ext-authz]-rule[0]"]
    assert shadow["shadow_rules_stat_prefix"] == "istio_ext_authz_" and "rules" not in shadow
    ext_authz = filters[1]["typed_config"]
    assert ext_authz["grpc_service"] == {"envoy_grpc": {"cluster_name": "outbound|9000||ext-authz.foo.svc.cluster.local",
                                                        "authority": "ext-authz.foo.svc.cluster.local"}, "timeout": "600s"}
    assert ext_authz["failure_mode_allow"] is True
    assert ext_authz["filter_enabled_metadata"]["path"] == [{"key": "istio_ext_authz_shadow_effective_policy_id"}]
    # The Sidecar imports nothing of ext-authz: its cluster is there all the same.
    assert "outbound|9000||ext-authz.foo.svc.cluster.local" in clusters


def test_an_http_provider_becomes_an_http_service(tmp_path):
    filters, _ = http_filters(tmp_path, "sample-ext-authz-http")
    ext_authz = filters[1]["typed_config"]
    assert ext_authz["http_service"] == {
        "server_uri": {"uri": "http://ext-authz.foo.svc.cluster.local:8000", "cluster": "outbound|8000||ext-authz.foo.svc.cluster.local", "timeout": "600s"},
        "path_prefix": "/check",
        "authorization_request": {"allowed_headers": {"patterns": [{"exact": "x-ext-authz", "ignore_case": True}]}},
    }
    assert ext_authz["status_on_error"] == {"code": 503}


def test_two_providers_for_one_workload_are_refused(tmp_path):
    _, problems = validate(tmp_path, policy("sample-ext-authz-grpc"), policy("sample-ext-authz-http", name="ext-authz-2"))
    assert [str(p).split(": ", 1)[1] for p in problems] == [
        "AuthorizationPolicy/foo/ext-authz-2: spec.provider.name: workload httpbin.foo gets CUSTOM policies of two providers "
        "(sample-ext-authz-grpc, sample-ext-authz-http): Istio allows one external authorizer per workload"
    ]


def test_a_grpc_provider_on_an_http_port_is_refused(tmp_path):
    mesh = MESH.replace('port: "9000"', 'port: "8000"', 1)
    (tmp_path / "mesh.yaml").write_text(mesh + "---\n" + policy("sample-ext-authz-grpc"))
    _, problems = validate_mesh(load_paths([str(tmp_path / "mesh.yaml")]))
    assert [str(p).split(": ", 1)[1] for p in problems] == [
        "AuthorizationPolicy/foo/ext-authz: spec.provider.name: provider 'sample-ext-authz-grpc' speaks gRPC, but port 8000 of "
        "ext-authz.foo.svc.cluster.local is HTTP: declare it protocol GRPC in its ServiceEntry"
    ]


TCP_INGRESS = """  - port: {number: 8000, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:80
  - port: {number: 5432, protocol: TCP, name: tcp-db}
    defaultEndpoint: 127.0.0.1:5433
"""


def with_tcp_port(tmp_path, provider: str):
    mesh_text = MESH.replace("""  - port: {number: 8000, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:80
""", TCP_INGRESS)
    (tmp_path / "mesh.yaml").write_text(mesh_text + "---\n" + policy(provider))
    mesh, problems = validate_mesh(load_paths([str(tmp_path / "mesh.yaml")]))
    assert problems == []
    return mesh


def test_an_http_authorizer_on_a_workload_with_a_tcp_port_warns_that_the_port_is_unchecked(tmp_path):
    mesh = with_tcp_port(tmp_path, "sample-ext-authz-http")
    assert [str(w).split(": ", 1)[1] for w in mesh.warnings] == [
        "AuthorizationPolicy/foo/ext-authz: spec.provider.name: warning: action CUSTOM is not enforced on the TCP port(s) 5432 of "
        "httpbin.foo: an HTTP authorizer cannot be asked about TCP connections (Istio skips them too): use an envoyExtAuthzGrpc "
        "provider, or guard them with ALLOW or DENY rules"
    ]


def test_a_grpc_authorizer_is_asked_about_tcp_connections(tmp_path):
    mesh = with_tcp_port(tmp_path, "sample-ext-authz-grpc")
    assert mesh.warnings == []
    config = compile_proxy(mesh, find_proxy(mesh, "httpbin.foo"))
    tcp = next(listener for listener in config.listeners if listener["name"].endswith("_5432"))
    filters = tcp["filter_chains"][0]["filters"]
    # CUSTOM first, then the DENY policy's network RBAC, then the proxy.
    assert [f["name"] for f in filters] == ["envoy.filters.network.rbac", "envoy.filters.network.ext_authz", "envoy.filters.network.rbac",
                                            "envoy.filters.network.tcp_proxy"]
    # The rule names a path: it cannot match a TCP connection (as an ALLOW rule there).
    assert filters[0]["typed_config"]["shadow_rules"] == {"action": "ALLOW", "policies": {}}
    assert filters[1]["typed_config"]["filter_enabled_metadata"]["filter"] == "envoy.filters.network.rbac"
