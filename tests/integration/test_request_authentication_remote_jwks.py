"""RequestAuthentication with a jwksUri over https, as Istio's JWT task writes it, on real
Envoy: the sidecar fetches the keys itself from the URI (a local HTTPS server here, trusted
through the MeshConfig's systemCaCertificates), through the cluster meshwright gives that
host. A token its keys signed is accepted and authorized; one signed by another key gets 401."""

from __future__ import annotations

import http.server
import json
import ssl
import threading

import pytest

from tests.harness import free_offset, free_port, request
from tests.integration.test_egress_tls import LocalCa
from tests.integration.test_request_authentication import EcKey, token

ISSUER = "testing@secure.istio.io"

MESH = """
apiVersion: meshwright.io/v1alpha1
kind: MeshConfig
metadata: {{name: mesh}}
spec:
  systemCaCertificates: {ca}
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
kind: RequestAuthentication
metadata:
  name: "jwt-example"
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  jwtRules:
  - issuer: "{issuer}"
    jwksUri: "https://localhost:{jwks_port}/security/tools/jwt/samples/jwks.json"
    timeout: 3s
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
       requestPrincipals: ["{issuer}/{issuer}"]
"""


class JwksServer:
    """An HTTPS server on loopback that serves a JWKS and counts the fetches."""

    def __init__(self, ca: LocalCa, jwks: dict):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*ca.issue("localhost", ["localhost"]))
        body = json.dumps(jwks).encode()
        self.fetches = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.fetches.append(self.path)
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):
                sock, address = self.socket.accept()
                return context.wrap_socket(sock, server_side=True), address

            def handle_error(self, request, client_address):
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def httpbin(lab, tmp_path):
    key = EcKey("remote-1")
    ca = LocalCa(tmp_path)
    jwks = JwksServer(ca, {"keys": [key.jwk()]})
    offset, inbound = free_offset(), free_port()
    app = lab.backend("httpbin", "httpbin-1")
    lab.write_mesh(MESH.format(ca=ca.path, offset=offset, inbound=inbound, app=app.port, issuer=ISSUER, jwks_port=jwks.port))
    lab.proxy("httpbin.foo", 15000 + offset)
    yield key, inbound, app, jwks
    jwks.close()


def get(inbound: int, bearer: str = "") -> int:
    return request(inbound, "/headers", host="httpbin", headers={"Authorization": f"Bearer {bearer}"} if bearer else {})[0]


def test_a_token_signed_by_the_fetched_keys_is_accepted(httpbin):
    key, inbound, app, jwks = httpbin
    assert get(inbound, token(key, iss=ISSUER, sub=ISSUER)) == 200
    assert jwks.fetches == ["/security/tools/jwt/samples/jwks.json"] and app.count == 1


def test_a_token_of_another_key_and_a_missing_token_are_refused(httpbin):
    _, inbound, app, _ = httpbin
    assert get(inbound, token(EcKey("remote-1"), iss=ISSUER, sub=ISSUER)) == 401
    assert get(inbound) == 403  # no token: the policy requires a request principal
    assert app.count == 0
