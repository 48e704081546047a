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


def _priorities(proxy_locality: str, localities: list[str], settings: dict) -> dict[str, int]:
    """Failover priorities by proximity to the proxy, 'failover' rules moving a region up."""
    raw = {}
    failover = {rule["from"]: rule["to"] for rule in settings.get("failover") or []}
    region = proxy_locality.split("/")[0]
    for name in localities:
        rank = _proximity(proxy_locality, name)
        if rank == 3 and failover.get(region) == name.split("/")[0]:
            rank = 2.5
        raw[name] = rank
    ordered = sorted(set(raw.values()))
    return {name: ordered.index(rank) for name, rank in raw.items()}


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
                    mtls: frozenset = frozenset()) -> dict:
    """mtls: the endpoints that auto mTLS reaches with mTLS (their metadata says tlsMode istio)."""
    by_locality: dict[str, list[Endpoint]] = {}
    for endpoint in endpoints:
        by_locality.setdefault(endpoint.locality, []).append(endpoint)
    names = sorted(by_locality)
    settings = (policy.get("loadBalancer") or {}).get("localityLbSetting") or {}
    enabled = settings.get("enabled", True) and bool(proxy_locality)
    priorities = _priorities(proxy_locality, names, settings) if enabled and "outlierDetection" in policy and not settings.get("distribute") else {}
    weights = _distribution(proxy_locality, {name: sum(e.weight for e in by_locality[name]) for name in names}, settings) if enabled else {}
    groups = []
    for name in names:
        if weights and not weights[name]:
            continue  # a locality the distribution sends nothing to
        group: dict = {}
        if name:
            group["locality"] = locality(name)
        group["lb_endpoints"] = [
            _lb_endpoint(e, port, e in mtls) for e in sorted(by_locality[name], key=lambda e: (e.address, e.port_for(port)))
        ]
        if name in weights:
            group["load_balancing_weight"] = weights[name]
        if priorities.get(name):
            group["priority"] = priorities[name]
        groups.append(group)
    return {"cluster_name": cluster_name, "endpoints": groups}
