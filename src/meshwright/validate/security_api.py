"""The security part of the Istio API meshwright compiles (security.istio.io), and the
MeshConfig's workload certificate settings, as schemas (see istio_api.py).

Fields meshwright does not act on are errors with a hint, never ignored (docs/security.md).
"""

from __future__ import annotations

import ipaddress
import re

from meshwright import names
from meshwright.compile.authorization import MATCH_ANY_TEMPLATE, MATCH_ONE_TEMPLATE, is_path_template
from meshwright.validate.shape import Bool, Duration, Enum, Labels, ListOf, Obj, PortMapOf, Schema, Str, type_name

SECURITY_VERSIONS = ("security.istio.io/v1", "security.istio.io/v1beta1")


certificates = Obj(
    "workload certificate settings",
    {
        # Where each proxy's cert-chain.pem, key.pem and root-cert.pem are: relative to its
        # config directory, or absolute.
        "dir": Str(non_empty=True),
        # Istio caps workload certificate lifetimes at 90 days (MAX_WORKLOAD_CERT_TTL).
        "workloadCertTtl": Duration(minimum_seconds=3600, maximum=(90 * 86400, "2160h (90 days, as Istio caps it)")),
    },
)

mtls_mode = Enum("UNSET", "DISABLE", "PERMISSIVE", "STRICT")
mtls = Obj("mutual TLS settings", {"mode": mtls_mode})
match_labels = Obj("a workload selector", {"matchLabels": Labels()}, required=("matchLabels",))

peer_authentication = Obj(
    "a PeerAuthentication spec",
    {"selector": match_labels, "mtls": mtls, "portLevelMtls": PortMapOf(mtls)},
    hints={"targetRef": "select workloads with selector.matchLabels", "targetRefs": "select workloads with selector.matchLabels"},
)

# "*", "prefix*" and "*suffix" wildcards, as Istio allows in principals, namespaces, paths
# and header values; nothing else may contain "*".
_wildcard = Str(pattern=r"^(\*|\*?[^*]+|[^*]+\*)$", pattern_help="a value with at most a leading or trailing '*'")
_values = ListOf(_wildcard, min_items=1)
NAMESPACE_VALUE_HELP = f"a namespace ({names.LABEL_HELP}), '*', or one with a leading or trailing '*'"


def is_namespace_value(text: object) -> bool:
    """A namespace in a rule: a DNS-1123 label, "*", or a label's prefix or suffix with "*"."""
    if not isinstance(text, str) or text == "*":
        return text == "*"
    core = text[1:] if text.startswith("*") else text[:-1] if text.endswith("*") else None
    if core is None:
        return names.is_label(text)
    return bool(core) and names.is_label(f"x{core}x")  # a piece of a label: letters, digits, '-'


# A literal segment of a path template: RFC 3986 pchar, as Istio checks it.
_TEMPLATE_LITERAL = re.compile(r"[a-zA-Z0-9\-._~%!$&'()+,;:@=]+")


def path_template_problem(path: str) -> str | None:
    """What is wrong with a path template, as Istio's CheckValidPathTemplate sees it: each
    segment is {*}, {**} (the last operator) or a literal without '{', '}' or '*'."""
    segments = path.strip("/").split("/")
    for index, segment in enumerate(segments):
        if segment == MATCH_ANY_TEMPLATE and any(s in (MATCH_ONE_TEMPLATE, MATCH_ANY_TEMPLATE) for s in segments[index + 1:]):
            return f"{path!r} is not a valid path template: {MATCH_ANY_TEMPLATE} must be its last operator"
        if segment in (MATCH_ONE_TEMPLATE, MATCH_ANY_TEMPLATE):
            continue
        if not _TEMPLATE_LITERAL.fullmatch(segment):
            return (f"{path!r} is not a valid path template: segment {segment!r} must be {MATCH_ONE_TEMPLATE}, {MATCH_ANY_TEMPLATE} "
                    "or letters, digits and -._~%!$&'()+,;:@= (no '{', '}' or '*' beside them)")
    if not path.startswith("/"):
        return f"{path!r} is not a valid path template: it starts with '/'"
    return None


class PathValue(Schema):
    """A rule's path: a value with at most a leading or trailing '*', or a path template with
    {*} (one segment) and {**} (any number of segments, last), as Istio allows."""

    description = "a path"

    def problem(self, value):
        if not isinstance(value, str):
            return f"expected {self.description}, got {type_name(value)} {value!r}"
        if is_path_template(value):
            return path_template_problem(value)
        if "{" in value or "}" in value:
            return f"{value!r} is not a path Istio takes: '{{' and '}}' appear only in {MATCH_ONE_TEMPLATE} and {MATCH_ANY_TEMPLATE}"
        problem = _wildcard.problem(value)
        return problem and problem + f" (or a path template: /api/{MATCH_ONE_TEMPLATE}/status, /files/{MATCH_ANY_TEMPLATE})"


_paths = ListOf(PathValue(), min_items=1)
_namespaces = ListOf(Str(valid=is_namespace_value, pattern_help=NAMESPACE_VALUE_HELP), min_items=1)
IP_BLOCK_HELP = "an IP address or a CIDR block (10.1.2.3, 10.1.0.0/16, fd00::/8)"
SERVICE_ACCOUNT_HELP = f"a service account, NAME or NAMESPACE/NAME ({names.LABEL_HELP}s, no wildcards)"


def is_ip_block(text: object) -> bool:
    """An address or ADDRESS/LENGTH, as Istio's ValidateIPs (no zone, no netmask form)."""
    if not isinstance(text, str) or "%" in text:
        return False
    address, slash, length = text.partition("/")
    if slash and not re.fullmatch(r"[0-9]{1,3}", length):
        return False
    try:
        ipaddress.ip_network(text, strict=False) if slash else ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def is_service_account_value(text: object) -> bool:
    """NAME or NAMESPACE/NAME, both DNS-1123 labels (they become part of a SPIFFE ID regex)."""
    return isinstance(text, str) and text.count("/") <= 1 and all(names.is_label(part) for part in text.split("/"))


_ip_blocks = ListOf(Str(valid=is_ip_block, pattern_help=IP_BLOCK_HELP), min_items=1)
_service_accounts = ListOf(Str(valid=is_service_account_value, pattern_help=SERVICE_ACCOUNT_HELP), min_items=1)
SOURCE_FIELDS = (
    "principals", "notPrincipals", "namespaces", "notNamespaces", "serviceAccounts", "notServiceAccounts",
    "ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks", "requestPrincipals", "notRequestPrincipals",
)
OPERATION_FIELDS = ("paths", "notPaths", "methods", "notMethods", "ports", "notPorts", "hosts", "notHosts")
# Istio refuses an empty source or operation ("`from.source` must not be empty"): it would
# match every caller or request and turn an ALLOW rule into allow-all.
EMPTY_HELP = "an empty {} matches {}, which would make an ALLOW rule allow everything (Istio refuses it); to match {}, leave out the '{}' of the rule"

source = Obj(
    "a rule source",
    {
        "principals": _values, "notPrincipals": _values, "namespaces": _namespaces, "notNamespaces": _namespaces,
        "serviceAccounts": _service_accounts, "notServiceAccounts": _service_accounts,
        "ipBlocks": _ip_blocks, "notIpBlocks": _ip_blocks, "remoteIpBlocks": _ip_blocks, "notRemoteIpBlocks": _ip_blocks,
        "requestPrincipals": _values, "notRequestPrincipals": _values,
    },
    required_any_of=(SOURCE_FIELDS,),
    empty_help=EMPTY_HELP.format("source", "any caller", "any caller", "from"),
)

_method = Str(pattern=r"^(\*|[A-Z]+)$", pattern_help="an HTTP method in upper case (GET, POST, ...)")
_port = Str(pattern=r"^\d{1,5}$", pattern_help='a port number as a string ("8080")')

operation = Obj(
    "a rule operation",
    {
        "hosts": _values, "notHosts": _values,
        "paths": _paths, "notPaths": _paths,
        "methods": ListOf(_method, min_items=1), "notMethods": ListOf(_method, min_items=1),
        "ports": ListOf(_port, min_items=1), "notPorts": ListOf(_port, min_items=1),
    },
    required_any_of=(OPERATION_FIELDS,),
    empty_help=EMPTY_HELP.format("operation", "any request", "any request", "to"),
)

# The when keys of Istio's "Authorization Policy Conditions" that meshwright compiles.
PLAIN_CONDITION_KEYS = (
    "source.ip", "remote.ip", "source.principal", "source.namespace", "source.serviceAccount",
    "request.auth.principal", "request.auth.audiences", "request.auth.presenter",
    "destination.ip", "destination.port", "connection.sni",
)
CONDITION_KEYS = "request.headers[NAME], request.auth.claims[NAME] (nested: [A][B]), " + ", ".join(PLAIN_CONDITION_KEYS)
IP_CONDITION_KEYS = ("source.ip", "remote.ip", "destination.ip")
condition = Obj(
    "a rule condition",
    {
        "key": Str(pattern=r"request\.headers\[[^\]]+\]|request\.auth\.claims(\[[^\[\]]+\])+|" + "|".join(re.escape(key) for key in PLAIN_CONDITION_KEYS),
                   pattern_help=f"a supported key: {CONDITION_KEYS}"),
        "values": _values,
        "notValues": _values,
    },
    required=("key",),
    required_any_of=(("values", "notValues"),),
)

rule = Obj(
    "an authorization rule",
    {
        "from": ListOf(Obj("a rule 'from'", {"source": source}, required=("source",)), min_items=1),
        "to": ListOf(Obj("a rule 'to'", {"operation": operation}, required=("operation",)), min_items=1),
        "when": ListOf(condition, min_items=1),
    },
)

authorization_policy = Obj(
    "an AuthorizationPolicy spec",
    {
        "selector": match_labels,
        "action": Enum("ALLOW", "DENY", "CUSTOM", hints={"AUDIT": "audit logging is not supported"}),
        # CUSTOM: the MeshConfig's ext-authz provider to ask (compile/ext_authz.py).
        "provider": Obj("an authorization provider", {"name": Str(non_empty=True)}, required=("name",)),
        "rules": ListOf(rule),
    },
    hints={"targetRef": "select workloads with selector.matchLabels", "targetRefs": "select workloads with selector.matchLabels"},
)

_header_name = Str(pattern=r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", pattern_help="an HTTP header name")
JWKS_URI_HELP = "a file on the proxies' hosts: jwksUri: file:///PATH, or the keys inline in jwks"

jwt_rule = Obj(
    "a JWT rule",
    {
        "issuer": Str(non_empty=True),
        "audiences": ListOf(Str(non_empty=True), min_items=1),
        # http(s) (Envoy fetches it) or file:///PATH (checked in security_checks).
        "jwksUri": Str(non_empty=True),
        "jwks": Str(non_empty=True),
        "fromHeaders": ListOf(Obj("a JWT header location", {"name": _header_name, "prefix": Str()}, required=("name",)), min_items=1),
        "fromParams": ListOf(Str(non_empty=True), min_items=1),
        "fromCookies": ListOf(Str(non_empty=True), min_items=1),
        "outputPayloadToHeader": _header_name,
        "outputClaimToHeaders": ListOf(Obj("a claim to copy to a header", {"header": _header_name, "claim": Str(non_empty=True)},
                                           required=("header", "claim")), min_items=1),
        "forwardOriginalToken": Bool(),
        "spaceDelimitedClaims": ListOf(Str(non_empty=True), min_items=1),
        # How long Envoy waits for an http(s) jwksUri (Istio's default: 5s).
        "timeout": Duration(minimum_seconds=0.001),
    },
    required=("issuer",),
    required_one_of=(("jwks", "jwksUri"),),
)

request_authentication = Obj(
    "a RequestAuthentication spec",
    {"selector": match_labels, "jwtRules": ListOf(jwt_rule)},
    hints={"targetRef": "select workloads with selector.matchLabels", "targetRefs": "select workloads with selector.matchLabels"},
)

KINDS = {
    "PeerAuthentication": (SECURITY_VERSIONS, peer_authentication),
    "AuthorizationPolicy": (SECURITY_VERSIONS, authorization_policy),
    "RequestAuthentication": (SECURITY_VERSIONS, request_authentication),
}
