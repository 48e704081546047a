"""SPIFFE IDs as Istio writes them: spiffe://<trust domain>/ns/<namespace>/sa/<service account>."""

from __future__ import annotations


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


# The control plane's own identity (meshwright serve): proxies accept its server certificate
# only when it carries this SPIFFE ID, issued by the mesh CA like every workload's.
CONTROL_PLANE_NAMESPACE = "meshwright-system"
CONTROL_PLANE_SERVICE_ACCOUNT = "meshwright-control-plane"


def control_plane_spiffe_id(trust_domain: str) -> str:
    return spiffe_id(trust_domain, CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_SERVICE_ACCOUNT)
