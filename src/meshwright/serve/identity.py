"""Who is on the other end of an ADS stream: the node id a proxy claims, checked against the
SPIFFE ID in its client certificate (mTLS), which must be the one the mesh gives that proxy."""

from __future__ import annotations

from cryptography import x509

from meshwright.compile.incremental import CompiledEstate
from meshwright.pki.spiffe import spiffe_id


class Refused(Exception):
    """A stream the control plane will not serve; the message says why (it is logged)."""


def proxy_id_of_node(node_id: str) -> str:
    """The proxy (name.namespace) a node id names: Istio's "sidecar~ADDRESS~NAME.NS~DOMAIN"
    (what meshwright's bootstraps write) or the bare name.namespace."""
    parts = node_id.split("~")
    return parts[2] if len(parts) == 4 else node_id


def certificate_spiffe_ids(pem: bytes) -> list[str]:
    """The URI SANs of a PEM certificate (the SPIFFE IDs it proves)."""
    certificate = x509.load_pem_x509_certificate(pem)
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [uri for uri in names.get_values_for_type(x509.UniformResourceIdentifier) if uri.startswith("spiffe://")]


def peer_certificate(auth_context: dict) -> bytes | None:
    """The client certificate gRPC verified (mTLS), from the call's auth context."""
    pems = auth_context.get("x509_pem_cert") or []
    return pems[0] if pems else None


def admitted_proxy(estate: CompiledEstate, node_id: str, peer_pem: bytes | None, require_identity: bool) -> str:
    """The proxy id a stream is for; Refused when the mesh has no such proxy or (with
    require_identity) the client certificate does not prove the proxy's SPIFFE ID."""
    proxy_id = proxy_id_of_node(node_id)
    proxy = estate.proxies.get(proxy_id)
    if proxy is None:
        raise Refused(f"unknown node id {node_id!r}: the mesh config has no proxy {proxy_id} (a WorkloadEntry's or Gateway's name.namespace)")
    if not require_identity:
        return proxy_id
    expected = spiffe_id(estate.mesh.settings.trust_domain, proxy.namespace, proxy.service_account)
    if peer_pem is None:
        raise Refused(f"node {node_id!r} presented no client certificate (the mesh gives proxy {proxy_id} the identity {expected})")
    presented = certificate_spiffe_ids(peer_pem)
    if expected not in presented:
        raise Refused(f"node {node_id!r} claims proxy {proxy_id}, whose identity is {expected}, "
                      f"but its certificate proves {', '.join(presented) or 'no SPIFFE ID'}")
    return proxy_id
