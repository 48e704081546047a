"""The security part of the Istio API meshwright compiles (security.istio.io), and the
MeshConfig's workload certificate settings, as schemas (see istio_api.py).

Fields meshwright does not act on are errors with a hint, never ignored (docs/security.md).
"""

from __future__ import annotations

import re

from meshwright import names
from meshwright.compile.authorization import MATCH_ANY_TEMPLATE, MATCH_ONE_TEMPLATE, is_path_template
from meshwright.validate.shape import Duration, Enum, Labels, ListOf, Obj, PortMapOf, Schema, Str, type_name

SECURITY_VERSIONS = ("security.istio.io/v1", "security.istio.io/v1beta1")

JWT_HINT = "request authentication (JWT) is not supported: match callers by their mTLS identity with principals or namespaces"
IP_HINT = "IP blocks are not supported: match callers by their mTLS identity with principals or namespaces"
HOSTS_HINT = "hosts are not supported in rules: an AuthorizationPolicy applies to the workloads its selector picks; match paths, methods and ports"

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
SOURCE_FIELDS = ("principals", "notPrincipals", "namespaces", "notNamespaces")
OPERATION_FIELDS = ("paths", "notPaths", "methods", "notMethods", "ports", "notPorts")
# Istio refuses an empty source or operation ("`from.source` must not be empty"): it would
# match every caller or request and turn an ALLOW rule into allow-all.
EMPTY_HELP = "an empty {} matches {}, which would make an ALLOW rule allow everything (Istio refuses it); to match {}, leave out the '{}' of the rule"

source = Obj(
    "a rule source",
    {"principals": _values, "notPrincipals": _values, "namespaces": _namespaces, "notNamespaces": _namespaces},
    required_any_of=(SOURCE_FIELDS,),
    empty_help=EMPTY_HELP.format("source", "any caller", "any caller", "from"),
    hints={
        "requestPrincipals": JWT_HINT, "notRequestPrincipals": JWT_HINT,
        "ipBlocks": IP_HINT, "notIpBlocks": IP_HINT, "remoteIpBlocks": IP_HINT, "notRemoteIpBlocks": IP_HINT,
    },
)

_method = Str(pattern=r"^(\*|[A-Z]+)$", pattern_help="an HTTP method in upper case (GET, POST, ...)")
_port = Str(pattern=r"^\d{1,5}$", pattern_help='a port number as a string ("8080")')

operation = Obj(
    "a rule operation",
    {
        "paths": _paths, "notPaths": _paths,
        "methods": ListOf(_method, min_items=1), "notMethods": ListOf(_method, min_items=1),
        "ports": ListOf(_port, min_items=1), "notPorts": ListOf(_port, min_items=1),
    },
    required_any_of=(OPERATION_FIELDS,),
    empty_help=EMPTY_HELP.format("operation", "any request", "any request", "to"),
    hints={"hosts": HOSTS_HINT, "notHosts": HOSTS_HINT},
)

CONDITION_KEYS = "request.headers[NAME], source.principal, source.namespace or destination.port"
condition = Obj(
    "a rule condition",
    {
        "key": Str(pattern=r"^(request\.headers\[[^\]]+\]|source\.principal|source\.namespace|destination\.port)$", pattern_help=f"a supported key: {CONDITION_KEYS}"),
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
        "action": Enum(
            "ALLOW", "DENY",
            hints={"AUDIT": "audit logging is not supported", "CUSTOM": "external authorization (CUSTOM) is not supported: use ALLOW or DENY"},
        ),
        "rules": ListOf(rule),
    },
    hints={
        "provider": "external authorization (CUSTOM) is not supported: use ALLOW or DENY",
        "targetRef": "select workloads with selector.matchLabels", "targetRefs": "select workloads with selector.matchLabels",
    },
)

KINDS = {
    "PeerAuthentication": (SECURITY_VERSIONS, peer_authentication),
    "AuthorizationPolicy": (SECURITY_VERSIONS, authorization_policy),
}
