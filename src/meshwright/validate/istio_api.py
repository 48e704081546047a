"""The part of the Istio API meshwright compiles, as schemas.

A field that is not listed here is an error: meshwright never ignores configuration it does
not act on. Names and structure follow istio.io/latest/docs/reference/config.
"""

from __future__ import annotations

from meshwright import names
from meshwright.compile.envoy_values import DIRECT_RESPONSE_MAX_BYTES, GRPC_STATUS_CODES
from meshwright.model.providers import ACCESS_LOG_PATH_HELP, is_access_log_path
from meshwright.validate import security_api
from meshwright.validate.shape import (
    Address, AddressOrRange, Any, Base64, Bool, Duration, Enum, Int, Labels, ListOf, MapOf, Number, Obj, Port, Regex, Str, Unsupported,
)

NETWORKING_VERSIONS = ("networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3")
MESHCONFIG_VERSIONS = ("meshwright.io/v1alpha1",)
TELEMETRY_VERSIONS = ("telemetry.istio.io/v1", "telemetry.istio.io/v1alpha1")

RATE_LIMIT_HINT = (
    "To limit requests per second, add a local rate limit: an EnvoyFilter that inserts "
    "envoy.filters.http.local_ratelimit with a token_bucket (docs/traffic.md#local-rate-limits)"
)
TELEMETRY_HINT = (
    "Metrics, traces and access logs are not traffic policy: define providers in the MeshConfig "
    "(extensionProviders, defaultProviders) and choose them per workload with a Telemetry "
    "resource (telemetry.istio.io/v1) (docs/telemetry.md)"
)
TRACING_HINT = (
    "Tracing is set by providers, as in Istio: define one in the MeshConfig's extensionProviders "
    "({name: zipkin, zipkin: {service: HOST, port: 9411}}) and name it in defaultProviders.tracing "
    "(mesh-wide) or in a Telemetry's tracing[].providers; the sampling rate is a Telemetry's "
    "tracing[].randomSamplingPercentage (docs/telemetry.md)"
)
METRICS_HINT = (
    "Metrics are set by providers, as in Istio: the built-in provider 'prometheus' is the default "
    "(defaultProviders.metrics); turn it off mesh-wide with defaultProviders: {metrics: []}, or "
    "per workload with a Telemetry (metrics: [{overrides: [{disabled: true}]}]) (docs/telemetry.md)"
)

# Protocol names are read in any case, as Istio's protocol.Parse does (tcp, Http2).
PROTOCOLS = ("HTTP", "HTTP2", "GRPC", "TCP")
# TLS the sidecar passes through, routed by SNI (on ServiceEntry ports and Sidecar egress listeners).
TLS_PROTOCOLS = ("HTTPS", "TLS")
# Istio's ServerTLSSettings.TLSProtocol.
SERVER_TLS_VERSIONS = ("TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3")

# Names that end up in SPIFFE IDs, file names and /etc/hosts lines (meshwright.names).
host = Str(valid=names.is_host, pattern_help=names.HOST_HELP)
label = Str(valid=names.is_label, pattern_help=names.LABEL_HELP)
subdomain = Str(valid=names.is_subdomain, pattern_help=names.SUBDOMAIN_HELP)

string_match = Obj(
    "a string match (exact, prefix or regex)",
    {"exact": Str(), "prefix": Str(), "regex": Regex()},
    required_one_of=(("exact", "prefix", "regex"),),
)

# Headers and query parameters may also be matched on presence alone: {} (Istio's rule).
presence_or_string_match = Obj(
    "a string match (exact, prefix or regex; {} for presence)",
    {"exact": Str(), "prefix": Str(), "regex": Regex()},
    one_of=(("exact", "prefix", "regex"),),
)

percent = Obj("a percentage", {"value": Number(0, 100)}, required=("value",))

header_operations = Obj(
    "header operations",
    {"set": MapOf(Str()), "add": MapOf(Str()), "remove": ListOf(Str(non_empty=True))},
)
headers = Obj("header manipulation", {"request": header_operations, "response": header_operations})

port_selector = Obj("a port selector", {"number": Port()}, required=("number",))

destination = Obj(
    "a destination",
    {"host": host, "subset": Str(non_empty=True), "port": port_selector},
    required=("host",),
)

# Relative (a destination gets weight / sum of the weights); an int32, as Istio's field.
weight = Int(0, 2**31 - 1)

http_route_destination = Obj(
    "a route destination",
    {"destination": destination, "weight": weight, "headers": headers},
    required=("destination",),
    hints={
        "route": "Routes do not nest: list destinations under one route and give each a weight "
        "(relative: each gets weight / sum of the weights). A weight splits traffic, it does not limit it. " + RATE_LIMIT_HINT,
        "percent": "Weights are integers on each destination (weight: 80). " + RATE_LIMIT_HINT,
        "rateLimit": RATE_LIMIT_HINT,
    },
)

http_match = Obj(
    "an HTTP match",
    {
        "name": Str(),
        "uri": string_match,
        "method": string_match,
        "authority": string_match,
        "headers": MapOf(presence_or_string_match),
        "queryParams": MapOf(presence_or_string_match),
        "withoutHeaders": MapOf(presence_or_string_match),
        "ignoreUriCase": Bool(),
        "sourceLabels": Labels(),
        # Where the match applies (Istio's sourceMatchHTTP): the port of the host addressed (a
        # gateway server's port), the gateways ("mesh": sidecars), the client's namespace.
        "port": Port(),
        "gateways": ListOf(Str(non_empty=True)),
        "sourceNamespace": label,
        "scheme": string_match,
        # The route's statistics prefix (vhost.<virtual host>.route.<statPrefix>.*).
        "statPrefix": Str(non_empty=True),
    },
)

http_redirect = Obj(
    "an HTTP redirect",
    {
        "uri": Str(),
        "authority": Str(),
        "port": Port(),
        "derivePort": Enum("FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"),
        "scheme": Enum("http", "https"),
        "redirectCode": Enum(301, 302, 303, 307, 308),
    },
    one_of=(("port", "derivePort"),),
)

http_direct_response = Obj(
    "a direct response",
    {
        "status": Int(200, 599),
        "body": Obj(
            "a response body",
            {
                "string": Str(valid=lambda text: len(text.encode()) <= DIRECT_RESPONSE_MAX_BYTES, pattern_help="a body of at most 1 MB (Istio's limit)"),
                "bytes": Base64(max_bytes=DIRECT_RESPONSE_MAX_BYTES),
            },
            required_one_of=(("string", "bytes"),),
        ),
    },
    required=("status",),
)

http_rewrite = Obj(
    "an HTTP rewrite",
    {
        "uri": Str(),
        "authority": Str(),
        "uriRegexRewrite": Obj("a regex rewrite", {"match": Regex(), "rewrite": Str()}, required=("match", "rewrite")),
    },
    one_of=(("uri", "uriRegexRewrite"),),
)

http_retry = Obj(
    "a retry policy",
    {
        "attempts": Int(0, 1000),
        "perTryTimeout": Duration(minimum_seconds=0.001),
        "retryOn": Str(
            pattern=r"^([a-z0-9-]+|[1-5][0-9][0-9])(,([a-z0-9-]+|[1-5][0-9][0-9]))*$",
            pattern_help="a comma-separated list of retry conditions (5xx, gateway-error, connect-failure, reset, retriable-4xx, refused-stream, or "
                         "status codes)",
        ),
        "retryRemoteLocalities": Bool(),
        "retryIgnorePreviousHosts": Bool(),
        "backoff": Duration(minimum_seconds=0.001),
    },
    required=("attempts",),
)

fault = Obj(
    "a fault injection",
    {
        # percent: the deprecated integer form of percentage.value (Istio's timeouts task uses it).
        "delay": Obj(
            "a fault delay",
            {"fixedDelay": Duration(minimum_seconds=0.001), "percentage": percent, "percent": Int(0, 100)},
            required=("fixedDelay",),
            one_of=(("percentage", "percent"),),
        ),
        "abort": Obj(
            "a fault abort",
            {
                "httpStatus": Int(200, 599),
                "grpcStatus": Enum(*GRPC_STATUS_CODES),
                "http2Error": Unsupported("abort with an httpStatus or a grpcStatus"),
                "percentage": percent,
            },
            required_one_of=(("httpStatus", "grpcStatus", "http2Error"),),
        ),
    },
    required_any_of=(("delay", "abort"),),
)

cors_policy = Obj(
    "a CORS policy",
    {
        "allowOrigins": ListOf(string_match),
        "allowMethods": ListOf(Str(non_empty=True)),
        "allowHeaders": ListOf(Str(non_empty=True)),
        "exposeHeaders": ListOf(Str(non_empty=True)),
        "maxAge": Duration(),
        "allowCredentials": Bool(),
        # Preflight requests from origins the policy does not allow: passed on (FORWARD,
        # Envoy's default) or answered without CORS headers (IGNORE).
        "unmatchedPreflights": Enum("FORWARD", "IGNORE"),
    },
)

http_route = Obj(
    "an HTTP route",
    {
        "name": Str(),
        "match": ListOf(http_match),
        "route": ListOf(http_route_destination, min_items=1),
        "redirect": http_redirect,
        "directResponse": http_direct_response,
        "rewrite": http_rewrite,
        "timeout": Duration(),
        "retries": http_retry,
        "fault": fault,
        "mirror": destination,
        "mirrorPercentage": percent,
        "mirrorPercent": Int(0, 100),  # deprecated in Istio for mirrorPercentage; still read, with a warning
        "mirrors": ListOf(Obj("a mirror policy", {"destination": destination, "percentage": percent}, required=("destination",))),
        "corsPolicy": cors_policy,
        "headers": headers,
        # The routes of a delegate VirtualService (one without hosts) take what this one matches.
        "delegate": Obj("a delegate", {"name": subdomain, "namespace": label}, required=("name",)),
    },
    required_one_of=(("route", "redirect", "directResponse", "delegate"),),
    one_of=(("mirror", "mirrors"),),
    hints={"rateLimit": RATE_LIMIT_HINT, "weight": "A weight belongs to each entry of route."},
)

tls_match = Obj(
    "a TLS match",
    {
        "sniHosts": ListOf(host, min_items=1),
        "port": Port(),
        "sourceLabels": Labels(),
        "destinationSubnets": Unsupported("match by sniHosts and port; connections are told apart by the name the client asks for"),
        "sourceNamespace": label,
        # The gateways the match applies at ("mesh": the sidecars); none: every one the
        # VirtualService is bound to.
        "gateways": ListOf(Str(non_empty=True)),
    },
    required=("sniHosts",),
)

tls_route = Obj(
    "a TLS route",
    {
        "match": ListOf(tls_match, min_items=1),
        "route": ListOf(Obj("a route destination", {"destination": destination, "weight": Int(0, 100)}, required=("destination",)), min_items=1),
    },
    required=("match", "route"),
)

tcp_route = Obj(
    "a TCP route",
    {
        # Istio's L4MatchAttributes: every field given must hold (compile/routes.py tcp_route_applies).
        "match": ListOf(Obj("a TCP match", {"port": Port(), "sourceLabels": Labels(), "gateways": ListOf(Str(non_empty=True), min_items=1),
                                            "sourceNamespace": label,
                                            "destinationSubnets": Unsupported("match by port, or give the addresses to a ServiceEntry: under iptables "
                                                                              "capture its addresses pick the connections to them")})),
        "route": ListOf(Obj("a route destination", {"destination": destination, "weight": weight}, required=("destination",)), min_items=1),
    },
    required=("route",),
)

virtual_service = Obj(
    "a VirtualService spec",
    {
        "hosts": ListOf(host, min_items=1),
        "gateways": ListOf(Str(non_empty=True)),
        "http": ListOf(http_route),
        "tcp": ListOf(tcp_route),
        "tls": ListOf(tls_route),
        # Namespaces whose proxies see it ("." its own, "*" all; all when unset).
        "exportTo": ListOf(Str(pattern=r"\.|\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?", pattern_help='".", "*" or a namespace name'), min_items=1),
    },
    # Without hosts, a delegate: its http routes serve the roots that delegate to it (hosts
    # written but not valid leave no VirtualService to check further, not a delegate).
    essential=("hosts",),
    required_any_of=(("http", "tcp", "tls"),),
    hints={"rateLimit": RATE_LIMIT_HINT},
)

# Envoy's Maglev table: a prime number of entries, at most 5000011 (cluster.proto).
MAGLEV_MAX_TABLE_SIZE = 5000011

FAILOVER_PRIORITY_HELP = "a label key, or key=value (" + names.LABEL_KEY_HELP + ")"


def _is_failover_priority_label(text: str) -> bool:
    key, separator, value = text.partition("=")
    return names.is_label_key(key) and (not separator or (bool(value) and names.is_label_value(value)))


load_balancer = Obj(
    "load balancer settings",
    {
        "simple": Enum("ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"),
        "consistentHash": Obj(
            "a consistent hash",
            {
                "httpHeaderName": Str(non_empty=True),
                "httpCookie": Obj("a hash cookie", {"name": Str(non_empty=True), "path": Str(), "ttl": Duration()}, required=("name",)),
                "useSourceIp": Bool(),
                "httpQueryParameterName": Str(non_empty=True),
                "ringHash": Obj("ring hash settings", {"minimumRingSize": Int(1, 8388608)}),
                "maglev": Obj("Maglev settings", {"tableSize": Int(1, MAGLEV_MAX_TABLE_SIZE)}),
                # Deprecated: ringHash.minimumRingSize.
                "minimumRingSize": Int(1, 8388608),
            },
            required_one_of=(("httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName"),),
            one_of=(("ringHash", "maglev"), ("minimumRingSize", "maglev"), ("minimumRingSize", "ringHash")),
        ),
        "localityLbSetting": Obj(
            "locality load balancer settings",
            {
                "enabled": Bool(),
                "distribute": ListOf(Obj("a locality distribution", {"from": Str(non_empty=True), "to": MapOf(Int(0, 100))}, required=("from", "to"))),
                "failover": ListOf(Obj("a locality failover", {"from": Str(non_empty=True), "to": Str(non_empty=True)}, required=("from", "to"))),
                # Labels the client and the endpoints are compared on, in order ("key", or
                # "key=value" to compare the endpoints with that value).
                "failoverPriority": ListOf(Str(valid=_is_failover_priority_label, pattern_help=FAILOVER_PRIORITY_HELP), min_items=1),
            },
            one_of=(("distribute", "failover"), ("distribute", "failoverPriority")),
        ),
        # Envoy's slow start: a new endpoint's share of traffic grows over the window.
        "warmup": Obj(
            "warmup settings",
            {"duration": Duration(minimum_seconds=0.001), "minimumPercent": Number(0, 100), "aggression": Number(1, 1000000)},
            required=("duration",),
        ),
        # Deprecated: warmup.duration.
        "warmupDurationSecs": Duration(minimum_seconds=0.001),
    },
    one_of=(("simple", "consistentHash"), ("warmup", "warmupDurationSecs"), ("warmup", "consistentHash"), ("warmupDurationSecs", "consistentHash")),
)

connection_pool = Obj(
    "connection pool settings",
    {
        "tcp": Obj(
            "TCP connection pool settings",
            {
                "maxConnections": Int(1),
                "connectTimeout": Duration(minimum_seconds=0.001),
                "tcpKeepalive": Obj("TCP keepalive", {"probes": Int(1), "time": Duration(minimum_seconds=1), "interval": Duration(minimum_seconds=1)}),
                "maxConnectionDuration": Duration(minimum_seconds=0.001),
                "idleTimeout": Duration(minimum_seconds=0.001),
            },
        ),
        "http": Obj(
            "HTTP connection pool settings",
            {
                "http1MaxPendingRequests": Int(1),
                "http2MaxRequests": Int(1),
                "maxRequestsPerConnection": Int(0),
                "maxRetries": Int(0),
                "idleTimeout": Duration(minimum_seconds=0.001),
                "h2UpgradePolicy": Enum("DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"),
                "useClientProtocol": Bool(),
                "maxConcurrentStreams": Int(1, 2**31 - 1),
            },
        ),
    },
)

outlier_detection = Obj(
    "outlier detection",
    {
        "consecutive5xxErrors": Int(0),
        "consecutiveGatewayErrors": Int(0),
        "interval": Duration(minimum_seconds=0.001),
        "baseEjectionTime": Duration(minimum_seconds=0.001),
        "maxEjectionPercent": Int(0, 100),
        "minHealthPercent": Int(0, 100),
        "splitExternalLocalOriginErrors": Bool(),
        "consecutiveLocalOriginFailures": Int(0),
    },
)

client_tls = Obj(
    "client TLS settings",
    {
        "mode": Enum("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"),
        "clientCertificate": Str(non_empty=True),
        "privateKey": Str(non_empty=True),
        "caCertificates": Str(non_empty=True),
        "subjectAltNames": ListOf(Str(non_empty=True)),
        "sni": Str(non_empty=True),
        "insecureSkipVerify": Bool(),
    },
    required=("mode",),
    hints={"credentialName": "Kubernetes secrets are not read: give file paths in clientCertificate, privateKey and caCertificates"},
)

_policy_fields = {
    "loadBalancer": load_balancer,
    "connectionPool": connection_pool,
    "outlierDetection": outlier_detection,
    "tls": client_tls,
}
_policy_hints = {"observability": TELEMETRY_HINT, "metrics": TELEMETRY_HINT, "tracing": TELEMETRY_HINT, "rateLimit": RATE_LIMIT_HINT}

port_traffic_policy = Obj("a port traffic policy", {"port": port_selector, **_policy_fields}, required=("port",), hints=_policy_hints)

traffic_policy = Obj(
    "a traffic policy",
    {**_policy_fields, "portLevelSettings": ListOf(port_traffic_policy)},
    hints=_policy_hints,
)

# Istio's visibility: "*" every namespace, "." the resource's own, "~" none, or namespaces.
export_to = ListOf(Str(valid=lambda text: text in ("*", ".", "~") or names.is_label(text), pattern_help="'*', '.', '~' or a namespace "
                                                                                                        "(" + names.LABEL_HELP + ")"))

destination_rule = Obj(
    "a DestinationRule spec",
    {
        "host": host,
        # The client workloads of the rule's namespace it applies to (Mesh.destination_rule_for).
        "workloadSelector": Obj("a workload selector", {"matchLabels": Labels()}, required=("matchLabels",)),
        "exportTo": export_to,
        "trafficPolicy": traffic_policy,
        "subsets": ListOf(Obj("a subset", {"name": Str(non_empty=True), "labels": Labels(), "trafficPolicy": traffic_policy}, required=("name",))),
    },
    required=("host",),
    hints=_policy_hints,
)

workload_entry = Obj(
    "a WorkloadEntry spec",
    {
        "address": Str(non_empty=True),
        "ports": MapOf(Port()),
        "labels": Labels(),
        "network": Str(),
        "locality": Str(pattern=r"^[^/]+(/[^/]+){0,2}$", pattern_help="a locality region[/zone[/subzone]]"),
        "weight": Int(1, 1000000),
        "serviceAccount": label,
    },
    required=("address",),
)

# A WorkloadEntry without address and labels (model/workload_group.py): the labels are the
# group's spec.metadata.labels, the address each entry's own.
workload_group = Obj(
    "a WorkloadGroup spec",
    {
        "metadata": Obj("the metadata of the group's entries", {"labels": Labels(), "annotations": MapOf(Str())}),
        "template": Obj(
            "a WorkloadEntry template",
            {key: value for key, value in workload_entry.fields.items() if key not in ("address", "labels")},
            hints={
                "address": "each WorkloadEntry of the group gives its own address",
                "labels": "the labels of the group's entries are spec.metadata.labels",
            },
        ),
        "probe": Unsupported("meshwright does not probe VM workloads: Envoy's outlier detection (a DestinationRule's outlierDetection) takes failing "
                             "endpoints out"),
    },
    required=("template",),
)

service_port = Obj(
    "a service port",
    {"number": Port(), "protocol": Enum(*PROTOCOLS, *TLS_PROTOCOLS, fold_case=True), "name": Str(non_empty=True), "targetPort": Port()},
    required=("number", "name"),
)

workload_selector = Obj("a workload selector", {"labels": Labels()}, required=("labels",))

service_entry = Obj(
    "a ServiceEntry spec",
    {
        "hosts": ListOf(host, min_items=1),
        "ports": ListOf(service_port, min_items=1),
        "location": Enum(
            "MESH_EXTERNAL", "MESH_INTERNAL",
            hints={"MESH_INTERNET": "MESH_INTERNAL: the service runs in the mesh (its workloads have sidecars); MESH_EXTERNAL: it runs outside the "
                                    "mesh (an API on the internet, a database without a sidecar)"},
        ),
        "resolution": Enum("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"),
        "endpoints": ListOf(workload_entry),
        "workloadSelector": workload_selector,
        # Virtual IPs and CIDR ranges: used by sidecars with iptables capture (compile/capture.py).
        "addresses": ListOf(AddressOrRange()),
    },
    required=("hosts", "ports"),
    one_of=(("endpoints", "workloadSelector"),),
)

server_tls = Obj(
    "server TLS settings",
    {
        "mode": Enum("PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"),
        "serverCertificate": Str(non_empty=True),
        "privateKey": Str(non_empty=True),
        "caCertificates": Str(non_empty=True),
        "caCrl": Str(non_empty=True),
        "httpsRedirect": Bool(),
        "subjectAltNames": ListOf(Str(non_empty=True), min_items=1),
        "verifyCertificateSpki": ListOf(Str(non_empty=True), min_items=1),
        "verifyCertificateHash": ListOf(Str(non_empty=True), min_items=1),
        "minProtocolVersion": Enum(*SERVER_TLS_VERSIONS),
        "maxProtocolVersion": Enum(*SERVER_TLS_VERSIONS),
        "cipherSuites": ListOf(Str(non_empty=True)),
        # Checked by validate/references.py (a folder name; the MeshConfig's credentials.dir).
        "credentialName": Any(),
        # Several certificates (Istio's RSA and ECDSA pair): credentials, or file pairs.
        "credentialNames": ListOf(Any(), min_items=1),
        "tlsCertificates": ListOf(Obj("a server certificate", {"serverCertificate": Str(non_empty=True), "privateKey": Str(non_empty=True),
                                                               "caCertificates": Str(non_empty=True)}, required=("serverCertificate",
                                                                                                                 "privateKey")), min_items=1),
    },
)

gateway_server = Obj(
    "a gateway server",
    {
        "port": Obj("a gateway port", {"number": Port(), "protocol": Enum("HTTP", "HTTPS", "HTTP2", "GRPC", "TCP", "TLS", fold_case=True),
                                       "name": Str(non_empty=True)}, required=("number", "protocol", "name")),
        "bind": Address(),
        "hosts": ListOf(Str(valid=lambda text: names.is_namespaced_host(text, namespace_required=False),
                            pattern_help=f"a host (a DNS name or a wildcard) or {names.NAMESPACED_HOST_HELP}"), min_items=1),
        "name": Str(),
        "tls": server_tls,
    },
    required=("port", "hosts"),
)

gateway = Obj(
    "a Gateway spec",
    {"selector": Labels(), "servers": ListOf(gateway_server, min_items=1)},
    required=("servers",),
)

CAPTURE_HINTS = {
    m: "a Sidecar's listeners are explicit (NONE); iptables capture is chosen per workload by the WorkloadEntry "
    "annotation sidecar.istio.io/interceptionMode: REDIRECT" for m in ("DEFAULT", "IPTABLES")
}

# Where captured traffic to no known service goes (compile/capture.py outbound_traffic_policy).
outbound_traffic_policy = Obj(
    "an outbound traffic policy",
    {
        "mode": Enum("ALLOW_ANY", "REGISTRY_ONLY"),
        "egressProxy": Unsupported("Istio's MeshConfig has no egressProxy: set it in a Sidecar's outboundTrafficPolicy (with mode ALLOW_ANY)"),
    },
)

sidecar = Obj(
    "a Sidecar spec",
    {
        "workloadSelector": workload_selector,
        # mode given: Istio's enum would read a missing one as REGISTRY_ONLY, the MeshConfig's default here is ALLOW_ANY.
        # egressProxy: where its traffic to destinations the mesh does not know goes (ALLOW_ANY).
        "outboundTrafficPolicy": Obj(outbound_traffic_policy.name, {**outbound_traffic_policy.fields, "egressProxy": destination}, required=("mode",)),
        "ingress": ListOf(
            Obj(
                "a sidecar ingress listener",
                {
                    "port": Obj("a sidecar port", {"number": Port(), "protocol": Enum(*PROTOCOLS, fold_case=True), "name": Str(non_empty=True)},
                                required=("number", "protocol")),
                    "bind": Address(),
                    "defaultEndpoint": Str(pattern=r"^(127\.0\.0\.1|0\.0\.0\.0|\[::1\]|[0-9.]+):\d+$", pattern_help="an endpoint IP:PORT (127.0.0.1:8080)"),
                    "captureMode": Enum("NONE", hints=CAPTURE_HINTS),
                },
                required=("port", "defaultEndpoint"),
            )
        ),
        "egress": ListOf(
            Obj(
                "a sidecar egress listener",
                {
                    "port": Obj("a sidecar port", {"number": Port(), "protocol": Enum(*PROTOCOLS, *TLS_PROTOCOLS, fold_case=True),
                                                   "name": Str(non_empty=True)}, required=("number", "protocol")),
                    "bind": Address(),
                    "captureMode": Enum("NONE", hints=CAPTURE_HINTS),
                    "hosts": ListOf(Str(valid=names.is_namespaced_host, pattern_help=names.NAMESPACED_HOST_HELP), min_items=1),
                },
                required=("hosts",),
            )
        ),
    },
)

SUPPORTED_APPLY_TO = (
    "LISTENER", "FILTER_CHAIN", "NETWORK_FILTER", "LISTENER_FILTER", "HTTP_FILTER", "ROUTE_CONFIGURATION", "VIRTUAL_HOST", "HTTP_ROUTE", "CLUSTER",
    "BOOTSTRAP", "EXTENSION_CONFIG",
)
PATCH_OPERATIONS = ("MERGE", "MERGE_AND_REPLACE_LIST", "ADD", "REMOVE", "INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST", "REPLACE")

envoy_filter_patch = Obj(
    "an EnvoyFilter config patch",
    {
        "applyTo": Enum(*SUPPORTED_APPLY_TO),
        "match": Obj(
            "a patch match",
            {
                "context": Enum("ANY", "SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY"),
                "proxy": Obj(
                    "a proxy match",
                    {
                        "proxyVersion": Regex(),
                        # Compared with the proxies' node metadata (compile/envoyfilter.py proxy_metadata_matches).
                        "metadata": MapOf(Str()),
                    },
                ),
                "listener": Obj(
                    "a listener match",
                    {
                        "portNumber": Port(),
                        "portName": Unsupported("Istio does not act on it either: match the listener by portNumber"),
                        "name": Str(),
                        "listenerFilter": Str(),
                        "filterChain": Obj(
                            "a filter chain match",
                            {
                                "name": Str(),
                                "sni": Str(),
                                "transportProtocol": Enum("", "raw_buffer", "tls"),
                                "applicationProtocols": Str(),
                                "destinationPort": Port(),
                                "filter": Obj("a filter match", {"name": Str(), "subFilter": Obj("a sub-filter match", {"name": Str()})}),
                            },
                        ),
                    },
                ),
                "routeConfiguration": Obj(
                    "a route configuration match",
                    {
                        "portNumber": Port(),
                        "portName": Str(),
                        "gateway": Str(),
                        "name": Str(),
                        "vhost": Obj(
                            "a virtual host match",
                            {
                                "name": Str(),
                                "domainName": Str(),
                                "route": Obj("a route match", {"name": Str(), "action": Enum("ANY", "ROUTE", "REDIRECT", "DIRECT_RESPONSE")}),
                            },
                        ),
                    },
                ),
                "cluster": Obj("a cluster match", {"portNumber": Port(), "service": Str(), "subset": Str(), "name": Str()}),
            },
            one_of=(("listener", "routeConfiguration", "cluster"),),
        ),
        "patch": Obj(
            "a patch",
            {
                "operation": Enum(*PATCH_OPERATIONS),
                "value": Any(),
                # Where an inserted HTTP filter goes (compile/envoyfilter.py filter_class_index).
                "filterClass": Enum("UNSPECIFIED", "AUTHN", "AUTHZ", "STATS"),
            },
            required=("operation",),
        ),
    },
    required=("applyTo", "patch"),
)

envoy_filter = Obj(
    "an EnvoyFilter spec",
    {"workloadSelector": workload_selector, "configPatches": ListOf(envoy_filter_patch, min_items=1), "priority": Int()},
    required=("configPatches",),
)

provider_ref = Obj("a provider reference", {"name": Str(non_empty=True)}, required=("name",))
collector_service = Str(
    pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$",
    pattern_help="a collector: [namespace/]hostname, or an IP address",
)
UNSUPPORTED_PROVIDER_HINT = (
    "meshwright supports the provider types zipkin, opentelemetry, envoyFileAccessLog, prometheus, envoyExtAuthzHttp and envoyExtAuthzGrpc"
)
# Istio writes the port of an ext-authz provider as a string ("9000") or a number.
_ext_authz_port = Any()
_ext_authz_common = {
    "service": collector_service, "port": _ext_authz_port, "timeout": Duration(minimum_seconds=0.001), "failOpen": Bool(),
    "statusOnError": Str(pattern=r"[1-5][0-9][0-9]", pattern_help="an HTTP status code such as 403"),
}

extension_provider = Obj(
    "an extension provider",
    {
        "name": Str(non_empty=True),
        "zipkin": Obj(
            "a Zipkin provider",
            {"service": collector_service, "port": Port(), "path": Str(pattern=r"/\S*", pattern_help="a path starting with /, without spaces")},
            required=("service", "port"),
        ),
        "opentelemetry": Obj(
            "an OpenTelemetry provider",
            {"service": collector_service, "port": Port()},
            required=("service", "port"),
            hints={"http": "spans go to the collector over OTLP/gRPC (its port 4317); OTLP/HTTP is not supported"},
        ),
        # External authorization (AuthorizationPolicy action CUSTOM): compile/ext_authz.py.
        "envoyExtAuthzHttp": Obj(
            "an HTTP external authorizer",
            {**_ext_authz_common, "pathPrefix": Str(pattern=r"/\S*", pattern_help="a path starting with /, without spaces"),
             "includeRequestHeadersInCheck": ListOf(Str(non_empty=True)), "includeAdditionalHeadersInCheck": MapOf(Str()),
             "headersToUpstreamOnAllow": ListOf(Str(non_empty=True)), "headersToDownstreamOnDeny": ListOf(Str(non_empty=True)),
             "headersToDownstreamOnAllow": ListOf(Str(non_empty=True))},
            required=("service", "port"),
        ),
        "envoyExtAuthzGrpc": Obj("a gRPC external authorizer", dict(_ext_authz_common), required=("service", "port")),
        "envoyFileAccessLog": Obj(
            "a file access log provider",
            {
                "path": Str(valid=is_access_log_path, pattern_help=ACCESS_LOG_PATH_HELP),
                "logFormat": Obj("a log format", {"text": Str(non_empty=True), "labels": MapOf(Str())}, required_one_of=(("text", "labels"),)),
            },
            required=("path",),
        ),
        "prometheus": Obj("a Prometheus provider", {}),
    },
    required=("name",),
    required_one_of=(("zipkin", "opentelemetry", "envoyFileAccessLog", "prometheus", "envoyExtAuthzHttp", "envoyExtAuthzGrpc"),),
    hints={
        other: UNSUPPORTED_PROVIDER_HINT
        for other in (
            "stackdriver", "skywalking", "datadog", "lightstep",
            "envoyHttpAls", "envoyTcpAls", "envoyOtelAls", "sds",
        )
    },
)

mesh_config = Obj(
    "a MeshConfig spec",
    {
        "trustDomain": Str(valid=names.is_subdomain, pattern_help="a trust domain: " + names.SUBDOMAIN_HELP),
        # Former trust domains of the mesh (Istio's trust domain migration): a principal in
        # one of them, or in cluster.local, means the same workload in every one of them.
        "trustDomainAliases": ListOf(Str(valid=names.is_subdomain, pattern_help="a trust domain: " + names.SUBDOMAIN_HELP)),
        "envoyVersion": Str(pattern=r"^\d+\.\d+\.\d+$", pattern_help="an Envoy version such as 1.40.0"),
        "defaultMtlsMode": Enum("STRICT", "PERMISSIVE", "DISABLE"),
        # Where captured traffic to no known service goes (sidecars with iptables capture).
        "outboundTrafficPolicy": outbound_traffic_policy,
        "certificates": security_api.certificates,
        # Where Gateway servers' credentialName folders are on the gateways' hosts.
        "credentials": Obj("a credentials folder", {"dir": Str(pattern=r"/\S+", pattern_help="an absolute path without spaces, such as "
                                                                                             "/etc/meshwright/credentials")}, required=("dir",)),
        # "" (no access log unless a provider says so) or where the built-in `envoy` provider writes.
        "accessLogFile": Str(valid=lambda path: path == "" or is_access_log_path(path), pattern_help=ACCESS_LOG_PATH_HELP),
        "accessLogEncoding": Enum("TEXT", "JSON"),
        # The CA bundle on the proxies' hosts that TLS origination trusts when a DestinationRule
        # names no caCertificates (Istio uses the system's trust store).
        "systemCaCertificates": Str(pattern=r"/\S+", pattern_help="an absolute path without spaces, such as /etc/ssl/certs/ca-certificates.crt"),
        "extensionProviders": ListOf(extension_provider),
        "defaultProviders": Obj(
            "default providers",
            {"metrics": ListOf(Str(non_empty=True)), "tracing": ListOf(Str(non_empty=True)), "accessLogging": ListOf(Str(non_empty=True))},
        ),
    },
    hints={
        "enableTracing": TRACING_HINT,
        "tracing": TRACING_HINT,
        "enableMetrics": METRICS_HINT,
        "defaultConfig": "ProxyConfig is not read: tracing is set by providers. " + TRACING_HINT,
        "rootNamespace": "the root namespace is istio-system, as in Istio's default",
    },
)

# Istio's workload mode: CLIENT (a sidecar's outbound listeners, a gateway's), SERVER (a
# sidecar's inbound listeners) or both (compile/telemetry.py).
workload_mode = Obj("a workload mode selector", {"mode": Enum("CLIENT_AND_SERVER", "CLIENT", "SERVER")})
# What stat names can carry: a label with a value fixed per cluster (compile/telemetry.py).
TAG_VALUE_HELP = (
    "a value for every request of a cluster: a CEL string literal such as \"'v1'\", whose stat "
    "name carries it as the label (for a per-request value, log it in an access log instead)"
)
METRIC_NAMES = (
    "ALL_METRICS", "REQUEST_COUNT", "REQUEST_DURATION", "REQUEST_SIZE", "RESPONSE_SIZE", "TCP_OPENED_CONNECTIONS",
    "TCP_CLOSED_CONNECTIONS", "TCP_SENT_BYTES", "TCP_RECEIVED_BYTES", "GRPC_REQUEST_MESSAGES", "GRPC_RESPONSE_MESSAGES",
)
custom_tag_source = Obj("a custom tag source", {"name": Str(non_empty=True), "defaultValue": Str()}, required=("name",))

telemetry = Obj(
    "a Telemetry spec",
    {
        "selector": Obj("a workload selector", {"matchLabels": Labels()}, required=("matchLabels",)),
        "accessLogging": ListOf(
            Obj(
                "an access logging entry",
                {
                    "providers": ListOf(provider_ref),
                    "disabled": Bool(),
                    "match": workload_mode,
                    "filter": Obj("an access log filter", {"expression": Str(non_empty=True)}, required=("expression",)),
                },
            )
        ),
        "tracing": ListOf(
            Obj(
                "a tracing entry",
                {
                    "providers": ListOf(provider_ref),
                    "randomSamplingPercentage": Number(0, 100),
                    "disableSpanReporting": Bool(),
                    "match": workload_mode,
                    "customTags": MapOf(Obj(
                        "a custom tag",
                        {
                            "literal": Obj("a literal tag", {"value": Str()}, required=("value",)),
                            "environment": custom_tag_source,
                            "header": custom_tag_source,
                        },
                        required_one_of=(("literal", "environment", "header"),),
                    )),
                    # false: a random sampling decision rather than one that follows x-request-id.
                    "useRequestIdForTraceSampling": Bool(),
                    # Refused when true (validate/telemetry.py): spans carry no istio.* tags.
                    "enableIstioTags": Bool(),
                },
            )
        ),
        "metrics": ListOf(
            Obj(
                "a metrics entry",
                {
                    "providers": ListOf(provider_ref),
                    "overrides": ListOf(
                        Obj(
                            "a metrics override",
                            {
                                "match": Obj(
                                    "a metric selector",
                                    {
                                        "metric": Enum(*METRIC_NAMES),
                                        "mode": Enum("CLIENT_AND_SERVER", "CLIENT", "SERVER"),
                                        "customMetric": Unsupported("metrics are Envoy's cluster stats; select one with match.metric (docs/telemetry.md)"),
                                    },
                                ),
                                "disabled": Bool(),
                                "tagOverrides": MapOf(Obj(
                                    "a tag override",
                                    {"operation": Enum("UPSERT", "REMOVE"), "value": Str()},
                                )),
                            },
                        )
                    ),
                    # Warned about (validate/telemetry.py): Envoy's counters are always current.
                    "reportingInterval": Duration(minimum_seconds=0.001),
                },
            )
        ),
    },
    hints={
        "targetRef": "targetRef selects Kubernetes Gateway API resources, which meshwright does not have: select workloads with selector.matchLabels",
        "targetRefs": "targetRefs select Kubernetes Gateway API resources, which meshwright does not have: select workloads with selector.matchLabels",
    },
)

# kind -> (accepted apiVersions, spec schema)
KINDS = {
    "VirtualService": (NETWORKING_VERSIONS, virtual_service),
    "DestinationRule": (NETWORKING_VERSIONS, destination_rule),
    "ServiceEntry": (NETWORKING_VERSIONS, service_entry),
    "WorkloadEntry": (NETWORKING_VERSIONS, workload_entry),
    "WorkloadGroup": (NETWORKING_VERSIONS, workload_group),
    "Gateway": (NETWORKING_VERSIONS, gateway),
    "Sidecar": (NETWORKING_VERSIONS, sidecar),
    "EnvoyFilter": (NETWORKING_VERSIONS, envoy_filter),
    "MeshConfig": (MESHCONFIG_VERSIONS, mesh_config),
    **security_api.KINDS,
    "Telemetry": (TELEMETRY_VERSIONS, telemetry),
}

metadata = Obj(
    "metadata",
    {
        "name": subdomain,
        "namespace": label,
        "labels": Labels(),
        "annotations": MapOf(Str()),
    },
    required=("name",),
)

document = Obj(
    "a resource",
    {"apiVersion": Str(), "kind": Str(), "metadata": metadata, "spec": Any()},
    required=("apiVersion", "kind", "metadata", "spec"),
)
