"""SPIFFE IDs as Istio writes them: spiffe://<trust domain>/ns/<namespace>/sa/<service account>."""

from __future__ import annotations


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"

