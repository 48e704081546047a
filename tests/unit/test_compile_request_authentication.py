"""RequestAuthentication compiled as Istio does: Envoy's JWT filter before the RBAC filters on
the selected workloads' HTTP inbound listeners (a provider per rule sorted by issuer, each
token valid or missing, the payload in dynamic metadata); AuthorizationPolicy request
principals and request.auth.* read that payload; on TCP they are HTTP-only fields."""

from __future__ import annotations

from tests.unit.security_mesh import compiled, listener_on, load_mesh
from tests.unit.test_compile_authorization import http_filters, policy

JWKS = '{"keys": [{"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}]}'


def request_authentication(name: str, body: str, namespace: str = "default") -> str:
    return f"apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{body}"


TWO_ISSUERS = request_authentication("jwt", f"""\
  selector: {{matchLabels: {{app: server}}}}
  jwtRules:
  - issuer: z.example
    jwksUri: file:///etc/meshwright/jwks/z.json
    fromHeaders: [{{name: x-jwt, prefix: "Token "}}]
    fromParams: [token]
    fromCookies: [session]
    forwardOriginalToken: true
    outputClaimToHeaders: [{{header: x-user, claim: sub}}]
    spaceDelimitedClaims: [roles]
  - issuer: https://a.example
    jwks: '{JWKS}'
    audiences: [orders, billing]
    outputPayloadToHeader: x-jwt-payload
""")


def test_jwt_filter_before_rbac_with_istio_providers_and_requirements(tmp_path):
    mesh = load_mesh(tmp_path, TWO_ISSUERS, policy("p", "  rules: [{}]\n"))
    filters = http_filters(compiled(mesh, "server-1.default"), 8080)
    assert [f["name"] for f in filters[:2]] == ["envoy.filters.http.jwt_authn", "envoy.filters.http.rbac"]
    config = filters[0]["typed_config"]
    assert config["@type"] == "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
    assert config["providers"] == {
        "origins-0": {
            "issuer": "https://a.example", "audiences": ["orders", "billing"], "local_jwks": {"inline_string": JWKS},
            "forward_payload_header": "x-jwt-payload", "payload_in_metadata": "payload",
            "normalize_payload_in_metadata": {"space_delimited_claims": ["permission", "scope"]},
        },
        "origins-1": {
            "issuer": "z.example", "local_jwks": {"filename": "/etc/meshwright/jwks/z.json"}, "forward": True,
            "from_headers": [{"name": "x-jwt", "value_prefix": "Token "}], "from_params": ["token"], "from_cookies": ["session"],
            "claim_to_headers": [{"header_name": "x-user", "claim_name": "sub"}], "payload_in_metadata": "payload",
            "normalize_payload_in_metadata": {"space_delimited_claims": ["permission", "roles", "scope"]},
        },
    }
    valid_or_missing = [{"requires_any": {"requirements": [{"provider_name": name}, {"allow_missing": {}}]}} for name in ("origins-0", "origins-1")]
    assert config["rules"] == [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
        {"provider_name": "origins-0"}, {"provider_name": "origins-1"}, {"requires_all": {"requirements": valid_or_missing}},
    ]}}}]
    assert config["bypass_cors_preflight"] is True


def test_one_issuer_is_valid_or_missing_and_no_policy_no_filter(tmp_path):
    """One rule: that provider or no token. Without RequestAuthentication there is no JWT
    filter; without AuthorizationPolicy the JWT filter stands alone."""
    one = request_authentication("jwt", f"  jwtRules: [{{issuer: a.example, jwks: '{JWKS}'}}]\n")
    with_jwt, without = tmp_path / "with-jwt", tmp_path / "without"
    with_jwt.mkdir(), without.mkdir()
    filters = http_filters(compiled(load_mesh(with_jwt, one), "server-1.default"), 8080)
    assert filters[0]["name"] == "envoy.filters.http.jwt_authn" and filters[1]["name"] != "envoy.filters.http.rbac"
    assert filters[0]["typed_config"]["rules"][0]["requires"] == {"requires_any": {"requirements": [{"provider_name": "origins-0"}, {"allow_missing": {}}]}}
    filters = http_filters(compiled(load_mesh(without), "server-1.default"), 8080)
    assert "envoy.filters.http.jwt_authn" not in [f["name"] for f in filters]


def payload(*claims: str, value: dict) -> dict:
    return {"metadata": {"filter": "envoy.filters.http.jwt_authn", "path": [{"key": "payload"}] + [{"key": c} for c in claims], "value": value}}


def string_or_list(*matchers: dict) -> dict:
    """Istio's claim value: one of the strings, or a list holding one."""
    one = {"string_match": matchers[0]} if len(matchers) == 1 else {"or_match": {"value_matchers": [{"string_match": m} for m in matchers]}}
    return {"or_match": {"value_matchers": [{"list_match": {"one_of": one}}, one]}}


def issuer_subject(issuer: dict, subject: dict) -> dict:
    return {"and_ids": {"ids": [payload("iss", value={"string_match": issuer}), payload("sub", value={"string_match": subject})]}}


JWT_POLICY = policy("jwt-rules", """\
  selector: {matchLabels: {app: server}}
  action: DENY
  rules:
  - from: [{source: {requestPrincipals: ["https://a.example/alice", "https://a.example/*", "*/bob", "*", "*@corp"], notRequestPrincipals: ["a.example*"]}}]
    when:
    - {key: request.auth.principal, values: [z.example/svc]}
    - {key: request.auth.audiences, values: [orders, billing]}
    - {key: request.auth.presenter, notValues: [web]}
    - {key: "request.auth.claims[groups]", values: ["admin*"]}
    - {key: "request.auth.claims[realm][role]", values: [ops]}
""")
ANY = {"safe_regex": {"regex": ".+"}}


def test_request_principals_and_claims_read_the_jwt_payload(tmp_path):
    """Request principals "<iss>/<sub>" split at the last "/" with Istio's wildcards; claims,
    audiences (aud) and presenter (azp) as a string or a list holding it; nested claims."""
    mesh = load_mesh(tmp_path, JWT_POLICY)
    [deny, *_] = http_filters(compiled(mesh, "server-1.default"), 8080)
    envoy_policy = deny["typed_config"]["rules"]["policies"]["ns[default]-policy[jwt-rules]-rule[0]"]
    assert envoy_policy["permissions"] == [{"any": True}]
    assert envoy_policy["principals"] == [{"and_ids": {"ids": [
        {"or_ids": {"ids": [
            issuer_subject({"exact": "https://a.example"}, {"exact": "alice"}),
            issuer_subject({"exact": "https://a.example"}, ANY),
            issuer_subject(ANY, {"exact": "bob"}),
            issuer_subject(ANY, ANY),
            issuer_subject(ANY, {"suffix": "@corp"}),
        ]}},
        {"not_id": issuer_subject({"prefix": "a.example"}, ANY)},
        # (an AND inside the rule's AND is flattened)
        *issuer_subject({"exact": "z.example"}, {"exact": "svc"})["and_ids"]["ids"],
        payload("aud", value=string_or_list({"exact": "orders"}, {"exact": "billing"})),
        {"not_id": payload("azp", value=string_or_list({"exact": "web"}))},
        payload("groups", value=string_or_list({"prefix": "admin"})),
        payload("realm", "role", value=string_or_list({"exact": "ops"})),
    ]}}]


def test_jwt_fields_are_http_only(tmp_path):
    """On TCP 9000 the DENY rule keeps none of its JWT matchers (it denies every connection,
    as Istio: HTTP-only fields drop out of a DENY rule); an ALLOW rule with them matches
    nothing; no JWT filter on TCP."""
    allow = policy("allow-jwt", "  selector: {matchLabels: {app: server}}\n  rules:\n  - from: [{source: {requestPrincipals: ['*']}}]\n")
    mesh = load_mesh(tmp_path, JWT_POLICY, allow, TWO_ISSUERS)
    filters = listener_on(compiled(mesh, "server-1.default"), 9000)["filter_chains"][0]["filters"]
    assert [f["name"] for f in filters] == ["envoy.filters.network.rbac", "envoy.filters.network.rbac", "envoy.filters.network.tcp_proxy"]
    deny, allow = filters[0]["typed_config"]["rules"], filters[1]["typed_config"]["rules"]
    assert deny["policies"]["ns[default]-policy[jwt-rules]-rule[0]"] == {"permissions": [{"any": True}], "principals": [{"any": True}]}
    assert allow == {"action": "ALLOW", "policies": {}}
