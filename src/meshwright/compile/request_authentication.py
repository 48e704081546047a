"""RequestAuthentication -> Envoy's JWT filter (envoy.filters.http.jwt_authn) on a workload's
HTTP inbound listeners (and a gateway's), before the RBAC filters, as Istio builds it.

Istio's semantics: a request that carries a token must carry a valid one (signature by the
JWKS, issuer, audiences, expiry): otherwise 401. A request without a token passes; an
AuthorizationPolicy that needs `requestPrincipals` or `request.auth.*` then refuses it (403).
Each JWT rule is one provider (`origins-<index>`, rules sorted by issuer); the payload of a
valid token is kept in the filter's dynamic metadata under "payload", where the RBAC
filters read the claims (compile/authorization.py).

Keys come from the rule's inline `jwks`, from a file on the proxy's host named by
`jwksUri: file:///PATH` (meshwright's), or from an http(s) `jwksUri` that Envoy fetches
itself (remote_jwks, Istio's PILOT_JWT_ENABLE_REMOTE_JWKS=envoy) through a cluster of its
own per host and port (jwks_clusters: DNS; TLS for https, checked against the system's trust
store), cached for Istio's refresh interval. The selection of policies is AuthorizationPolicy's: a selector picks workloads in
its namespace, no selector the whole namespace, the root namespace every namespace.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from meshwright.compile.envoy_values import TYPE_PREFIX, UPSTREAM_TLS, socket_address, subject_alt_name_matchers, tls_params, typed
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
            for policy_namespace in sorted({namespace, ROOT_NAMESPACE})
            for policy in mesh.without_selector(kind, policy_namespace) + mesh.selecting(kind, policy_namespace, dict(labels))
        ]
        return sorted(chosen, key=lambda policy: (policy.namespace, policy.name))

    return mesh.memo(("policies-of-kind", kind, namespace, labels), compute)


# Istio's defaults: a JWKS fetch times out after 5s, keys are fetched again every 20 minutes.
DEFAULT_JWKS_TIMEOUT, JWKS_CACHE_DURATION = "5s", "1200s"
JWKS_CONNECT_TIMEOUT = "10s"


def is_remote_jwks(rule: dict) -> bool:
    return rule.get("jwksUri", "").startswith(("http://", "https://"))


def jwks_endpoint(uri: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) jwksUri (validation checked its shape)."""
    parts = urlsplit(uri)
    return parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def jwks_cluster_name(uri: str) -> str:
    scheme, host, port = jwks_endpoint(uri)
    return f"jwks|{scheme}|{host}|{port}"


def jwks_source(rule: dict) -> dict:
    """Envoy's local_jwks: the inline keys, or the file a file:// jwksUri names."""
    if "jwks" in rule:
        return {"inline_string": rule["jwks"]}
    return {"filename": rule["jwksUri"][len(FILE_SCHEME):]}


def _jwks(rule: dict) -> dict:
    """The provider's keys: local_jwks, or remote_jwks fetched through the URI's cluster."""
    if not is_remote_jwks(rule):
        return {"local_jwks": jwks_source(rule)}
    uri = rule["jwksUri"]
    http_uri = {"uri": uri, "cluster": jwks_cluster_name(uri), "timeout": rule.get("timeout", DEFAULT_JWKS_TIMEOUT)}
    return {"remote_jwks": {"http_uri": http_uri, "cache_duration": JWKS_CACHE_DURATION}}


def jwks_cluster(uri: str, system_ca: str) -> dict:
    """The cluster Envoy fetches an http(s) jwksUri through: the host by DNS; for https, TLS
    with the host as SNI, its certificate checked against the system's trust store and the
    host name."""
    scheme, host, port = jwks_endpoint(uri)
    name = jwks_cluster_name(uri)
    cluster: dict = {
        "name": name, "type": "STRICT_DNS", "dns_lookup_family": "V4_ONLY", "connect_timeout": JWKS_CONNECT_TIMEOUT,
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address(host, port)}}]}]},
    }
    if scheme == "https":
        context = {"sni": host, "common_tls_context": {"tls_params": tls_params(), "validation_context": {
            "trusted_ca": {"filename": system_ca}, "match_typed_subject_alt_names": subject_alt_name_matchers([host])}}}
        cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": typed(UPSTREAM_TLS, **context)}
    return cluster


def jwks_clusters(mesh: Mesh, namespace: str, labels: tuple) -> list[dict]:
    """The clusters of the http(s) jwksUris of the RequestAuthentications that apply to a
    workload, one per scheme, host and port."""
    uris = {rule["jwksUri"] for rule in jwt_rules(policies_of_kind(mesh, "RequestAuthentication", namespace, labels)) if is_remote_jwks(rule)}
    clusters = {jwks_cluster_name(uri): jwks_cluster(uri, mesh.settings.system_ca_certificates) for uri in sorted(uris)}
    return [clusters[name] for name in sorted(clusters)]


def space_delimited_claims(rule: dict) -> list[str]:
    return sorted(set(rule.get("spaceDelimitedClaims") or ()) | set(DEFAULT_SPACE_DELIMITED_CLAIMS))


def jwt_provider(rule: dict) -> dict:
    """One Istio JWT rule as an Envoy JwtProvider (only the fields the rule sets, plus
    Istio's payload metadata and space-delimited claims)."""
    provider: dict = {"issuer": rule["issuer"]}
    if rule.get("audiences"):
        provider["audiences"] = list(rule["audiences"])
    provider.update(_jwks(rule))
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
