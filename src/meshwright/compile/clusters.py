"""Services x ports x subsets -> Envoy clusters, with DestinationRule traffic policy applied."""

from __future__ import annotations

from dataclasses import dataclass

from meshwright.compile.endpoints import load_assignment, topology_labels
from meshwright.compile.envoy_values import (
    ADS, HTTP_PROTOCOL_OPTIONS, MAX_UINT32, UPSTREAM_TLS, duration, socket_address, subject_alt_name_matchers, tls_params, typed,
)
from meshwright.compile.mtls import apply_mesh_tls, auto_mtls_endpoints
from meshwright.mesh import Mesh
from meshwright.model.resource import Resource
from meshwright.registry.model import Service, ServicePort

POLICY_FIELDS = ("loadBalancer", "connectionPool", "outlierDetection", "tls")
DEFAULT_CONNECT_TIMEOUT = "10s"
SIMPLE_LB = {"ROUND_ROBIN": "ROUND_ROBIN", "LEAST_REQUEST": "LEAST_REQUEST", "RANDOM": "RANDOM"}


def outbound_cluster_name(port: int, subset: str, host: str) -> str:
    return f"outbound|{port}|{subset}|{host}"


def parse_outbound_cluster_name(name: str) -> tuple[int, str, str] | None:
    """(port, subset, host) of an outbound cluster's name, else None."""
    parts = name.split("|", 3)
    return (int(parts[1]), parts[2], parts[3]) if len(parts) == 4 and parts[0] == "outbound" else None


def inbound_cluster_name(port: int) -> str:
    return f"inbound|{port}||"


def _port_settings(policy: dict, port: int | None) -> dict | None:
    for settings in policy.get("portLevelSettings") or []:
        if settings["port"]["number"] == port:
            return settings
    return None


def rule_policy(rule: Resource | None, subset: str, port: int | None) -> dict:
    """The traffic policy a DestinationRule gives (Istio's MergeTrafficPolicy): the top level,
    replaced whole by its port-level settings for the port if any; then the subset's fields
    over it, replaced whole by the subset's port-level settings if any. Port-level settings
    inherit nothing: what they omit takes its default (Istio's docs)."""
    if rule is None:
        return {}

    def over(merged: dict, policy: dict) -> dict:
        merged = {**merged, **{key: policy[key] for key in POLICY_FIELDS if key in policy}}
        port_level = _port_settings(policy, port)
        return {key: port_level[key] for key in POLICY_FIELDS if key in port_level} if port_level is not None else merged

    merged = over({}, rule.spec.get("trafficPolicy") or {})
    for entry in rule.spec.get("subsets") or []:
        if entry["name"] == subset:
            merged = over(merged, entry.get("trafficPolicy") or {})
    return merged


def effective_policy(mesh: Mesh, host: str, client, subset: str, port: int | None) -> dict:
    """The traffic policy that applies to traffic from a client proxy to a subset and port of host."""
    return rule_policy(mesh.destination_rule_for(host, client.namespace, client.label_map), subset, port)


def subset_labels(rule: Resource | None, subset: str) -> dict:
    """The labels that select a subset's endpoints ({}: every endpoint)."""
    for entry in (rule.spec.get("subsets") or []) if rule and subset else []:
        if entry["name"] == subset:
            return entry.get("labels") or {}
    return {}


def _tcp_limits(policy: dict) -> dict:
    tcp = (policy.get("connectionPool") or {}).get("tcp") or {}
    limits = {}
    if "idleTimeout" in tcp:
        limits["idle_timeout"] = duration(tcp["idleTimeout"])
    if "maxConnectionDuration" in tcp:
        limits["max_downstream_connection_duration"] = duration(tcp["maxConnectionDuration"])
    return limits


def tcp_connection_limits(mesh: Mesh, client, cluster_names: list[str]) -> dict:
    """The TcpProxy fields a client's DestinationRules give connections to clusters (TCP and
    TLS ports): connectionPool.tcp idleTimeout and maxConnectionDuration, as Istio sets them on
    the tcp_proxy. A connection split over several clusters gets a limit only where their
    policies agree on it (one tcp_proxy holds one value)."""
    per_cluster = []
    for name in cluster_names:
        parsed = parse_outbound_cluster_name(name)
        if parsed is None:
            return {}
        port, subset, host = parsed
        per_cluster.append(_tcp_limits(effective_policy(mesh, host, client, subset, port)))
    first = per_cluster[0] if per_cluster else {}
    return {key: value for key, value in first.items() if all(other.get(key) == value for other in per_cluster)}


def _circuit_breakers(pool: dict) -> dict:
    tcp, http = pool.get("tcp") or {}, pool.get("http") or {}
    return {
        "thresholds": [
            {
                "max_connections": tcp.get("maxConnections", MAX_UINT32),
                "max_pending_requests": http.get("http1MaxPendingRequests", MAX_UINT32),
                "max_requests": http.get("http2MaxRequests", MAX_UINT32),
                # Istio reads 0 as unset: no cap on parallel retries.
                "max_retries": http.get("maxRetries") or MAX_UINT32,
                "track_remaining": True,
            }
        ]
    }


def _outlier_detection(outlier: dict) -> dict:
    """Istio's translation: success-rate ejection off; consecutive 5xx (Envoy's default: 5,
    enforced) and gateway errors as given, a count of 0 turning that check off."""
    out: dict = {"enforcing_success_rate": 0}
    if "consecutive5xxErrors" in outlier:
        out["consecutive_5xx"] = outlier["consecutive5xxErrors"]
        out["enforcing_consecutive_5xx"] = 100 if outlier["consecutive5xxErrors"] else 0
    if "consecutiveGatewayErrors" in outlier:
        out["consecutive_gateway_failure"] = outlier["consecutiveGatewayErrors"]
        out["enforcing_consecutive_gateway_failure"] = 100 if outlier["consecutiveGatewayErrors"] else 0
    if "interval" in outlier:
        out["interval"] = duration(outlier["interval"])
    if "baseEjectionTime" in outlier:
        out["base_ejection_time"] = duration(outlier["baseEjectionTime"])
    if "maxEjectionPercent" in outlier:
        out["max_ejection_percent"] = outlier["maxEjectionPercent"]
    # Local-origin errors (connect failures, timeouts, resets) counted apart from the
    # upstream's own 5xx; Envoy's consecutive_local_origin_failure counts them.
    if outlier.get("splitExternalLocalOriginErrors"):
        out["split_external_local_origin_errors"] = True
    if "consecutiveLocalOriginFailures" in outlier:
        out["consecutive_local_origin_failure"] = outlier["consecutiveLocalOriginFailures"]
        out["enforcing_consecutive_local_origin_failure"] = 100 if outlier["consecutiveLocalOriginFailures"] else 0
    return out


def _upstream_tls(tls: dict, host: str, port: ServicePort, system_ca: str) -> dict:
    """DestinationRule tls (SIMPLE or MUTUAL) -> an UpstreamTlsContext. The server's
    certificate is checked against caCertificates (else the system's trust store, system_ca,
    as Istio does) and, without subjectAltNames, against the name the proxy asks for (Istio's
    auto SAN validation), unless insecureSkipVerify."""
    sni = tls.get("sni", host)
    context: dict = {"common_tls_context": {"tls_params": tls_params()}, "sni": sni}
    common = context["common_tls_context"]
    if tls["mode"] == "MUTUAL":
        common["tls_certificates"] = [{"certificate_chain": {"filename": tls["clientCertificate"]}, "private_key": {"filename": tls["privateKey"]}}]
    if not tls.get("insecureSkipVerify"):
        names = tls.get("subjectAltNames") or [sni]
        common["validation_context"] = {
            "trusted_ca": {"filename": tls.get("caCertificates", system_ca)},
            "match_typed_subject_alt_names": subject_alt_name_matchers(names),
        }
    if port.protocol in ("HTTP2", "GRPC"):
        common["alpn_protocols"] = ["h2"]
    return {"name": "envoy.transport_sockets.tls", "typed_config": typed(UPSTREAM_TLS, **context)}


def _http2_options(http: dict) -> dict:
    return {"max_concurrent_streams": http["maxConcurrentStreams"]} if "maxConcurrentStreams" in http else {}


def _upstream_protocol(port: ServicePort, http: dict) -> dict:
    """Which HTTP the cluster speaks upstream: the client's own (useClientProtocol), HTTP/2
    for HTTP2 and GRPC ports and for HTTP ports whose h2UpgradePolicy is UPGRADE, else
    HTTP/1.1 (Istio's DEFAULT is DO_NOT_UPGRADE)."""
    if http.get("useClientProtocol"):
        return {"use_downstream_protocol_config": {"http_protocol_options": {}, "http2_protocol_options": _http2_options(http)}}
    if port.protocol in ("HTTP2", "GRPC") or http.get("h2UpgradePolicy") == "UPGRADE":
        return {"explicit_http_config": {"http2_protocol_options": _http2_options(http)}}
    return {"explicit_http_config": {"http_protocol_options": {}}}


def _http_protocol_options(port: ServicePort, pool: dict) -> dict | None:
    http, tcp = pool.get("http") or {}, pool.get("tcp") or {}
    common: dict = {}
    if "idleTimeout" in http:
        common["idle_timeout"] = duration(http["idleTimeout"])
    if "maxConnectionDuration" in tcp:
        common["max_connection_duration"] = duration(tcp["maxConnectionDuration"])
    if http.get("maxRequestsPerConnection"):
        common["max_requests_per_connection"] = http["maxRequestsPerConnection"]
    protocol = _upstream_protocol(port, http)
    # HTTP/1.1 with nothing else set is Envoy's default: no options at all.
    if not common and protocol == {"explicit_http_config": {"http_protocol_options": {}}}:
        return None
    options: dict = {"common_http_protocol_options": common} if common else {}
    options.update(protocol)
    return {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": typed(HTTP_PROTOCOL_OPTIONS, **options)}


def _slow_start(balancer: dict) -> dict | None:
    """Istio's warmup (or its older warmupDurationSecs) -> Envoy's slow start: a new endpoint's
    weight grows from minimumPercent to full over the window, at the given aggression."""
    if "warmupDurationSecs" in balancer:
        return {"slow_start_window": duration(balancer["warmupDurationSecs"])}
    warmup = balancer.get("warmup")
    if warmup is None:
        return None
    config: dict = {"slow_start_window": duration(warmup["duration"])}
    if "aggression" in warmup:
        config["aggression"] = {"default_value": warmup["aggression"], "runtime_key": "upstream.warmup_aggression"}
    if "minimumPercent" in warmup:
        config["min_weight_percent"] = {"value": warmup["minimumPercent"]}
    return config


def _apply_consistent_hash(cluster: dict, consistent: dict) -> None:
    """RING_HASH (Istio's default, ringHash or the older minimumRingSize) or MAGLEV; the route
    says what is hashed (compile/routes.py hash_policy)."""
    if "maglev" in consistent:
        cluster["lb_policy"] = "MAGLEV"
        if "tableSize" in consistent["maglev"]:
            cluster["maglev_lb_config"] = {"table_size": str(consistent["maglev"]["tableSize"])}
        return
    cluster["lb_policy"] = "RING_HASH"
    ring_size = (consistent.get("ringHash") or {}).get("minimumRingSize", consistent.get("minimumRingSize"))
    if ring_size is not None:
        cluster["ring_hash_lb_config"] = {"minimum_ring_size": str(ring_size)}


def _apply_load_balancer(cluster: dict, balancer: dict) -> None:
    if "consistentHash" in balancer:
        _apply_consistent_hash(cluster, balancer["consistentHash"])
    else:
        cluster["lb_policy"] = SIMPLE_LB[balancer.get("simple", "LEAST_REQUEST")]
        slow_start = _slow_start(balancer)
        if slow_start is not None:
            # Validation refuses warmup with RANDOM (Envoy has no slow start there).
            config_field = "round_robin_lb_config" if cluster["lb_policy"] == "ROUND_ROBIN" else "least_request_lb_config"
            cluster[config_field] = {"slow_start_config": slow_start}
    if (balancer.get("localityLbSetting") or {}).get("distribute"):
        cluster["common_lb_config"] = {"locality_weighted_lb_config": {}}


def apply_policy(cluster: dict, policy: dict, port: ServicePort, host: str, system_ca: str) -> None:
    """DestinationRule traffic policy -> fields of one Envoy cluster."""
    pool = policy.get("connectionPool") or {}
    tcp = pool.get("tcp") or {}
    cluster["connect_timeout"] = duration(tcp["connectTimeout"]) if "connectTimeout" in tcp else DEFAULT_CONNECT_TIMEOUT
    cluster["circuit_breakers"] = _circuit_breakers(pool)
    if "tcpKeepalive" in tcp:
        keepalive = tcp["tcpKeepalive"]
        cluster["upstream_connection_options"] = {"tcp_keepalive": {
            key: (int(duration(keepalive[field])[:-1].split(".")[0]) if field != "probes" else keepalive[field])
            for key, field in (("keepalive_probes", "probes"), ("keepalive_time", "time"), ("keepalive_interval", "interval")) if field in keepalive
        }}
    if cluster["type"] != "ORIGINAL_DST":
        _apply_load_balancer(cluster, policy.get("loadBalancer") or {})
    if "outlierDetection" in policy:
        cluster["outlier_detection"] = _outlier_detection(policy["outlierDetection"])
        # Istio's minHealthPercent defaults to 0, where Envoy's panic threshold is 50%:
        # ejected hosts get no traffic however few healthy ones are left.
        cluster.setdefault("common_lb_config", {})["healthy_panic_threshold"] = {"value": policy["outlierDetection"].get("minHealthPercent", 0)}
    tls = policy.get("tls") or {}
    if tls.get("mode") in ("SIMPLE", "MUTUAL"):
        cluster["transport_socket"] = _upstream_tls(tls, host, port, system_ca)
    options = _http_protocol_options(port, pool) if port.is_http else None
    if options:
        cluster["typed_extension_protocol_options"] = options


# Resolutions whose clusters carry their endpoints inline (no EDS): their clusters depend on
# the proxy's locality, as load assignments do.
INLINE_ENDPOINT_RESOLUTIONS = ("DNS", "DNS_ROUND_ROBIN")


@dataclass(frozen=True)
class _EdsCluster:
    """What a load assignment of one EDS cluster is made of, but the proxy's locality."""

    name: str
    endpoints: list
    port: ServicePort
    policy: dict
    mtls: frozenset


@dataclass(frozen=True)
class _ServicePlan:
    clusters: list[dict]
    eds: list[_EdsCluster]


def failover_priorities(rule: Resource | None) -> tuple[str, ...]:
    """Every failoverPriority entry of a rule, in any of its policies (top level, subsets,
    port level)."""
    if rule is None:
        return ()
    policy = rule.spec.get("trafficPolicy") or {}
    policies = [policy, *(policy.get("portLevelSettings") or [])]
    for entry in rule.spec.get("subsets") or []:
        subset_policy = entry.get("trafficPolicy") or {}
        policies += [subset_policy, *(subset_policy.get("portLevelSettings") or [])]
    return tuple(label for each in policies
                 for label in ((each.get("loadBalancer") or {}).get("localityLbSetting") or {}).get("failoverPriority") or [])


def priority_labels_of(mesh: Mesh, proxy, rule: Resource | None) -> tuple | None:
    """What of the client its rule's failoverPriority reads: its values of the labels named
    (with its locality's) and whether it has labels at all (Istio orders nothing for a proxy
    without); None when the rule has no failoverPriority, so that load assignments are shared
    by every client of a locality."""
    # Read once per mesh and rule: every proxy asks for every service's.
    entries = mesh.memo(("failover-priorities", rule.ref), lambda: failover_priorities(rule)) if rule else ()
    if not entries:
        return None
    labels = topology_labels(proxy.label_map, proxy.locality)
    keys = sorted({entry for entry in entries if "=" not in entry})
    return (bool(labels), *((key, labels.get(key, "")) for key in keys))


def service_clusters(mesh: Mesh, proxy, service: Service) -> tuple[list[dict], list[dict]]:
    """Clusters of one service (every port, plain and per subset) and their endpoints (EDS),
    built once per mesh for what they depend on: the DestinationRule that applies to the
    proxy (its namespace, and its labels where a rule's workloadSelector reads them), and,
    only where they read it, the proxy's locality (load assignments, inline endpoints), its
    values of the labels the rule's failoverPriority names, and whether it is a gateway
    (original-destination services). Proxies of every locality share the same cluster
    objects. Shared: never changed."""
    rule = mesh.destination_rule_for(service.hostname, proxy.namespace, proxy.label_map)
    rule_ref = rule.ref if rule else None
    inline = service.resolution in INLINE_ENDPOINT_RESOLUTIONS
    gateway = proxy.kind == "gateway" and service.resolution == "NONE" and not service.endpoints
    priority_labels = priority_labels_of(mesh, proxy, rule)
    # Every key starts with the hostname: compile/incremental.py drops a changed service's entries by it.
    plan_key = ("service-clusters", service.hostname, rule_ref, (proxy.locality, priority_labels) if inline else None, gateway, "plan")
    plan = mesh.memo(plan_key, lambda: _service_plan(mesh, proxy, service, rule, gateway))
    key = ("service-clusters", service.hostname, rule_ref, proxy.locality, gateway, priority_labels)
    proxy_labels = topology_labels(proxy.label_map, proxy.locality)
    return mesh.memo(key, lambda: (plan.clusters, [
        load_assignment(eds.name, eds.endpoints, eds.port, proxy.locality, eds.policy, eds.mtls, proxy_labels) for eds in plan.eds
    ]))


def _service_plan(mesh: Mesh, proxy, service: Service, rule: Resource | None, gateway: bool) -> _ServicePlan:
    clusters, eds = [], []
    # Each subset's endpoints are selected once, for every port.
    subsets = [""] + [entry["name"] for entry in (rule.spec.get("subsets") or [] if rule else [])]
    members_of = {subset: [e for e in service.endpoints if e.matches(subset_labels(rule, subset))] for subset in subsets}
    for port in service.ports:
        for subset in subsets:
            name = outbound_cluster_name(port.number, subset, service.hostname)
            policy = rule_policy(rule, subset, port.number)
            # Endpoints not ready are in no load assignment, but still decide the cluster
            # (auto mTLS), so that it does not change when one becomes ready.
            endpoints = [e for e in members_of[subset] if e.ready]
            # Endpoints auto mTLS reaches with mTLS: tagged in the load assignment.
            tagged = auto_mtls_endpoints(mesh, service, port, policy).intersection(members_of[subset])
            cluster: dict = {"name": name}
            if service.resolution in INLINE_ENDPOINT_RESOLUTIONS:
                cluster["type"] = "STRICT_DNS" if service.resolution == "DNS" else "LOGICAL_DNS"
                cluster["dns_lookup_family"] = "V4_ONLY"
                if not members_of[subset]:
                    cluster["load_assignment"] = {"cluster_name": name,
                                                  "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address(service.hostname,
                                                                                                                          port.target_port or port.number)}}]}]}
                else:
                    cluster["load_assignment"] = load_assignment(name, endpoints, port, proxy.locality, policy, tagged,
                                                                 topology_labels(proxy.label_map, proxy.locality))
            # A gateway never forwards to the original destination (that would be itself):
            # Istio gives it an EDS cluster instead.
            elif service.resolution == "NONE" and not service.endpoints and not gateway:
                cluster["type"] = "ORIGINAL_DST"
                cluster["lb_policy"] = "CLUSTER_PROVIDED"
            else:
                cluster["type"] = "EDS"
                cluster["eds_cluster_config"] = {"eds_config": ADS, "service_name": name}
                eds.append(_EdsCluster(name, endpoints, port, policy, tagged))
            apply_policy(cluster, policy, port, service.hostname, mesh.settings.system_ca_certificates)
            apply_mesh_tls(cluster, mesh, service, port, subset, policy, tagged)
            clusters.append(cluster)
    return _ServicePlan(clusters, eds)


def static_cluster(name: str, address: str, port: int, http2: bool = False) -> dict:
    """A cluster with one fixed endpoint: the local app behind an inbound listener, the admin port."""
    cluster = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": DEFAULT_CONNECT_TIMEOUT,
        "lb_policy": "ROUND_ROBIN",
        "circuit_breakers": _circuit_breakers({}),
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address(address, port)}}]}]},
    }
    if http2:
        http2 = typed(HTTP_PROTOCOL_OPTIONS, explicit_http_config={"http2_protocol_options": {}})
        cluster["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": http2}
    return cluster
