"""Mutual TLS between sidecars with the mesh's workload certificates (Istio's ISTIO_MUTUAL).

Client side: a cluster whose DestinationRule says tls.mode ISTIO_MUTUAL presents the proxy's
certificate and accepts only a server whose certificate carries one of the destination's
SPIFFE IDs. Without any tls in the DestinationRule, auto mTLS: each endpoint fronted by a
sidecar that accepts mTLS on that port is tagged tlsMode=istio and reached with mTLS, any
other endpoint in plaintext (Envoy's transport_socket_matches, as Istio does).

Server side: an inbound listener's filter chains follow its PeerAuthentication mode.
"""

from __future__ import annotations

import copy

from meshwright.compile.envoy_values import DOWNSTREAM_TLS, TYPE_PREFIX, UPSTREAM_TLS, tls_params, typed
from meshwright.compile.peer_authentication import DISABLE, PERMISSIVE, STRICT, mtls_mode
from meshwright.compile.scope import inbound_ports
from meshwright.compile.secrets import DEFAULT_SECRET, ROOT_SECRET, sds_secret_config
from meshwright.mesh import Mesh
from meshwright.pki.spiffe import spiffe_id
from meshwright.registry.model import Endpoint, Service, ServicePort

RAW_BUFFER = TYPE_PREFIX + "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
TLS_SOCKET, RAW_BUFFER_SOCKET = "envoy.transport_sockets.tls", "envoy.transport_sockets.raw_buffer"
# Endpoint metadata that selects a cluster's transport socket (Istio's key and label).
TRANSPORT_SOCKET_MATCH = "envoy.transport_socket_match"
TLS_MODE, TLS_MODE_ISTIO = "tlsMode", "istio"
# ALPN Istio's clients offer inside the mesh; its servers take them as mesh mTLS.
MESH_ALPN = ["istio-peer-exchange", "istio"]


def mesh_sni(port: int, subset: str, host: str) -> str:
    """Istio's SNI for mesh mTLS: the cluster name with "_." for "|"."""
    return f"outbound_.{port}_.{subset}_.{host}"


def upstream_mtls_socket(subject_alt_names: list[str], sni: str) -> dict:
    """Present the proxy's certificate; trust the mesh roots; accept only those SPIFFE IDs
    (any certificate from the mesh CA when none is known)."""
    default_context: dict = {}
    if subject_alt_names:
        default_context["match_typed_subject_alt_names"] = [{"san_type": "URI", "matcher": {"exact": name}} for name in subject_alt_names]
    context = {
        "common_tls_context": {
            "tls_params": tls_params(),
            "tls_certificate_sds_secret_configs": [sds_secret_config(DEFAULT_SECRET)],
            "combined_validation_context": {
                "default_validation_context": default_context,
                "validation_context_sds_secret_config": sds_secret_config(ROOT_SECRET),
            },
            "alpn_protocols": MESH_ALPN,
        },
        "sni": sni,
    }
    return {"name": TLS_SOCKET, "typed_config": typed(UPSTREAM_TLS, **context)}


def inbound_mtls_socket() -> dict:
    """Present the proxy's certificate and require the client's, issued under the mesh roots."""
    context = {
        "require_client_certificate": True,
        "common_tls_context": {
            "tls_params": tls_params(),
            "tls_certificate_sds_secret_configs": [sds_secret_config(DEFAULT_SECRET)],
            "validation_context_sds_secret_config": sds_secret_config(ROOT_SECRET),
        },
    }
    return {"name": TLS_SOCKET, "typed_config": typed(DOWNSTREAM_TLS, **context)}


def inbound_filter_chains(mode: str, chain: dict) -> list[dict]:
    """The filter chains of an inbound listener: STRICT only mTLS; PERMISSIVE mTLS or
    plaintext, told apart by the TLS inspector; DISABLE plaintext."""
    if mode == STRICT:
        return [{**chain, "transport_socket": inbound_mtls_socket()}]
    if mode == PERMISSIVE:
        return [
            {"filter_chain_match": {"transport_protocol": "tls"}, **chain, "transport_socket": inbound_mtls_socket()},
            {"filter_chain_match": {"transport_protocol": "raw_buffer"}, **copy.deepcopy(chain)},
        ]
    return [chain]


def _endpoint_namespace(endpoint: Endpoint, service: Service) -> str:
    return endpoint.workload.rsplit(".", 1)[1] if endpoint.workload else service.namespace


def accepts_mtls(mesh: Mesh, service: Service, endpoint: Endpoint, port: ServicePort) -> bool:
    """Whether an endpoint is a sidecar that takes mTLS on the port clients reach it at:
    a WorkloadEntry whose Sidecar listens there (or that captures without Sidecar ingress)
    and whose PeerAuthentication allows it."""
    if not endpoint.workload:
        return False
    namespace = _endpoint_namespace(endpoint, service)
    number = endpoint.port_for(port)
    if number not in inbound_ports(mesh, namespace, dict(endpoint.labels), endpoint.workload):
        return False
    return mtls_mode(mesh, namespace, endpoint.labels, number) != DISABLE


def mtls_endpoints(mesh: Mesh, service: Service, port: ServicePort) -> frozenset[Endpoint]:
    """The endpoints of a service port that auto mTLS reaches with mTLS."""
    if not mesh.settings.identity_enabled:
        return frozenset()
    return frozenset(e for e in service.endpoints if accepts_mtls(mesh, service, e, port))


def service_identities(mesh: Mesh, service: Service) -> list[str]:
    """SPIFFE IDs a service's servers may present: its endpoints' service accounts (a
    WorkloadEntry without serviceAccount runs as "default", as in Istio)."""
    accounts = {e.service_account or ("default" if e.workload else "") for e in service.endpoints}
    return sorted(spiffe_id(mesh.settings.trust_domain, service.namespace, a) for a in accounts if a)


def apply_mesh_tls(cluster: dict, mesh: Mesh, service: Service, port: ServicePort, subset: str, policy: dict, tagged: frozenset) -> None:
    """ISTIO_MUTUAL from the DestinationRule, or auto mTLS when it sets no tls and some of
    the cluster's endpoints (tagged) take mTLS. SIMPLE and MUTUAL are the cluster's own."""
    tls = policy.get("tls")
    if tls is not None:
        if tls["mode"] == "ISTIO_MUTUAL":
            names = tls.get("subjectAltNames") or service_identities(mesh, service)
            cluster["transport_socket"] = upstream_mtls_socket(names, tls.get("sni") or mesh_sni(port.number, subset, service.hostname))
        return
    if tagged:
        mtls = upstream_mtls_socket(service_identities(mesh, service), mesh_sni(port.number, subset, service.hostname))
        cluster["transport_socket_matches"] = [
            {"name": "tlsMode-istio", "match": {TLS_MODE: TLS_MODE_ISTIO}, "transport_socket": mtls},
            {"name": "tlsMode-disabled", "match": {}, "transport_socket": {"name": RAW_BUFFER_SOCKET, "typed_config": typed(RAW_BUFFER)}},
        ]


def auto_mtls_endpoints(mesh: Mesh, service: Service, port: ServicePort, policy: dict) -> frozenset[Endpoint]:
    """The endpoints to tag tlsMode=istio in a cluster's load assignment: none when the
    DestinationRule decides TLS itself."""
    return frozenset() if "tls" in policy else mtls_endpoints(mesh, service, port)


def tls_mode_metadata() -> dict:
    return {"filter_metadata": {TRANSPORT_SOCKET_MATCH: {TLS_MODE: TLS_MODE_ISTIO}}}
