"""Endpoints of a cluster -> an Envoy ClusterLoadAssignment, grouped and ordered by locality."""

from __future__ import annotations

from meshwright.compile.envoy_values import locality, socket_address
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


def _distribution(proxy_locality: str, localities: list[str], settings: dict) -> dict[str, int]:
    for rule in settings.get("distribute") or []:
        if _pattern_matches(rule["from"], proxy_locality):
            weights = {}
            for name in localities:
                for pattern, weight in sorted(rule["to"].items()):
                    if _pattern_matches(pattern, name):
                        weights[name] = weight
                        break
                else:
                    weights[name] = 0
            return weights
    return {}


def load_assignment(cluster_name: str, endpoints: list[Endpoint], port: ServicePort, proxy_locality: str, policy: dict) -> dict:
    by_locality: dict[str, list[Endpoint]] = {}
    for endpoint in endpoints:
        by_locality.setdefault(endpoint.locality, []).append(endpoint)
    names = sorted(by_locality)
    settings = (policy.get("loadBalancer") or {}).get("localityLbSetting") or {}
    enabled = settings.get("enabled", True) and bool(proxy_locality)
    priorities = _priorities(proxy_locality, names, settings) if enabled and "outlierDetection" in policy and not settings.get("distribute") else {}
    weights = _distribution(proxy_locality, names, settings) if enabled else {}
    groups = []
    for name in names:
        if weights and not weights[name]:
            continue  # a locality the distribution sends nothing to
        group: dict = {}
        if name:
            group["locality"] = locality(name)
        group["lb_endpoints"] = [
            {"endpoint": {"address": socket_address(e.address, e.port_for(port))}, "load_balancing_weight": e.weight}
            for e in sorted(by_locality[name], key=lambda e: (e.address, e.port_for(port)))
        ]
        if name in weights:
            group["load_balancing_weight"] = weights[name]
        if priorities.get(name):
            group["priority"] = priorities[name]
        groups.append(group)
    return {"cluster_name": cluster_name, "endpoints": groups}
