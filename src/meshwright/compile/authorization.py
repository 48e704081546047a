"""AuthorizationPolicy -> Envoy RBAC filters on a workload's inbound listeners (Istio's
translation): DENY policies in one RBAC filter, evaluated first, then ALLOW policies in a
second. A request a DENY rule matches is refused; when any ALLOW policy applies, a request no
ALLOW rule matches is refused too (403 on HTTP, a closed connection on TCP). Each filter
counts what it allows and denies: http.inbound_<port>.rbac.{deny,allow}.{allowed,denied} on
HTTP, inbound_<port>.{deny,allow}.rbac.{allowed,denied} on TCP.

A policy applies to the workloads its selector picks in its namespace; without selector to
the whole namespace; in the root namespace (istio-system) to every namespace. Principals
are the SPIFFE IDs of client certificates, so they need mTLS.

Trust domains, as Istio: a principal `<td>/ns/<ns>/sa/<sa>` whose trust domain is
`cluster.local` (a pointer to the mesh's own), the mesh's trustDomain or one of its
trustDomainAliases matches that workload in every one of them (the trust domain and each
alias). A principal in any other trust domain is kept as written (validation warns).

Addresses, as Istio: `ipBlocks` and the `source.ip` condition are the direct peer's address
(Envoy's direct_remote_ip), `remoteIpBlocks` and `remote.ip` the original client's (Envoy's
remote_ip: from X-Forwarded-For where the listener trusts it, else the peer's). Operation
`hosts` match the Host header without regard to case, exactly as written (a port included:
"example.com:*" for any port).

Request principals and `request.auth.*` conditions match the payload of the request's JWT,
which the JWT filter of a RequestAuthentication (compile/request_authentication.py) keeps in
its dynamic metadata: a request principal is "<iss>/<sub>", a claim matches when it is the
value or a list holding it. A request without a (valid) token has no payload: it matches none.

On TCP listeners only the connection is known: an ALLOW rule that needs HTTP fields (paths,
methods, hosts, request headers, request principals, request.auth.*) matches nothing there,
and a DENY rule is applied without them (it denies more), as Istio does.
"""

from __future__ import annotations

import ipaddress
import re

from meshwright.compile.envoy_values import HCM_FILTER, TYPE_PREFIX, typed
from meshwright.compile.ext_authz import POLICY_PREFIX, SHADOW_PREFIX, custom_policies, ext_authz_filter, is_grpc_provider, network_ext_authz_filter
from meshwright.compile.request_authentication import JWT_FILTER, PAYLOAD_KEY, jwt_filter, policies_of_kind
from meshwright.mesh import Mesh
from meshwright.model.resource import Resource

HTTP_RBAC = TYPE_PREFIX + "envoy.extensions.filters.http.rbac.v3.RBAC"
NETWORK_RBAC = TYPE_PREFIX + "envoy.extensions.filters.network.rbac.v3.RBAC"
HTTP_RBAC_FILTER = "envoy.filters.http.rbac"
NETWORK_RBAC_FILTER = "envoy.filters.network.rbac"
ACTIONS = ("DENY", "ALLOW")  # the order Envoy evaluates them in
HTTP_ONLY_OPERATION_FIELDS = ("paths", "notPaths", "methods", "notMethods", "hosts", "notHosts")
HTTP_ONLY_SOURCE_FIELDS = ("requestPrincipals", "notRequestPrincipals")
HTTP_ONLY_CONDITION_PREFIXES = ("request.headers[", "request.auth.")
URI_TEMPLATE = TYPE_PREFIX + "envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig"
# Istio's path template operators: one path segment, and any number of them (last only).
MATCH_ONE_TEMPLATE, MATCH_ANY_TEMPLATE = "{*}", "{**}"


def policies_for(mesh: Mesh, namespace: str, labels: tuple) -> list[Resource]:
    """The AuthorizationPolicies that apply to a workload, in (namespace, name) order."""
    return policies_of_kind(mesh, "AuthorizationPolicy", namespace, labels)


# --- trust domains ------------------------------------------------------------------------

LOCAL_TRUST_DOMAIN = "cluster.local"


def wildcard_matches(pattern: str, value: str) -> bool:
    """Istio's "*", "prefix*" and "*suffix" values (string_matcher's rule, in Python)."""
    if pattern == "*":
        return bool(value)
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return pattern == value


def principal_trust_domain(principal: str) -> str | None:
    """The trust domain a principal enforces: None when it does not name one (not of the
    form td/ns/x/sa/y, or td is "*"), as Istio's isTrustDomainBeingEnforced."""
    parts = principal.split("/")
    if len(parts) != 5 or parts[0] == "*":
        return None
    return parts[0]


def is_mesh_trust_domain(trust_domain: str, trust_domains: tuple[str, ...]) -> bool:
    """cluster.local, or (a pattern of) the mesh's trust domain or one of its aliases."""
    return trust_domain == LOCAL_TRUST_DOMAIN or any(wildcard_matches(trust_domain, td) for td in trust_domains)


def with_trust_domain_aliases(principals: list[str], trust_domains: tuple[str, ...]) -> list[str]:
    """Istio's ReplaceTrustDomainAliases: each principal in the mesh's trust domains becomes
    one per trust domain (a wildcard trust domain that matches one is kept as written)."""
    out: list[str] = []
    for principal in principals:
        trust_domain = principal_trust_domain(principal)
        if trust_domain is None or not is_mesh_trust_domain(trust_domain, trust_domains):
            out.append(principal)
            continue
        rest = principal.split("/", 1)[1]
        for td in trust_domains:
            out.append(principal if "*" in trust_domain and wildcard_matches(trust_domain, td) else f"{td}/{rest}")
    return list(dict.fromkeys(out))


# --- values -> Envoy matchers -------------------------------------------------------------

def string_matcher(value: str, prefix: str = "") -> dict:
    """Istio's wildcard values: "*" any non-empty value, "abc*" a prefix, "*abc" a suffix,
    anything else exact; prefix is put before the value (principals: "spiffe://")."""
    if value == "*":
        return {"safe_regex": {"regex": ".+"}}
    if value.endswith("*"):
        return {"prefix": prefix + value[:-1]}
    if value.startswith("*"):
        return {"suffix": value[1:]}
    return {"exact": prefix + value}


def _namespace_regex(value: str) -> dict:
    """A namespace matched inside the SPIFFE ID (".../ns/<namespace>/sa/...")."""
    if value == "*":
        return {"safe_regex": {"regex": ".+"}}
    pattern = re.escape(value.strip("*"))
    if value.endswith("*"):
        pattern += "[^/]*"
    elif value.startswith("*"):
        pattern = "[^/]*" + pattern
    return {"safe_regex": {"regex": f".*/ns/{pattern}/.*"}}


def _any_of(items: list[dict], kind: str) -> dict:
    """One matcher, or an OR of several (nested ORs flattened). kind: "rules" (permissions)
    or "ids" (principals)."""
    flat = []
    for item in items:
        flat += item[f"or_{kind}"][kind] if f"or_{kind}" in item else [item]
    return flat[0] if len(flat) == 1 else {f"or_{kind}": {kind: flat}}


def _all_of(items: list[dict], kind: str) -> dict:
    """All of the matchers (nested ANDs flattened; none: anything matches)."""
    flat = []
    for item in items:
        flat += item[f"and_{kind}"][kind] if f"and_{kind}" in item else [item] if item != {"any": True} else []
    if not flat:
        return {"any": True}
    return flat[0] if len(flat) == 1 else {f"and_{kind}": {kind: flat}}


def _negated(item: dict, kind: str) -> dict:
    return {"not_rule": item} if kind == "rules" else {"not_id": item}


def _principal(value: str) -> dict:
    return {"authenticated": {"principal_name": string_matcher(value, "spiffe://")}}


def _namespace(value: str) -> dict:
    return {"authenticated": {"principal_name": _namespace_regex(value)}}


def is_path_template(value: str) -> bool:
    """Whether a rule's path is a template (`/api/{*}/status`, `/files/{**}`), as Istio reads it."""
    return MATCH_ONE_TEMPLATE in value or MATCH_ANY_TEMPLATE in value


def _path(value: str) -> dict:
    if is_path_template(value):
        # Istio's translation: Envoy's URI template matcher, with {*} -> * and {**} -> **.
        template = value.replace(MATCH_ANY_TEMPLATE, "**").replace(MATCH_ONE_TEMPLATE, "*")
        return {"uri_template": {"name": "uri-template", "typed_config": typed(URI_TEMPLATE, path_template=template)}}
    return {"url_path": {"path": string_matcher(value)}}


def _header(name: str, value: str) -> dict:
    if value == "*":
        return {"header": {"name": name, "present_match": True}}
    return {"header": {"name": name, "string_match": string_matcher(value)}}


def _port(value: str) -> dict:
    return {"destination_port": int(value)}


def _host(value: str) -> dict:
    """The Host header (:authority), case-insensitive as Istio matches it (RFC 4343)."""
    if value == "*":
        return {"header": {"name": ":authority", "present_match": True}}
    return {"header": {"name": ":authority", "string_match": {**string_matcher(value), "ignore_case": True}}}


def _cidr(value: str) -> dict:
    """An address or CIDR block as Envoy's CidrRange (a lone address: /32 or /128)."""
    interface = ipaddress.ip_interface(value)
    return {"address_prefix": str(interface.ip), "prefix_len": interface.network.prefixlen}


def _direct_remote_ip(value: str) -> dict:
    return {"direct_remote_ip": _cidr(value)}


def _remote_ip(value: str) -> dict:
    return {"remote_ip": _cidr(value)}


def _destination_ip(value: str) -> dict:
    return {"destination_ip": _cidr(value)}


def _server_name(value: str) -> dict:
    return {"requested_server_name": string_matcher(value)}


def service_account_regex(value: str, policy_namespace: str) -> str:
    """Istio's serviceAccounts value, NAME (in the policy's namespace) or NAMESPACE/NAME, as a
    regex on the SPIFFE ID: any trust domain, and extra segments only as whole segments."""
    namespace, dummy, name = value.rpartition("/")
    return f"spiffe://.+/ns/{re.escape(namespace or policy_namespace)}/(.+/|)sa/{re.escape(name)}(/.+)?"


def _service_account(policy_namespace: str):
    return lambda value: {"authenticated": {"principal_name": {"safe_regex": {"regex": service_account_regex(value, policy_namespace)}}}}


def _field(values: list[str] | None, negated: list[str] | None, make, kind: str) -> list[dict]:
    """Matchers of an Istio field and its not-field: any of values, and none of negated."""
    return _grouped(values, negated, lambda group: _any_of([make(v) for v in group], kind), kind)


def _grouped(values: list[str] | None, negated: list[str] | None, make_group, kind: str) -> list[dict]:
    """As _field, for fields whose values make one matcher together (JWT claims)."""
    out = []
    if values:
        out.append(make_group(values))
    if negated:
        out.append(_negated(make_group(negated), kind))
    return out


# --- JWT payload (the JWT filter's dynamic metadata) ----------------------------------------

ANY_VALUE = {"safe_regex": {"regex": ".+"}}


def _payload_matcher(claims: list[str], value: dict) -> dict:
    """A claim of the token's payload (claims: its path, nested claims in order) and a value matcher."""
    path = [{"key": PAYLOAD_KEY}] + [{"key": claim} for claim in claims]
    return {"metadata": {"filter": JWT_FILTER, "path": path, "value": value}}


def _claim_values(values: list[str]) -> dict:
    """Istio's: the claim is one of values, or a list holding one of them."""
    matchers = [{"string_match": string_matcher(v)} for v in values]
    one_of = matchers[0] if len(matchers) == 1 else {"or_match": {"value_matchers": matchers}}
    return {"or_match": {"value_matchers": [{"list_match": {"one_of": one_of}}, one_of]}}


def _claim(claims: list[str]):
    return lambda values: _payload_matcher(claims, _claim_values(values))


def _issuer_and_subject(value: str) -> tuple[dict, dict]:
    """Istio's request principal "<iss>/<sub>" (split at the last "/", the issuer may be a
    URL) with its wildcards, as matchers of the iss and sub claims."""
    issuer, slash, subject = value.rpartition("/")
    if not slash:
        issuer, subject = value, ""
    if value == "*":
        return ANY_VALUE, ANY_VALUE
    if value.startswith("*"):
        if not slash:
            return ANY_VALUE, {"suffix": value[1:]}
        return (ANY_VALUE if issuer == "*" else {"suffix": issuer[1:]}), {"exact": subject}
    if value.endswith("*"):
        if not slash:
            return {"prefix": value[:-1]}, ANY_VALUE
        return {"exact": issuer}, (ANY_VALUE if subject == "*" else {"prefix": subject[:-1]})
    return {"exact": issuer}, {"exact": subject}


def _request_principal(value: str) -> dict:
    issuer, subject = _issuer_and_subject(value)
    claims = [_payload_matcher([claim], {"string_match": matcher}) for claim, matcher in (("iss", issuer), ("sub", subject))]
    return {"and_ids": {"ids": claims}}


def _request_principals(values: list[str]) -> dict:
    return _any_of([_request_principal(v) for v in values], "ids")


def claim_path(key: str) -> list[str]:
    """request.auth.claims[a][b] -> ["a", "b"]."""
    return key[len("request.auth.claims["):-1].split("][")


# --- rules --------------------------------------------------------------------------------

def _principals(values: list[str] | None, trust_domains: tuple[str, ...]) -> list[str] | None:
    return with_trust_domain_aliases(values, trust_domains) if values else values


def _source(source: dict, http: bool, trust_domains: tuple[str, ...], policy_namespace: str) -> dict:
    principals, negated = (_principals(source.get(f), trust_domains) for f in ("principals", "notPrincipals"))
    ids = _field(principals, negated, _principal, "ids")
    if http:
        ids += _grouped(source.get("requestPrincipals"), source.get("notRequestPrincipals"), _request_principals, "ids")
    ids += _field(source.get("namespaces"), source.get("notNamespaces"), _namespace, "ids")
    ids += _field(source.get("serviceAccounts"), source.get("notServiceAccounts"), _service_account(policy_namespace), "ids")
    ids += _field(source.get("ipBlocks"), source.get("notIpBlocks"), _direct_remote_ip, "ids")
    ids += _field(source.get("remoteIpBlocks"), source.get("notRemoteIpBlocks"), _remote_ip, "ids")
    return _all_of(ids, "ids")


def _operation(operation: dict, http: bool) -> dict:
    rules = []
    if http:
        rules += _field(operation.get("hosts"), operation.get("notHosts"), _host, "rules")
        rules += _field(operation.get("paths"), operation.get("notPaths"), _path, "rules")
        rules += _field(operation.get("methods"), operation.get("notMethods"), lambda m: _header(":method", m), "rules")
    rules += _field(operation.get("ports"), operation.get("notPorts"), _port, "rules")
    return _all_of(rules, "rules")


# when keys -> (the side of the Envoy policy, the matcher of one value); source.principal,
# source.serviceAccount and request.headers[...] are built apart (they need more than the value).
CONDITION_MATCHERS = {
    "source.namespace": ("ids", _namespace),
    "source.ip": ("ids", _direct_remote_ip),
    "remote.ip": ("ids", _remote_ip),
    "destination.ip": ("rules", _destination_ip),
    "destination.port": ("rules", _port),
    "connection.sni": ("rules", _server_name),
}


# request.auth.* keys -> the payload claims they read (request.auth.claims[...] names its own).
JWT_CONDITION_CLAIMS = {"request.auth.audiences": ["aud"], "request.auth.presenter": ["azp"]}


def is_http_only_condition(key: str) -> bool:
    return key.startswith(HTTP_ONLY_CONDITION_PREFIXES)


def _http_condition(key: str, values: list[str] | None, negated: list[str] | None) -> tuple[str, list[dict]]:
    if key == "request.auth.principal":
        return "ids", _grouped(values, negated, _request_principals, "ids")
    if key in JWT_CONDITION_CLAIMS:
        return "ids", _grouped(values, negated, _claim(JWT_CONDITION_CLAIMS[key]), "ids")
    if key.startswith("request.auth.claims["):
        return "ids", _grouped(values, negated, _claim(claim_path(key)), "ids")
    name = key[len("request.headers["):-1]
    return "rules", _field(values, negated, lambda v: _header(name, v), "rules")


def _condition(condition: dict, http: bool, trust_domains: tuple[str, ...], policy_namespace: str) -> tuple[str, list[dict]]:
    """("ids" or "rules", matchers) of a when condition."""
    key = condition["key"]
    values, negated = condition.get("values"), condition.get("notValues")
    if key == "source.principal":
        return "ids", _field(_principals(values, trust_domains), _principals(negated, trust_domains), _principal, "ids")
    if key == "source.serviceAccount":
        return "ids", _field(values, negated, _service_account(policy_namespace), "ids")
    if key in CONDITION_MATCHERS:
        kind, make = CONDITION_MATCHERS[key]
        return kind, _field(values, negated, make, kind)
    if not http:
        return "rules", []
    return _http_condition(key, values, negated)


def needs_http(rule: dict) -> bool:
    """Whether a rule names anything only an HTTP request has."""
    operations = [to["operation"] for to in rule.get("to") or []]
    sources = [entry["source"] for entry in rule.get("from") or []]
    return (
        any(field in operation for operation in operations for field in HTTP_ONLY_OPERATION_FIELDS)
        or any(field in source for source in sources for field in HTTP_ONLY_SOURCE_FIELDS)
        or any(is_http_only_condition(condition["key"]) for condition in rule.get("when") or [])
    )


def envoy_policy(rule: dict, http: bool, trust_domains: tuple[str, ...] = (LOCAL_TRUST_DOMAIN,), policy_namespace: str = "default") -> dict:
    """One Istio rule -> one Envoy RBAC policy: any of its sources, any of its operations,
    and all of its conditions (trust_domains: the mesh's, then its aliases; policy_namespace:
    where a service account named without namespace is)."""
    principals, permissions = [], []
    if rule.get("from"):
        principals.append(_any_of([_source(entry["source"], http, trust_domains, policy_namespace) for entry in rule["from"]], "ids"))
    if rule.get("to"):
        permissions.append(_any_of([_operation(entry["operation"], http) for entry in rule["to"]], "rules"))
    for condition in rule.get("when") or []:
        kind, matchers = _condition(condition, http, trust_domains, policy_namespace)
        (principals if kind == "ids" else permissions).extend(matchers)
    return {"permissions": [_all_of(permissions, "rules")], "principals": [_all_of(principals, "ids")]}


def rbac_rules(policies: list[Resource], action: str, http: bool, trust_domains: tuple[str, ...]) -> dict | None:
    """Envoy RBAC rules of the policies with one action; None when none has that action."""
    chosen = [p for p in policies if p.spec.get("action", "ALLOW") == action]
    if not chosen:
        return None
    envoy_policies = {}
    for policy in chosen:
        for index, rule in enumerate(policy.spec.get("rules") or []):
            if not http and needs_http(rule) and action == "ALLOW":
                continue  # matches nothing on TCP
            envoy_policies[f"ns[{policy.namespace}]-policy[{policy.name}]-rule[{index}]"] = envoy_policy(rule, http, trust_domains, policy.namespace)
    if action == "DENY" and not envoy_policies:
        return None  # a DENY policy without rules denies nothing
    # An ALLOW policy without rules (Istio's allow-nothing) leaves the rules empty: all denied.
    return {"action": action, "policies": envoy_policies}


def _shadow_policies(policies: list[Resource], policy_prefix: str, http: bool, trust_domains: tuple[str, ...]) -> dict:
    """The CUSTOM policies' rules as RBAC policies named policy_prefix-ns[..]-policy[..]-rule[N]
    (on TCP, a rule that needs HTTP matches nothing, as an ALLOW rule)."""
    return {
        f"{policy_prefix}-ns[{policy.namespace}]-policy[{policy.name}]-rule[{index}]": envoy_policy(rule, http, trust_domains, policy.namespace)
        for policy in policies for index, rule in enumerate(policy.spec.get("rules") or []) if http or not needs_http(rule)
    }


def shadow_rbac_filter(policies: list[Resource], policy_prefix: str, stat_prefix: str, trust_domains: tuple[str, ...],
                       network_stat_prefix: str | None = None) -> dict:
    """An RBAC filter that enforces nothing: its shadow rules (the policies' rules, as ALLOW)
    only write the id of the one a request (connection) matches into its metadata, under
    stat_prefix (compile/ext_authz.py: which ones the external authorizer is asked about).
    network_stat_prefix: a TCP chain's network RBAC filter's statistics (None: HTTP)."""
    http = network_stat_prefix is None
    rules = {"action": "ALLOW", "policies": _shadow_policies(policies, policy_prefix, http, trust_domains)}
    if http:
        return {"name": HTTP_RBAC_FILTER, "typed_config": typed(HTTP_RBAC, shadow_rules=rules, shadow_rules_stat_prefix=stat_prefix)}
    config = typed(NETWORK_RBAC, shadow_rules=rules, shadow_rules_stat_prefix=stat_prefix, stat_prefix=network_stat_prefix)
    return {"name": NETWORK_RBAC_FILTER, "typed_config": config}


def http_rbac_filters(policies: list[Resource], trust_domains: tuple[str, ...]) -> list[dict]:
    filters = []
    for action in ACTIONS:
        rules = rbac_rules(policies, action, True, trust_domains)
        if rules is not None:
            config = typed(HTTP_RBAC, rules=rules, rules_stat_prefix=action.lower())
            filters.append({"name": HTTP_RBAC_FILTER, "typed_config": config})
    return filters


def network_rbac_filters(policies: list[Resource], stat_prefix: str, trust_domains: tuple[str, ...]) -> list[dict]:
    filters = []
    for action in ACTIONS:
        rules = rbac_rules(policies, action, False, trust_domains)
        if rules is not None:
            config = typed(NETWORK_RBAC, rules=rules, stat_prefix=f"{stat_prefix}.{action.lower()}")
            filters.append({"name": NETWORK_RBAC_FILTER, "typed_config": config})
    return filters


def authorize_chain(mesh: Mesh, namespace: str, labels: tuple, chain: dict) -> dict:
    """The filter chain with the workload's JWT and RBAC filters: first among an HTTP
    connection manager's HTTP filters (JWT first, whose payload RBAC reads), or the RBAC
    filters before a TCP chain's proxy filter."""
    policies = policies_for(mesh, namespace, labels)
    filters = chain["filters"]
    main = filters[-1]
    if main["name"] == HCM_FILTER:
        jwt = jwt_filter(mesh, namespace, labels)
        manager = main["typed_config"]
        trust_domains = mesh.settings.trust_domains
        custom = custom_policies(policies)
        external = [shadow_rbac_filter(custom, POLICY_PREFIX, SHADOW_PREFIX, trust_domains), ext_authz_filter(mesh, custom)] if custom else []
        manager["http_filters"] = ([jwt] if jwt else []) + external + http_rbac_filters(policies, trust_domains) + manager["http_filters"]
        return chain
    if not policies:
        return chain
    stat_prefix, trust_domains = main["typed_config"]["stat_prefix"], mesh.settings.trust_domains
    custom = custom_policies(policies)
    external = []
    if custom and is_grpc_provider(mesh, custom):
        external = [shadow_rbac_filter(custom, POLICY_PREFIX, SHADOW_PREFIX, trust_domains, f"{stat_prefix}.custom"),
                    network_ext_authz_filter(mesh, custom, f"{stat_prefix}.ext_authz")]
    chain["filters"] = filters[:-1] + external + network_rbac_filters(policies, stat_prefix, trust_domains) + [main]
    return chain
