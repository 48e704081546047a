"""Endpoints of a cluster -> an Envoy ClusterLoadAssignment, grouped and ordered by locality."""

from __future__ import annotations

from meshwright.compile.envoy_values import locality, socket_address
from meshwright.compile.mtls import tls_mode_metadata
from meshwright.registry.model import Endpoint, ServicePort


def _proximity(proxy_locality: str, endpoint_locality: str) -> int:
    """0: same region/zone/subzone ... 3: other region (Istio's failover priorities)."""
    mine, theirs = proxy_locality.split("/"), endpoint_locality.split("/")
    shared = 0
    for a, b in zip(mine, theirs):
        if a != b:
            break
        shared += 1
    return 3 - min(shared, 3)


def _pattern_matches(pattern: str, text: str) -> bool:
    """Locality patterns: "region/zone/*", "region/*", "*"."""
    parts, values = pattern.split("/"), text.split("/")
    for index, part in enumerate(parts):
        if part == "*":
            return True
        if index >= len(values) or values[index] != part:
            return False
    return len(parts) == len(values) or parts[-1] == "*"


def _locality_rank(proxy_locality: str, endpoint_locality: str, failover: dict[str, str]) -> float:
    """Proximity to the proxy, a 'failover' rule moving the region it names up (before other regions)."""
    rank = _proximity(proxy_locality, endpoint_locality)
    if rank == 3 and failover.get(proxy_locality.split("/")[0]) == endpoint_locality.split("/")[0]:
        return 2.5
    return rank


def _failover_rules(settings: dict) -> dict[str, str]:
    return {rule["from"]: rule["to"] for rule in settings.get("failover") or []}


def _ranks(keys: list) -> list[int]:
    """Envoy's priorities run from 0 without gaps: each key's place among the distinct keys."""
    ordered = sorted(set(keys))
    return [ordered.index(key) for key in keys]


# The labels Istio gives every workload from its locality (AugmentLabels), so that
# failoverPriority can name them beside the workloads' own labels.
LOCALITY_LABELS = ("topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone")


def topology_labels(labels: dict[str, str], locality_name: str) -> dict[str, str]:
    """labels with the locality's region, zone and subzone labels (the locality wins, as in Istio)."""
    parts = locality_name.split("/") if locality_name else []
    return {**labels, **{key: value for key, value in zip(LOCALITY_LABELS, parts) if value}}


def _label_rank(proxy_labels: dict[str, str], endpoint: Endpoint, priority_labels: list[str]) -> int:
    """Istio's failoverPriority: 0 for an endpoint that agrees with the proxy on every label;
    else N - i, where label i is the first they differ on (a label counts only while the ones
    before it agree). "key=value" compares the endpoint with that value, not the proxy's."""
    labels = topology_labels(dict(endpoint.labels), endpoint.locality)
    for index, entry in enumerate(priority_labels):
        key, separator, value = entry.partition("=")
        wanted = value if separator else proxy_labels.get(key, "")
        if labels.get(key, "") != wanted:
            return len(priority_labels) - index
    return 0


def _priority_groups(parts: list[tuple[str, list[Endpoint]]], proxy_locality: str, proxy_labels: dict[str, str],
                     settings: dict) -> list[tuple[str, list[Endpoint], int]]:
    """(locality, endpoints, priority) groups, as Istio's applyFailoverPriorities and
    applyLocalityFailover make them: with failoverPriority, each locality's endpoints split by
    how far down the labels they agree with the proxy, then (when 'failover' is given too)
    ordered by locality within each of those; without it, by locality alone."""
    failover = _failover_rules(settings)
    priority_labels = settings.get("failoverPriority") or []
    by_labels = bool(priority_labels and proxy_labels)
    by_locality = bool(proxy_locality) and (not priority_labels or bool(failover))
    groups, keys = [], []
    for name, endpoints in parts:
        split: dict[int, list[Endpoint]] = {}
        for endpoint in endpoints:
            split.setdefault(_label_rank(proxy_labels, endpoint, priority_labels) if by_labels else 0, []).append(endpoint)
        locality_rank = _locality_rank(proxy_locality, name, failover) if by_locality else 0
        for label_rank in sorted(split):
            groups.append((name, split[label_rank]))
            keys.append((label_rank, locality_rank))
    return [(name, endpoints, rank) for (name, endpoints), rank in zip(groups, _ranks(keys))]


def _distribution(proxy_locality: str, locality_weights: dict[str, int], settings: dict) -> dict[str, int]:
    """Locality weights of the first distribute rule whose 'from' matches the proxy. A 'to'
    pattern's weight is shared among the localities it matches, in proportion to their own
    weight (the sum of their endpoints' weights), rounded up (Istio's applyLocalityWeights);
    a locality no pattern matches gets 0. Patterns are tried in sorted order."""
    for rule in settings.get("distribute") or []:
        if not _pattern_matches(rule["from"], proxy_locality):
            continue
        weights = {name: 0 for name in locality_weights}
        unmatched = sorted(locality_weights)
        for pattern, weight in sorted(rule["to"].items()):
            matched = [name for name in unmatched if _pattern_matches(pattern, name)]
            unmatched = [name for name in unmatched if name not in matched]
            total = sum(locality_weights[name] for name in matched)
            for name in matched:
                weights[name] = -(-locality_weights[name] * weight // total)  # integer ceiling
        return weights
    return {}


def _lb_endpoint(endpoint: Endpoint, port: ServicePort, mtls: bool) -> dict:
    out: dict = {"endpoint": {"address": socket_address(endpoint.address, endpoint.port_for(port))}, "load_balancing_weight": endpoint.weight}
    if mtls:
        out["metadata"] = tls_mode_metadata()
    return out


def load_assignment(cluster_name: str, endpoints: list[Endpoint], port: ServicePort, proxy_locality: str, policy: dict,
                    mtls: frozenset = frozenset(), proxy_labels: dict[str, str] | None = None) -> dict:
    """mtls: the endpoints that auto mTLS reaches with mTLS (their metadata says tlsMode istio).
    proxy_labels: the client proxy's labels with its locality's (topology_labels), which
    failoverPriority compares the endpoints' with."""
    by_locality: dict[str, list[Endpoint]] = {}
    for endpoint in endpoints:
        by_locality.setdefault(endpoint.locality, []).append(endpoint)
    names = sorted(by_locality)
    settings = (policy.get("loadBalancer") or {}).get("localityLbSetting") or {}
    enabled = settings.get("enabled", True)
    weights = _distribution(proxy_locality, {name: sum(e.weight for e in by_locality[name]) for name in names}, settings) if enabled and proxy_locality else {}
    # A locality the distribution sends nothing to is left out.
    parts = [(name, by_locality[name]) for name in names if not weights or weights[name]]
    # Failover needs outlier detection (else Envoy never leaves priority 0), as in Istio.
    if enabled and "outlierDetection" in policy and not settings.get("distribute"):
        prioritized = _priority_groups(parts, proxy_locality, proxy_labels or {}, settings)
    else:
        prioritized = [(name, group_endpoints, 0) for name, group_endpoints in parts]
    groups = []
    for name, group_endpoints, priority in prioritized:
        group: dict = {}
        if name:
            group["locality"] = locality(name)
        group["lb_endpoints"] = [
            _lb_endpoint(e, port, e in mtls) for e in sorted(group_endpoints, key=lambda e: (e.address, e.port_for(port)))
        ]
        if name in weights:
            group["load_balancing_weight"] = weights[name]
        if priority:
            group["priority"] = priority
        groups.append(group)
    return {"cluster_name": cluster_name, "endpoints": groups}
