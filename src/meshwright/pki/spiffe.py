"""SPIFFE IDs as Istio writes them: spiffe://<trust domain>/ns/<namespace>/sa/<service account>."""

from __future__ import annotations

import re

_SPIFFE_ID = re.compile(r"^spiffe://([^/]+)/ns/([^/]+)/sa/([^/]+)$")


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def parse_spiffe_id(text: str) -> tuple[str, str, str] | None:
    """(trust domain, namespace, service account), or None when text is not such an ID."""
    match = _SPIFFE_ID.match(text)
    return match.groups() if match else None
