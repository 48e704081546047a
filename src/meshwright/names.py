"""Names that become paths, SPIFFE IDs, /etc/hosts lines, shell words or Envoy strings:
one definition of each shape, as Kubernetes and Istio define them, matched with
`fullmatch` (never `$`, which lets a trailing newline through).

Standard library only: host-side code ships this file as it is.
"""

from __future__ import annotations

import re

# RFC 1123 label as Kubernetes checks it (namespaces, service accounts, sites): at most 63 characters.
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# RFC 1123 subdomain (resource names, trust domains): dot-separated labels, at most 253 characters.
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*")
# A host as Istio takes it in ServiceEntry/VirtualService hosts: a DNS name (letters of either
# case, digits, '-', '_' as some real names have), optionally led by "*." or the bare "*".
_HOST_LABEL = r"[A-Za-z0-9_]([-A-Za-z0-9_]{0,61}[A-Za-z0-9_])?"
_HOST = re.compile(rf"(\*|(\*\.)?{_HOST_LABEL}(\.{_HOST_LABEL})*\.?)")

# Kubernetes label keys ([prefix/]name) and values (empty, or up to 63 of these characters).
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")

LABEL_HELP = "a DNS-1123 label (at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit)"
SUBDOMAIN_HELP = "a DNS-1123 name (lower-case labels of letters, digits and '-', joined by '.', at most 253 characters)"
LABEL_KEY_HELP = "a label key: an optional DNS-1123 prefix and '/', then up to 63 letters, digits, '-', '_' and '.'"
LABEL_VALUE_HELP = "a label value: empty, or up to 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
HOST_HELP = "a DNS name or a wildcard ('*' or '*.example.com'): letters, digits, '-', '_' and '.' only"


def is_label(text: object) -> bool:
    return isinstance(text, str) and _LABEL.fullmatch(text) is not None


def is_subdomain(text: object) -> bool:
    return isinstance(text, str) and len(text) <= 253 and _SUBDOMAIN.fullmatch(text) is not None


def is_host(text: object) -> bool:
    return isinstance(text, str) and len(text) <= 253 and _HOST.fullmatch(text) is not None


# The namespace: a DNS-1123 label, "." (the resource's own), "*" (any) or "~" (Istio's
# "no namespace": imports nothing); the host as is_host.
NAMESPACED_HOST_HELP = "namespace/host (./host, */host, ns/*)"


def is_namespaced_host(text: object, namespace_required: bool = True) -> bool:
    """Istio's "namespace/host" of Gateway servers and Sidecar egress ("./host", "*/host",
    "ns/*"); without namespace_required a bare host is taken too (Gateway: any namespace)."""
    if not isinstance(text, str):
        return False
    if "/" not in text:
        return not namespace_required and is_host(text)
    namespace, host = text.split("/", 1)
    return (namespace in (".", "*", "~") or is_label(namespace)) and is_host(host)


def is_label_key(text: object) -> bool:
    """A Kubernetes label key: `name` or `prefix/name`, the prefix a DNS-1123 name."""
    if not isinstance(text, str):
        return False
    prefix, dummy, name = text.rpartition("/")
    return (not prefix or is_subdomain(prefix)) and _LABEL_NAME.fullmatch(name) is not None


def is_label_value(text: object) -> bool:
    return isinstance(text, str) and _LABEL_VALUE.fullmatch(text) is not None


PROXY_ID_HELP = ("a proxy id: the name.namespace of a WorkloadEntry or Gateway (the name " + SUBDOMAIN_HELP
                 + ", the namespace " + LABEL_HELP + ")")


def is_proxy_id(text: object) -> bool:
    """A proxy's id as the compiler names it (compile/proxy.py, Proxy.id): a resource name
    (a DNS-1123 name, which may hold dots), '.', then its namespace (a DNS-1123 label)."""
    if not isinstance(text, str) or "." not in text:
        return False
    name, namespace = text.rsplit(".", 1)
    return is_subdomain(name) and is_label(namespace)
