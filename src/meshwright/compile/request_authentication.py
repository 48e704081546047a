"""RequestAuthentication -> Envoy's JWT filter (envoy.filters.http.jwt_authn) on a workload's
HTTP inbound listeners (and a gateway's), before the RBAC filters, as Istio builds it.

Istio's semantics: a request that carries a token must carry a valid one (signature by the
JWKS, issuer, audiences, expiry): otherwise 401. A request without a token passes; an
AuthorizationPolicy that needs `requestPrincipals` or `request.auth.*` then refuses it (403).
Each JWT rule is one provider (`origins-<index>`, rules sorted by issuer); the payload of a
valid token is kept in the filter's dynamic metadata under "payload", where the RBAC
filters read the claims (compile/authorization.py).

Keys come from the rule's inline `jwks`, or from a file on the proxy's host named by
`jwksUri: file:///PATH` (meshwright's; Istio fetches http(s) URIs, which meshwright
refuses). The selection of policies is AuthorizationPolicy's: a selector picks workloads in
its namespace, no selector the whole namespace, the root namespace every namespace.
"""

from __future__ import annotations

from meshwright.compile.envoy_values import TYPE_PREFIX, typed
from meshwright.mesh import ROOT_NAMESPACE, Mesh
from meshwright.model.resource import Resource

JWT_AUTHN = TYPE_PREFIX + "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
JWT_FILTER = "envoy.filters.http.jwt_authn"
PAYLOAD_KEY = "payload"  # the token's payload in the filter's dynamic metadata
FILE_SCHEME = "file://"
# Istio treats these claims as space-delimited lists ("scope": "a b" matches "a").
DEFAULT_SPACE_DELIMITED_CLAIMS = ("permission", "scope")


def policies_of_kind(mesh: Mesh, kind: str, namespace: str, labels: tuple) -> list[Resource]:
    """The policies of kind (AuthorizationPolicy, RequestAuthentication) that apply to a
    workload, in (namespace, name) order."""

    def compute():
        chosen = [
            policy
            for policy_namespace in {namespace, ROOT_NAMESPACE}
            for policy in mesh.without_selector(kind, policy_namespace) + mesh.selecting(kind, policy_namespace, dict(labels))
        ]
        return sorted(chosen, key=lambda policy: (policy.namespace, policy.name))

    return mesh.memo(("policies-of-kind", kind, namespace, labels), compute)


def jwks_source(rule: dict) -> dict:
    """Envoy's local_jwks: the inline keys, or the file a file:// jwksUri names."""
    if "jwks" in rule:
        return {"inline_string": rule["jwks"]}
    return {"filename": rule["jwksUri"][len(FILE_SCHEME):]}


def space_delimited_claims(rule: dict) -> list[str]:
    return sorted(set(rule.get("spaceDelimitedClaims") or ()) | set(DEFAULT_SPACE_DELIMITED_CLAIMS))


def jwt_provider(rule: dict) -> dict:
    """One Istio JWT rule as an Envoy JwtProvider (only the fields the rule sets, plus
    Istio's payload metadata and space-delimited claims)."""
    provider: dict = {"issuer": rule["issuer"]}
    if rule.get("audiences"):
        provider["audiences"] = list(rule["audiences"])
    provider["local_jwks"] = jwks_source(rule)
    if rule.get("forwardOriginalToken"):
        provider["forward"] = True
    if rule.get("fromHeaders"):
        provider["from_headers"] = [{"name": h["name"], **({"value_prefix": h["prefix"]} if "prefix" in h else {})} for h in rule["fromHeaders"]]
    if rule.get("fromParams"):
        provider["from_params"] = list(rule["fromParams"])
    if rule.get("fromCookies"):
        provider["from_cookies"] = list(rule["fromCookies"])
    if rule.get("outputPayloadToHeader"):
        provider["forward_payload_header"] = rule["outputPayloadToHeader"]
    if rule.get("outputClaimToHeaders"):
        provider["claim_to_headers"] = [{"header_name": c["header"], "claim_name": c["claim"]} for c in rule["outputClaimToHeaders"]]
    provider["payload_in_metadata"] = PAYLOAD_KEY
    provider["normalize_payload_in_metadata"] = {"space_delimited_claims": space_delimited_claims(rule)}
    return provider


def _provider(name: str) -> dict:
    return {"provider_name": name}


def requirement(names: list[str]) -> dict:
    """Istio's requirement: every token present must be valid, a missing one is allowed.
    One provider: it or nothing. Several: any one of them (they may share a location, where
    a token can satisfy only its own issuer), or all of them each valid-or-missing."""
    each = [{"requires_any": {"requirements": [_provider(name), {"allow_missing": {}}]}} for name in names]
    if len(each) == 1:
        return each[0]
    return {"requires_any": {"requirements": [_provider(name) for name in names] + [{"requires_all": {"requirements": each}}]}}


def jwt_rules(policies: list[Resource]) -> list[dict]:
    """The JWT rules of every policy, sorted by issuer (stable: policy order within one)."""
    rules = [rule for policy in policies for rule in policy.spec.get("jwtRules") or []]
    return sorted(rules, key=lambda rule: rule["issuer"])


def jwt_filter(mesh: Mesh, namespace: str, labels: tuple) -> dict | None:
    """The JWT filter of a workload's HTTP listeners; None without RequestAuthentication
    rules."""
    rules = jwt_rules(policies_of_kind(mesh, "RequestAuthentication", namespace, labels))
    if not rules:
        return None
    providers = {f"origins-{index}": jwt_provider(rule) for index, rule in enumerate(rules)}
    config = typed(
        JWT_AUTHN,
        providers=providers,
        rules=[{"match": {"prefix": "/"}, "requires": requirement(list(providers))}],
        bypass_cors_preflight=True,
    )
    return {"name": JWT_FILTER, "typed_config": config}
