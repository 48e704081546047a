"""VirtualService http features as Istio compiles them: matches that depend on where the
routes are built (port, gateways, sourceNamespace) and on the request (scheme), direct
responses, several mirrors, retries' backoff and localities, gRPC aborts and a redirect's
derivePort; and the messages for what is not valid."""

from __future__ import annotations

import textwrap

from meshwright.check.pipeline import validate_mesh
from meshwright.compile.build import compile_proxy
from meshwright.compile.proxy import find_proxy
from meshwright.compile.proxy_class import class_key
from meshwright.model.load import load_paths

SERVICES = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: shop}
spec:
  hosts: [web.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}, {number: 8080, name: http-admin, protocol: HTTP}]
  endpoints: [{address: 10.0.0.11}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shadows, namespace: shop}
spec:
  hosts: [shadow-a.shop.svc.cluster.local, shadow-b.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: DNS
  ports: [{number: 80, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: storefront, namespace: shop}
spec: {address: 10.0.1.1, labels: {app: storefront}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: partner, namespace: partners}
spec: {address: 10.0.2.1, labels: {app: partner}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: outsider, namespace: others}
spec: {address: 10.0.3.1, labels: {app: partner}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: istio-system}
spec:
  servers:
  - port: {number: 8000, name: http, protocol: HTTP}
    hosts: ["shop/*"]
  - port: {number: 80, name: http-plain, protocol: HTTP}
    hosts: ["shop/*"]
"""

BOTH_PORTS_SIDECAR = """\
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  egress:
  - port: {number: 80, protocol: HTTP, name: http}
    hosts: [shop/web.shop.svc.cluster.local]
  - port: {number: 8080, protocol: HTTP, name: http-admin}
    hosts: [shop/web.shop.svc.cluster.local]
"""


def validated(tmp_path, *texts: str):
    for index, text in enumerate((SERVICES,) + texts):
        (tmp_path / f"{index}.yaml").write_text(textwrap.dedent(text))
    return validate_mesh(load_paths([str(tmp_path)]))


def compile_mesh(tmp_path, *texts: str):
    mesh, problems = validated(tmp_path, *texts)
    assert not [p for p in problems if not p.is_warning], "\n".join(str(p) for p in problems)
    return mesh


def web_virtual_service(http: str, gateways: str = "") -> str:
    return textwrap.dedent("""\
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: web, namespace: shop}
        spec:
          hosts: [web.shop.svc.cluster.local]
        """) + (f"  gateways: {gateways}\n" if gateways else "") + "  http:\n" + textwrap.indent(textwrap.dedent(http), "  ")


def routes_of(mesh, proxy_id: str, route_config: str, host_prefix: str = "web.shop.svc.cluster.local:") -> list[dict]:
    config = compile_proxy(mesh, find_proxy(mesh, proxy_id))
    routes = next(r for r in config.routes if r["name"] == route_config)
    return [route for host in routes["virtual_hosts"] if host["name"].startswith(host_prefix) for route in host["routes"]]


def names(routes: list[dict]) -> list[str]:
    return [route["name"] for route in routes]


ADMIN_ONLY = """\
- match: [{port: 8080, uri: {prefix: /admin}}]
  directResponse: {status: 403, body: {string: internal}}
"""


def test_a_port_match_applies_on_that_port_only_and_leaves_the_others_to_their_default_route(tmp_path):
    mesh = compile_mesh(tmp_path, BOTH_PORTS_SIDECAR, web_virtual_service(ADMIN_ONLY))
    admin = routes_of(mesh, "storefront.shop", "8080")
    assert names(admin) == ["shop.web.0"]
    assert admin[0]["match"] == {"prefix": "/admin"}
    assert admin[0]["direct_response"] == {"status": 403, "body": {"inline_string": "internal"}}
    # Istio leaves out a VirtualService none of whose routes apply on a port.
    assert routes_of(mesh, "storefront.shop", "80") == [
        {"name": "default", "match": {"prefix": "/"}, "route": {
            "cluster": "outbound|80||web.shop.svc.cluster.local", "timeout": "0s", "retry_policy": routes_of(mesh, "storefront.shop", "80")[0]["route"]["retry_policy"]}}]


SOURCE_NAMESPACE = """\
- match: [{sourceNamespace: partners, uri: {prefix: /preview}}]
  route: [{destination: {host: shadow-a.shop.svc.cluster.local}}]
- route: [{destination: {host: web.shop.svc.cluster.local, port: {number: 80}}}]
"""


def test_source_namespace_keeps_a_match_for_clients_of_that_namespace_in_one_mesh(tmp_path):
    """The virtual host is shared across proxies (memoized per mesh): the client's namespace
    is part of what it is shared by, whichever proxy is compiled first."""
    mesh = compile_mesh(tmp_path, web_virtual_service(SOURCE_NAMESPACE))
    assert names(routes_of(mesh, "outsider.others", "15001")) == ["shop.web.1"]
    assert names(routes_of(mesh, "partner.partners", "15001")) == ["shop.web.0", "shop.web.1"]
    assert names(routes_of(mesh, "outsider.others", "15001")) == ["shop.web.1"]
    assert names(routes_of(mesh, "storefront.shop", "15001")) == ["shop.web.1"]
    # Proxies of different namespaces are of different classes (they never share a route table).
    assert class_key(mesh, find_proxy(mesh, "partner.partners")) != class_key(mesh, find_proxy(mesh, "outsider.others"))


GATEWAY_AND_MESH = """\
- match: [{gateways: [istio-system/ingress], uri: {prefix: /old}}]
  redirect: {uri: /new, derivePort: FROM_REQUEST_PORT}
- match: [{gateways: [mesh], sourceLabels: {app: nobody}, uri: {prefix: /inside}}]
  route: [{destination: {host: shadow-a.shop.svc.cluster.local}}]
- match: [{scheme: {exact: https}}]
  route: [{destination: {host: shadow-b.shop.svc.cluster.local}}]
- route: [{destination: {host: web.shop.svc.cluster.local, port: {number: 80}}}]
"""


def test_a_gateways_match_applies_there_only_and_ignores_source_labels(tmp_path):
    mesh = compile_mesh(tmp_path, web_virtual_service(GATEWAY_AND_MESH, "[mesh, istio-system/ingress]"))
    sidecar = routes_of(mesh, "storefront.shop", "15001")
    # Istio: a match that names gateways is not narrowed by sourceLabels.
    assert names(sidecar) == ["shop.web.1", "shop.web.2", "shop.web.3"]
    assert sidecar[1]["match"] == {"prefix": "/", "headers": [{"name": ":scheme", "string_match": {"exact": "https"}}]}
    gateway = routes_of(mesh, "ingress.istio-system", "http.8000", "web.shop.svc.cluster.local:")
    assert names(gateway) == ["shop.web.0", "shop.web.2", "shop.web.3"]
    # FROM_REQUEST_PORT: the server's port; on port 80 the http URL names none (Istio's rule).
    assert gateway[0]["redirect"] == {"path_redirect": "/new", "port_redirect": 8000, "response_code": "MOVED_PERMANENTLY"}
    plain = routes_of(mesh, "ingress.istio-system", "http.80", "web.shop.svc.cluster.local:")
    assert plain[0]["redirect"] == {"path_redirect": "/new", "response_code": "MOVED_PERMANENTLY"}


ACTIONS = """\
- match: [{uri: {prefix: /bytes}}]
  directResponse: {status: 200, body: {bytes: "aGVsbG8="}}
- route: [{destination: {host: web.shop.svc.cluster.local, port: {number: 80}}}]
  mirrors:
  - {destination: {host: shadow-a.shop.svc.cluster.local}, percentage: {value: 25.5}}
  - {destination: {host: shadow-b.shop.svc.cluster.local}, percentage: {value: 0}}
  - {destination: {host: shadow-b.shop.svc.cluster.local}}
  retries: {attempts: 4, backoff: 100ms, retryRemoteLocalities: true, retryIgnorePreviousHosts: false}
  fault: {abort: {grpcStatus: RESOURCE_EXHAUSTED}}
"""


ABORT_ALL = {"numerator": 1000000, "denominator": "MILLION"}


def test_direct_response_mirrors_retries_and_grpc_abort(tmp_path):
    mesh = compile_mesh(tmp_path, web_virtual_service(ACTIONS))
    direct, route = routes_of(mesh, "storefront.shop", "15001")
    assert direct["direct_response"] == {"status": 200, "body": {"inline_bytes": "aGVsbG8="}}
    action = route["route"]
    # An explicit 0% mirrors nothing (Istio); no percentage is 100%.
    assert [(m["cluster"], m["runtime_fraction"]["default_value"]["numerator"]) for m in action["request_mirror_policies"]] == [
        ("outbound|80||shadow-a.shop.svc.cluster.local", 255000), ("outbound|80||shadow-b.shop.svc.cluster.local", 1000000)]
    retry = action["retry_policy"]
    assert retry["num_retries"] == 4 and retry["retry_back_off"] == {"base_interval": "0.1s"}
    assert retry["retry_priority"]["name"] == "envoy.retry_priorities.previous_priorities"
    assert "retry_host_predicate" not in retry  # retryIgnorePreviousHosts: false
    abort = route["typed_per_filter_config"]["envoy.filters.http.fault"]["abort"]
    assert abort == {"grpc_status": 8, "percentage": ABORT_ALL}


def test_a_body_over_envoys_default_limit_raises_it_to_istios(tmp_path):
    small = compile_mesh(tmp_path, web_virtual_service("- directResponse: {status: 200, body: {string: small}}\n"))
    config = compile_proxy(small, find_proxy(small, "storefront.shop"))
    assert all("max_direct_response_body_size_bytes" not in r for r in config.routes)
    large_dir = tmp_path / "large"
    large_dir.mkdir()
    large = compile_mesh(large_dir, web_virtual_service(f"- directResponse: {{status: 200, body: {{string: {'x' * 5000}}}}}\n"))
    config = compile_proxy(large, find_proxy(large, "storefront.shop"))
    assert [r["max_direct_response_body_size_bytes"] for r in config.routes if r["name"] == "15001"] == [1048576]


def problem_lines(tmp_path, http: str, gateways: str = "") -> list[str]:
    mesh, problems = validated(tmp_path, web_virtual_service(http, gateways))
    problems = problems or mesh.warnings
    return [f"{p.resource}: {'.'.join(str(x) for x in p.path)}: {'warning: ' if p.is_warning else ''}{p.message}" for p in problems]


def test_what_istio_does_not_allow_or_envoy_cannot_do_is_refused_by_field(tmp_path):
    lines = problem_lines(tmp_path, """\
        - route: [{destination: {host: web.shop.svc.cluster.local, port: {number: 80}}}]
          fault: {abort: {http2Error: REFUSED_STREAM}}
        - redirect: {uri: /x, port: 8080, derivePort: FROM_REQUEST_PORT}
        - directResponse: {status: 200, body: {bytes: "not base64!"}}
          timeout: 1s
        - route: [{destination: {host: web.shop.svc.cluster.local, port: {number: 80}}}]
          mirror: {host: shadow-a.shop.svc.cluster.local}
          mirrors: [{destination: {host: shadow-b.shop.svc.cluster.local}}]
        - match: [{gateways: [nowhere]}]
          route: [{destination: {host: web.shop.svc.cluster.local, port: {number: 80}}}]
        """)
    assert lines == [
        "VirtualService/shop/web: spec.http.0.fault.abort.http2Error: http2Error is not supported by meshwright yet (abort with an httpStatus or a grpcStatus)",
        "VirtualService/shop/web: spec.http.1.redirect: set only one of port, derivePort (found port, derivePort)",
        "VirtualService/shop/web: spec.http.2.directResponse.body.bytes: 'not base64!' is not base64 (A-Z, a-z, 0-9, + and /, padded with = to a multiple of 4 characters)",
        "VirtualService/shop/web: spec.http.2.timeout: timeout cannot be used with directResponse: a direct response is answered by the proxy: nothing times out",
        "VirtualService/shop/web: spec.http.3: set only one of mirror, mirrors (found mirror, mirrors)",
        "VirtualService/shop/web: spec.http.4.match.0.gateways.0: gateway shop/nowhere does not exist (define a Gateway, or use 'mesh' for sidecars)",
    ]


def test_a_match_for_a_gateway_the_virtual_service_is_not_bound_to_is_a_warning(tmp_path):
    lines = problem_lines(tmp_path, """\
        - match: [{gateways: [istio-system/ingress]}]
          route: [{destination: {host: web.shop.svc.cluster.local, port: {number: 80}}}]
        """)
    assert lines == ["VirtualService/shop/web: spec.http.0.match.0.gateways.0: warning: istio-system/ingress is not one of this "
                     "VirtualService's gateways (mesh): the match never applies there"]


def exported_virtual_service(name: str, namespace: str, export_to: str, body: str, gateways: str = "") -> str:
    return textwrap.dedent(f"""\
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {{name: {name}, namespace: {namespace}}}
        spec:
          hosts: [web.shop.svc.cluster.local]
          exportTo: {export_to}
        """) + (f"  gateways: {gateways}\n" if gateways else "") + f"  http:\n  - directResponse: {{status: 200, body: {{string: {body}}}}}\n"


def test_export_to_gives_each_namespace_the_virtual_service_exported_to_it(tmp_path):
    mesh = compile_mesh(
        tmp_path,
        exported_virtual_service("web", "shop", '[".", istio-system]', "shop", "[mesh, istio-system/ingress]"),
        exported_virtual_service("web-for-partners", "partners", '["."]', "partners"),
    )
    bodies = {proxy: [r.get("direct_response", {}).get("body") for r in routes_of(mesh, proxy, "15001")]
              for proxy in ("outsider.others", "storefront.shop", "partner.partners")}
    assert bodies == {
        "outsider.others": [None],  # sees neither: the default route
        "storefront.shop": [{"inline_string": "shop"}],
        "partner.partners": [{"inline_string": "partners"}],
    }
    gateway = routes_of(mesh, "ingress.istio-system", "http.8000", "web.shop.svc.cluster.local:")
    assert [r["direct_response"]["body"] for r in gateway] == [{"inline_string": "shop"}]


def test_a_virtual_service_not_exported_to_the_gateways_namespace_does_not_route_there(tmp_path):
    mesh = compile_mesh(tmp_path, exported_virtual_service("web", "shop", '["."]', "shop", "[mesh, istio-system/ingress]"))
    config = compile_proxy(mesh, find_proxy(mesh, "ingress.istio-system"))
    assert [h["name"] for r in config.routes for h in r["virtual_hosts"]] == []


def test_two_virtual_services_one_namespace_sees_are_a_conflict(tmp_path):
    lines = [line for line in problem_lines(tmp_path, "- route: [{destination: {host: web.shop.svc.cluster.local, port: {number: 80}}}]\n")
             if "already routed" in line]
    assert lines == []  # one VirtualService alone
    _, problems = validated(tmp_path, exported_virtual_service("web", "shop", '[".", partners]', "shop"),
                            exported_virtual_service("web-for-partners", "partners", '["."]', "partners"))
    assert [f"{p.resource}: {p.message}" for p in problems] == [
        "VirtualService/shop/web: web.shop.svc.cluster.local is already routed by VirtualService/partners/web-for-partners: "
        "merge the routes into one VirtualService, or export them to different namespaces (exportTo)"]


OLDER_AND_SMALLER_FIELDS = """\
- match: [{uri: {prefix: /api}, statPrefix: api}]
  route: [{destination: {host: web.shop.svc.cluster.local, port: {number: 80}}}]
  mirror: {host: shadow-a.shop.svc.cluster.local}
  mirrorPercent: 20
  corsPolicy:
    allowOrigins: [{exact: "https://shop.example.com"}]
    unmatchedPreflights: IGNORE
"""


def test_stat_prefix_unmatched_preflights_and_the_deprecated_mirror_percent(tmp_path):
    mesh, problems = validated(tmp_path, web_virtual_service(OLDER_AND_SMALLER_FIELDS))
    assert problems == [] and [w.message for w in mesh.warnings] == ["mirrorPercent is deprecated (Istio): write mirrorPercentage: {value: N}"]
    route = routes_of(mesh, "storefront.shop", "15001")[0]
    assert route["stat_prefix"] == "api"
    assert route["route"]["request_mirror_policies"][0]["runtime_fraction"]["default_value"] == {"numerator": 200000, "denominator": "MILLION"}
    assert route["typed_per_filter_config"]["envoy.filters.http.cors"]["forward_not_matching_preflights"] is False
