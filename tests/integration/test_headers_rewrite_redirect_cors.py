"""VirtualService header operations, URI rewrite, redirect and CORS policy, on real Envoy with
real traffic.

One VirtualService for `web` has a route per feature, chosen by path prefix: /headers sets,
adds and removes request and response headers; /old/ is rewritten to /new/; /moved redirects;
/api has a CORS policy.
"""

from __future__ import annotations

import http.client

from tests.harness import free_offset, request

ORIGIN = "https://app.example.com"

MESH = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web, namespace: default}}
spec:
  hosts: [web.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {port}}}, labels: {{app: web}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: client
  namespace: default
  annotations: {{meshwright.io/port-offset: "{offset}"}}
spec: {{address: 127.0.0.1, labels: {{app: client}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: [web]
  http:
  - match: [{{uri: {{prefix: /headers}}}}]
    headers:
      request:
        set: {{x-set: from-mesh}}
        add: {{x-added: from-mesh}}
        remove: [x-secret]
      response:
        set: {{x-response-set: from-mesh}}
        add: {{x-response-added: from-mesh}}
        remove: [x-internal]
    route:
    - destination: {{host: web}}
  - match: [{{uri: {{prefix: /old/}}}}]
    rewrite: {{uri: /new/}}
    route:
    - destination: {{host: web}}
  - match: [{{uri: {{exact: /moved}}}}]
    redirect: {{uri: /new/place, authority: web.example.com}}
  - match: [{{uri: {{prefix: /api}}}}]
    corsPolicy:
      allowOrigins: [{{exact: "{origin}"}}]
      allowMethods: [POST, GET]
      allowHeaders: [x-custom]
      exposeHeaders: [x-exposed]
      maxAge: 24h
      allowCredentials: true
    route:
    - destination: {{host: web}}
"""


def start(lab, behaviour=None):
    backend = lab.backend("web", "web-1", behaviour=behaviour)
    offset = free_offset()
    lab.write_mesh(MESH.format(port=backend.port, offset=offset, origin=ORIGIN))
    lab.proxy("client.default", 15000 + offset)
    return backend, 15001 + offset


def raw_request(port, path, headers):
    """(status, response headers as an http.client message: repeated headers kept)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"Host": "web", **headers})
        response = connection.getresponse()
        response.read()
        return response.status, response.msg
    finally:
        connection.close()


def test_request_and_response_header_operations(lab):
    """headers.request/response set, add and remove: the backend sees the request headers as
    set (replacing the client's value), added (next to the client's value) and removed; the
    client sees the backend's response headers changed the same way."""
    seen = {}

    def answer_with_headers(handler, count):
        seen["x-added"] = handler.headers.get_all("x-added")
        seen["x-set"] = handler.headers.get_all("x-set")
        return 200, {}, {"x-internal": "secret", "x-response-set": "from-backend", "x-response-added": "from-backend"}

    backend, port = start(lab, answer_with_headers)
    status, response = raw_request(port, "/headers", {"x-set": "from-client", "x-added": "from-client", "x-secret": "hidden"})
    assert status == 200
    assert seen == {"x-set": ["from-mesh"], "x-added": ["from-client", "from-mesh"]}
    assert "x-secret" not in backend.requests[0]["headers"]

    assert response.get_all("x-response-set") == ["from-mesh"]
    assert response.get_all("x-response-added") == ["from-backend", "from-mesh"]
    assert response.get("x-internal") is None

    # Another route leaves headers alone, both ways.
    status, response = raw_request(port, "/old/x", {"x-secret": "kept"})
    assert backend.requests[1]["headers"]["x-secret"] == "kept"
    assert response.get_all("x-response-set") == ["from-backend"]
    assert response.get("x-internal") == "secret"


def test_rewrite_uri_replaces_the_matched_prefix(lab):
    """rewrite.uri /new/ on a /old/ prefix match: the backend receives /new/<rest>, and Envoy
    keeps the client's path in x-envoy-original-path."""
    backend, port = start(lab)
    status, body, _ = request(port, "/old/page?q=1", host="web")
    assert (status, body["path"]) == (200, "/new/page?q=1")
    assert backend.requests[0]["headers"]["x-envoy-original-path"] == "/old/page?q=1"


def test_redirect_answers_301_with_location(lab):
    """redirect {uri, authority}: Envoy answers 301 itself, with the new location; the backend
    is never called."""
    backend, port = start(lab)
    status, _, headers = request(port, "/moved", host="web")
    assert status == 301
    assert headers["location"] == "http://web.example.com/new/place"
    assert backend.count == 0


def test_cors_preflight_is_answered_by_envoy(lab):
    """corsPolicy: a preflight (OPTIONS with Origin and Access-Control-Request-Method) from an
    allowed origin is answered by Envoy with the allow headers and never reaches the backend;
    one from another origin gets no allow headers; an actual request from the allowed origin
    gets Access-Control-Allow-Origin and the exposed headers."""
    backend, port = start(lab)
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}

    status, _, headers = request(port, "/api/items", host="web", method="OPTIONS", headers=preflight)
    assert status == 200
    assert headers["access-control-allow-origin"] == ORIGIN
    assert headers["access-control-allow-methods"] == "POST,GET"
    assert headers["access-control-allow-headers"] == "x-custom"
    assert headers["access-control-max-age"] == "86400"
    assert headers["access-control-allow-credentials"] == "true"
    assert backend.count == 0

    status, _, headers = request(port, "/api/items", host="web", method="OPTIONS", headers={**preflight, "Origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in headers
    # Istio forwards preflights it does not match (unmatchedPreflights: FORWARD) to the app.
    assert (status, backend.count) == (200, 1)

    status, body, headers = request(port, "/api/items", host="web", headers={"Origin": ORIGIN})
    assert (status, body["service"]) == (200, "web")
    assert headers["access-control-allow-origin"] == ORIGIN
    assert headers["access-control-expose-headers"] == "x-exposed"
