"""Listeners of a proxy: sidecar inbound and outbound (explicit, captureMode NONE) and gateway
servers; each HTTP listener names a route configuration that compile/virtual_hosts builds."""

from __future__ import annotations

from meshwright.compile.clusters import ADS
from meshwright.compile.envoy_values import (
    CORS, CORS_FILTER, DOWNSTREAM_TLS, FAULT, FAULT_FILTER, HCM_FILTER, HTTP_CONNECTION_MANAGER, ROUTER,
    ROUTER_FILTER, TCP_PROXY, TCP_PROXY_FILTER, TLS_INSPECTOR, TLS_INSPECTOR_FILTER, socket_address, tls_params, typed,
)


# Filter chain match fields the TLS inspector fills in (from the ClientHello).
TLS_INSPECTOR_FIELDS = ("server_names", "transport_protocol", "application_protocols")


def listener_name(address: str, port: int) -> str:
    return f"{address}_{port}"


def http_filters() -> list:
    """Istio's HTTP filter chain; EnvoyFilter patches insert around these by name."""
    return [
        {"name": CORS_FILTER, "typed_config": typed(CORS)},
        {"name": FAULT_FILTER, "typed_config": typed(FAULT)},
        {"name": ROUTER_FILTER, "typed_config": typed(ROUTER)},
    ]


def http_connection_manager(stat_prefix: str, route_config_name: str, gateway: bool = False) -> dict:
    """Access logs and tracing are the proxy's telemetry (compile/telemetry.py adds them)."""
    manager: dict = {
        "stat_prefix": stat_prefix,
        "rds": {"route_config_name": route_config_name, "config_source": ADS},
        "http_filters": http_filters(),
        # Istio's default path normalization (BASE): RFC 3986 only, slashes not merged.
        "normalize_path": True,
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
        # Istio allows WebSocket upgrades on every HTTP listener.
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        "use_remote_address": gateway,
        "stream_idle_timeout": "0s",
    }
    return {"name": HCM_FILTER, "typed_config": typed(HTTP_CONNECTION_MANAGER, **manager)}


def tcp_proxy(stat_prefix: str, clusters: list[tuple[str, int]], limits: dict | None = None) -> dict:
    """clusters: (name, weight); one cluster routes all, several split by weight. limits:
    further TcpProxy fields (idle_timeout, max_downstream_connection_duration)."""
    proxy: dict = {"stat_prefix": stat_prefix, **(limits or {})}
    if len(clusters) == 1:
        proxy["cluster"] = clusters[0][0]
    else:
        proxy["weighted_clusters"] = {"clusters": [{"name": name, "weight": weight} for name, weight in clusters]}
    return {"name": TCP_PROXY_FILTER, "typed_config": typed(TCP_PROXY, **proxy)}


def listener(address: str, port: int, filter_chains: list[dict], direction: str) -> dict:
    out = {
        "name": listener_name(address, port),
        "address": socket_address(address, port),
        "traffic_direction": direction,
        "filter_chains": filter_chains,
    }
    # Chains chosen by SNI, ALPN or TLS-or-plaintext need the TLS inspector to read the
    # ClientHello first; Envoy no longer adds it by itself, and without it no chain matches.
    if any(field in chain.get("filter_chain_match", {}) for chain in filter_chains for field in TLS_INSPECTOR_FIELDS):
        out["listener_filters"] = [{"name": TLS_INSPECTOR_FILTER, "typed_config": typed(TLS_INSPECTOR)}]
    return out


def downstream_tls(tls: dict) -> dict:
    context: dict = {
        "common_tls_context": {
            "tls_params": tls_params(),
            "tls_certificates": [{"certificate_chain": {"filename": tls["serverCertificate"]}, "private_key": {"filename": tls["privateKey"]}}],
            "alpn_protocols": ["h2", "http/1.1"],
        }
    }
    if tls.get("mode") == "MUTUAL":
        context["require_client_certificate"] = True
        context["common_tls_context"]["validation_context"] = {"trusted_ca": {"filename": tls["caCertificates"]}}
    return {"name": "envoy.transport_sockets.tls", "typed_config": typed(DOWNSTREAM_TLS, **context)}
