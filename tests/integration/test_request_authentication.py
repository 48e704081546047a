"""RequestAuthentication and JWT authorization on real Envoy (issue 12), with tokens signed here.

The server sidecar has two JWT rules: issuer https://issuer.example (an ES256 key inline in
`jwks`, audience `orders`, the payload copied to x-jwt-payload) and issuer issuer-b.example
(an RS256 key in a file named by `jwksUri: file://...`, the token in header x-jwt or query
parameter `token`, forwarded to the app). An AuthorizationPolicy lets in /a/* for
https://issuer.example principals whose `groups` claim holds `admins`, /b/* for
issuer-b.example/alice, and /open/* and /strict/* for anyone; a DENY policy refuses /strict/*
to requests without a request principal (Istio's way to require a token).

Istio's semantics: an invalid token (bad signature, expired, unknown issuer) is refused by
the JWT filter with 401 whatever the path (one for another audience with Envoy's 403); a request without a token passes the JWT filter and is
refused (403) only where a rule needs a request principal.
"""

from __future__ import annotations

import base64
import json
import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tests.harness import free_offset, free_port, request

ISSUER_A, ISSUER_B = "https://issuer.example", "issuer-b.example"

MESH = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: server, namespace: default}}
spec:
  hosts: [server.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: server}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: server, namespace: default, annotations: {{meshwright.io/port-offset: "{offset}"}}}}
spec: {{address: 127.0.0.1, ports: {{http: {inbound}}}, labels: {{app: server}}}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: server, namespace: default}}
spec:
  workloadSelector: {{labels: {{app: server}}}}
  ingress:
  - port: {{number: {inbound}, protocol: HTTP, name: http}}
    bind: 127.0.0.1
    defaultEndpoint: 127.0.0.1:{app}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: default}}
spec:
  selector: {{matchLabels: {{app: server}}}}
  jwtRules:
  - issuer: {issuer_a}
    jwks: '{jwks_a}'
    audiences: [orders]
    outputPayloadToHeader: x-jwt-payload
  - issuer: {issuer_b}
    jwksUri: file://{jwks_b_path}
    fromHeaders: [{{name: x-jwt}}]
    fromParams: [token]
    forwardOriginalToken: true
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: need-jwt, namespace: default}}
spec:
  selector: {{matchLabels: {{app: server}}}}
  rules:
  - from: [{{source: {{requestPrincipals: ["{issuer_a}/*"]}}}}]
    to: [{{operation: {{paths: ["/a/*"]}}}}]
    when: [{{key: "request.auth.claims[groups]", values: [admins]}}]
  - from: [{{source: {{requestPrincipals: [{issuer_b}/alice]}}}}]
    to: [{{operation: {{paths: ["/b/*"]}}}}]
  - to: [{{operation: {{paths: ["/open/*", "/strict/*"]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: strict-needs-a-token, namespace: default}}
spec:
  selector: {{matchLabels: {{app: server}}}}
  action: DENY
  rules:
  - from: [{{source: {{notRequestPrincipals: ["*"]}}}}]
    to: [{{operation: {{paths: ["/strict/*"]}}}}]
"""


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _number(value: int) -> str:
    return b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


class EcKey:
    """An ES256 signing key and its public JWK."""

    def __init__(self, kid: str):
        self.kid = kid
        self.key = ec.generate_private_key(ec.SECP256R1())

    def jwk(self) -> dict:
        numbers = self.key.public_key().public_numbers()
        return {"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
                "x": b64(numbers.x.to_bytes(32, "big")), "y": b64(numbers.y.to_bytes(32, "big"))}

    def signature(self, data: bytes) -> bytes:
        r, s = decode_dss_signature(self.key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    alg = "ES256"


class RsaKey:
    """An RS256 signing key and its public JWK."""

    alg = "RS256"

    def __init__(self, kid: str):
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict:
        numbers = self.key.public_key().public_numbers()
        return {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid, "n": _number(numbers.n), "e": _number(numbers.e)}

    def signature(self, data: bytes) -> bytes:
        return self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def token(key, **claims) -> str:
    """A JWT signed by key (kid in the header); exp an hour ahead unless given."""
    claims.setdefault("exp", int(time.time()) + 3600)
    header = {"alg": key.alg, "typ": "JWT", "kid": key.kid}
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    return signing_input + "." + b64(key.signature(signing_input.encode()))


class Server:
    def __init__(self, lab):
        self.key_a, self.key_b = EcKey("a-1"), RsaKey("b-1")
        jwks_b_path = lab.tmp_path / "jwks-b.json"
        jwks_b_path.write_text(json.dumps({"keys": [self.key_b.jwk()]}))
        offset, self.inbound = free_offset(), free_port()
        self.app = lab.backend("server", "server-1")
        lab.write_mesh(MESH.format(
            offset=offset, inbound=self.inbound, app=self.app.port, issuer_a=ISSUER_A, issuer_b=ISSUER_B,
            jwks_a=json.dumps({"keys": [self.key_a.jwk()]}), jwks_b_path=jwks_b_path,
        ))
        self.envoy = lab.proxy("server.default", 15000 + offset)

    def answer(self, path: str, bearer: str = "", headers: dict | None = None) -> tuple[int, str]:
        """(status, body text when it is not the app's JSON)."""
        all_headers = {**({"Authorization": f"Bearer {bearer}"} if bearer else {}), **(headers or {})}
        status, body, _ = request(self.inbound, path, host="server", headers=all_headers)
        return status, body.get("raw", "")

    def get(self, path: str, bearer: str = "", headers: dict | None = None) -> int:
        return self.answer(path, bearer, headers)[0]

    def a_token(self, **claims) -> str:
        return token(self.key_a, **{"iss": ISSUER_A, "sub": "user-1", "aud": "orders", "groups": ["admins", "dev"], **claims})


@pytest.fixture
def server(lab):
    return Server(lab)


def test_a_valid_token_is_authorized_by_its_principal_and_claims(server):
    """A valid token of issuer A whose groups hold admins gets 200 on /a/*; the app sees the
    payload in x-jwt-payload and not the token (forwardOriginalToken is false)."""
    assert server.get("/a/orders", server.a_token()) == 200
    seen = server.app.requests[-1]["headers"]
    assert "authorization" not in seen
    payload = json.loads(base64.urlsafe_b64decode(seen["x-jwt-payload"] + "=" * (-len(seen["x-jwt-payload"]) % 4)))
    assert (payload["iss"], payload["sub"], payload["groups"]) == (ISSUER_A, "user-1", ["admins", "dev"])


def test_claims_and_principals_refuse_what_they_do_not_name(server):
    """Valid tokens that the policy does not let in get 403: groups without admins (also
    as a plain string claim), issuer A's token on issuer B's path."""
    assert server.get("/a/orders", server.a_token(groups=["dev"])) == 403
    assert server.get("/a/orders", server.a_token(groups="admins")) == 200
    assert server.get("/b/orders", server.a_token()) == 403


@pytest.mark.parametrize("claims, key, reason", [
    ({"exp": int(time.time()) - 60}, "a", "Jwt is expired"),
    ({}, "other", "Jwt verification fails"),
], ids=["expired", "bad-signature"])
def test_an_invalid_token_is_refused_with_401(server, claims, key, reason):
    """Expired, or signed by another key (with the same kid): 401 from the JWT filter, on a
    path that needs no token too; the app never sees them."""
    signer = server.key_a if key == "a" else EcKey("a-1")
    bad = token(signer, **{"iss": ISSUER_A, "sub": "user-1", "aud": "orders", "groups": ["admins"], **claims})
    before = server.app.count
    assert server.answer("/a/orders", bad) == (401, reason)
    assert server.answer("/open/orders", bad) == (401, reason)
    assert server.app.count == before


def test_a_token_for_another_audience_is_refused_with_403(server):
    """A token for another audience is refused by the JWT filter itself, with Envoy's 403 for
    audiences (not the RBAC filter's: /open/* needs no token and is refused too)."""
    other = server.a_token(aud="billing")
    assert server.answer("/open/orders", other) == (403, "Audiences in Jwt are not allowed")
    assert server.answer("/a/orders", other) == (403, "Audiences in Jwt are not allowed")


def test_a_token_of_an_issuer_no_rule_names_is_refused(server):
    """A token whose issuer no rule names (signed with a key the proxy knows) is not a
    missing token: 401."""
    assert server.answer("/open/orders", server.a_token(iss="https://other.example")) == (401, "Jwt issuer is not configured")


def test_no_token_passes_authentication_and_fails_authorization(server):
    """Without a token the JWT filter lets the request on (RequestAuthentication alone allows
    it): /open/* answers 200, /a/* and /b/* are refused by the RBAC filter with 403."""
    assert server.get("/open/orders") == 200
    denied = server.envoy.stat(f"http.inbound_{server.inbound}.rbac.allow.denied")
    assert server.get("/a/orders") == 403
    assert server.get("/b/orders") == 403
    assert server.envoy.stat(f"http.inbound_{server.inbound}.rbac.allow.denied") == denied + 2


def test_issuer_b_keys_from_a_file_token_from_a_header_or_a_parameter(server):
    """Issuer B's RS256 keys come from the file; its token is read from x-jwt or ?token= and
    forwarded to the app; alice gets in on /b/*, bob does not."""
    alice, bob = (token(server.key_b, iss=ISSUER_B, sub=name) for name in ("alice", "bob"))
    assert server.get("/b/orders", headers={"x-jwt": alice}) == 200
    assert server.app.requests[-1]["headers"]["x-jwt"] == alice
    assert server.get(f"/b/orders?token={alice}") == 200
    assert server.get("/b/orders", headers={"x-jwt": bob}) == 403
    assert server.get("/b/orders", headers={"x-jwt": alice[:-4] + "AAAA"}) == 401


def test_a_deny_policy_on_not_request_principals_requires_a_token(server):
    """Istio's "require a token": DENY notRequestPrincipals ["*"] refuses /strict/* without a
    token (403 from the DENY filter) and lets a valid token of either issuer in."""
    denied = server.envoy.stat(f"http.inbound_{server.inbound}.rbac.deny.denied")
    assert server.get("/strict/orders") == 403
    assert server.envoy.stat(f"http.inbound_{server.inbound}.rbac.deny.denied") == denied + 1
    assert server.get("/strict/orders", server.a_token(groups=[])) == 200
    assert server.get("/strict/orders", headers={"x-jwt": token(server.key_b, iss=ISSUER_B, sub="bob")}) == 200
