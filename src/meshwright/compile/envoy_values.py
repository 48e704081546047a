"""Small builders for values that recur across Envoy resources (proto3 JSON form)."""

from __future__ import annotations

import ipaddress

from meshwright.model.duration import parse_duration

TYPE_PREFIX = "type.googleapis.com/"
LISTENER = TYPE_PREFIX + "envoy.config.listener.v3.Listener"
ROUTE_CONFIGURATION = TYPE_PREFIX + "envoy.config.route.v3.RouteConfiguration"
CLUSTER = TYPE_PREFIX + "envoy.config.cluster.v3.Cluster"
CLUSTER_LOAD_ASSIGNMENT = TYPE_PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
HTTP_CONNECTION_MANAGER = TYPE_PREFIX + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
TCP_PROXY = TYPE_PREFIX + "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
ROUTER = TYPE_PREFIX + "envoy.extensions.filters.http.router.v3.Router"
FAULT = TYPE_PREFIX + "envoy.extensions.filters.http.fault.v3.HTTPFault"
CORS = TYPE_PREFIX + "envoy.extensions.filters.http.cors.v3.Cors"
CORS_POLICY = TYPE_PREFIX + "envoy.extensions.filters.http.cors.v3.CorsPolicy"
UPSTREAM_TLS = TYPE_PREFIX + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
DOWNSTREAM_TLS = TYPE_PREFIX + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
# Istio's TLS parameters, on every TLS context (both sides, mesh mTLS, gateways and
# DestinationRule TLS): TLS 1.2 or 1.3; for 1.2 only ECDHE with AES-GCM or ChaCha20 (Envoy's
# defaults would accept CBC-SHA1 suites, and clients would stop at TLS 1.2). The list
# does not apply to TLS 1.3, whose suites are all AEAD.
TLS_CIPHER_SUITES = (
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
)

# gRPC status names in code order (Istio's abort grpcStatus; Envoy takes the code).
GRPC_STATUS_CODES = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
    "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
)
# Istio's limit on a direct response's body, which route configurations raise Envoy's (4 KB) to.
DIRECT_RESPONSE_MAX_BYTES = 1024 * 1024
ENVOY_DIRECT_RESPONSE_BODY_BYTES = 4096


# The suites a Gateway server's cipherSuites may name (Istio's list of valid suites, which
# Envoy's BoringSSL knows); "[A|B]" is a group of equal preference.
SERVER_CIPHER_SUITES = TLS_CIPHER_SUITES + (
    "ECDHE-PSK-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-PSK-AES128-CBC-SHA",
    "ECDHE-PSK-AES256-CBC-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES256-SHA",
)


def is_cipher_suite(name: str) -> bool:
    """A suite or an equal-preference group of suites ("[A|B]") Envoy accepts."""
    members = name[1:-1].split("|") if name.startswith("[") and name.endswith("]") else [name]
    return all(member in SERVER_CIPHER_SUITES for member in members)


def tls_params() -> dict:
    """A fresh TlsParameters (callers may add to the context that holds it)."""
    return {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3", "cipher_suites": list(TLS_CIPHER_SUITES)}


def subject_alt_name_matchers(names: list[str]) -> list[dict]:
    """Istio's subjectAltNames match any kind of SAN; Envoy's typed matchers name the kind."""
    return [{"san_type": _san_type(name), "matcher": {"exact": name}} for name in names]


def _san_type(name: str) -> str:
    if "://" in name:
        return "URI"
    try:
        ipaddress.ip_address(name)
        return "IP_ADDRESS"
    except ValueError:
        return "DNS"


HTTP_PROTOCOL_OPTIONS = TYPE_PREFIX + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
TLS_INSPECTOR = TYPE_PREFIX + "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
FILE_ACCESS_LOG = TYPE_PREFIX + "envoy.extensions.access_loggers.file.v3.FileAccessLog"
CEL_ACCESS_LOG_FILTER = TYPE_PREFIX + "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter"
ZIPKIN_CONFIG = TYPE_PREFIX + "envoy.config.trace.v3.ZipkinConfig"
OPENTELEMETRY_CONFIG = TYPE_PREFIX + "envoy.config.trace.v3.OpenTelemetryConfig"
UUID_REQUEST_ID = TYPE_PREFIX + "envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig"

HCM_FILTER = "envoy.filters.network.http_connection_manager"
TCP_PROXY_FILTER = "envoy.filters.network.tcp_proxy"
ROUTER_FILTER = "envoy.filters.http.router"
FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"
TLS_INSPECTOR_FILTER = "envoy.filters.listener.tls_inspector"

MAX_UINT32 = 4294967295
# Where dynamic resources (routes, endpoints, secrets) come from: delivery points this at
# files, or later at a server.
ADS = {"ads": {}, "resource_api_version": "V3"}


def duration(text_or_seconds) -> str:
    """Istio duration text or seconds -> proto3 JSON Duration ("1.5s")."""
    seconds = parse_duration(text_or_seconds) if isinstance(text_or_seconds, str) else float(text_or_seconds)
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def fractional_percent(percent: float) -> dict:
    """A percentage (0-100, fractional allowed) as an Envoy FractionalPercent per million."""
    return {"numerator": int(round(percent * 10000)), "denominator": "MILLION"}


def socket_address(address: str, port: int) -> dict:
    return {"socket_address": {"address": address, "port_value": port}}


def typed(type_url: str, **fields) -> dict:
    return {"@type": type_url, **fields}


def string_match(match: dict, ignore_case: bool = False) -> dict:
    """Istio StringMatch -> Envoy StringMatcher."""
    if "exact" in match:
        out = {"exact": match["exact"]}
    elif "prefix" in match:
        out = {"prefix": match["prefix"]}
    else:
        out = {"safe_regex": {"regex": match["regex"]}}
    if ignore_case and "safe_regex" not in out:
        out["ignore_case"] = True
    return out


def locality(text: str) -> dict:
    parts = text.split("/") if text else []
    return dict(zip(("region", "zone", "sub_zone"), parts))
