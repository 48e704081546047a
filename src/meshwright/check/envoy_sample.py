"""What `envoy --mode validate` needs to see of a proxy's config: one of each shape.

A proxy that sees 10,000 services has 30,000 clusters and 10,000 virtual hosts that differ
from each other only in the service's names and its endpoints' addresses. Envoy's verdict on
a cluster or a virtual host does not depend on which DNS label or IPv4 address stands where
(meshwright's own checks vouch for every name and address: validate/ and check/envoy_proto.py
parse every distinct resource), so Envoy is shown one of each shape and the verdict holds for
all of them. The shape of a resource made for a service is its JSON with the first two DNS
labels of the service's hostname (name and namespace) and every IPv4 literal replaced by a
placeholder.

What Envoy checks across resources stays whole: every listener, every route configuration
(with the virtual hosts of each shape), and every cluster a kept listener or virtual host
names, besides one cluster of each shape.
"""

from __future__ import annotations

import dataclasses
import json
import re

from meshwright.compile.build import ProxyConfig

# Where endpoints' addresses stand (a socket address's literal "address"; the literal prefix
# keeps the search fast).
_ADDRESS = re.compile(r'"address":"[0-9.:a-fA-F]*"')


@dataclasses.dataclass
class ShapeCache:
    """Shapes computed in one run, by object: proxies of many classes share cluster and
    virtual host objects (compile/clusters.py service_clusters), each is shaped once."""

    shapes: dict[int, str] = dataclasses.field(default_factory=dict)
    keep_alive: list = dataclasses.field(default_factory=list)  # ids stay unique while cached

    def shape(self, resource: dict | None, host: str | None) -> str:
        found = self.shapes.get(id(resource))
        if found is None:
            found = self.shapes[id(resource)] = resource_shape(resource, host)
            self.keep_alive.append(resource)
        return found


def resource_shape(resource, host: str | None) -> str:
    """The resource's JSON with its service's name and namespace and all IPv4 addresses
    replaced by placeholders (host None: only the addresses)."""
    text = _ADDRESS.sub('"address":"<ip>"', json.dumps(resource, sort_keys=True, separators=(",", ":")))
    for index, label in enumerate(_own_labels(host)):
        text = text.replace(label, f"<label{index}>")
    return text


def _own_labels(host: str | None) -> list[str]:
    if not host or host.startswith("*"):
        return []
    return [label for label in host.split(".")[:2] if label]


def _cluster_host(name: str) -> str | None:
    """The service hostname of an outbound cluster (`outbound|port|subset|host`)."""
    parts = name.split("|")
    return parts[3] if len(parts) == 4 and parts[0] == "outbound" else None


def _vhost_host(virtual_host: dict) -> str:
    return virtual_host["name"].rsplit(":", 1)[0]


def sampled_config(config: ProxyConfig, cache: ShapeCache | None = None) -> ProxyConfig:
    """The config with one virtual host of each shape per route configuration and one cluster
    of each shape, plus every cluster that what is kept names; the same verdict from Envoy."""
    cache = cache or ShapeCache()
    routes = [_sampled_route(route, cache) for route in config.routes]
    cluster_names = {cluster["name"] for cluster in config.clusters}
    named = _names_in([config.listeners, routes], cluster_names)
    endpoints = {assignment["cluster_name"]: assignment for assignment in config.endpoints}
    seen: set[tuple[str, str]] = set()
    clusters = []
    for cluster in config.clusters:
        host = _cluster_host(cluster["name"])
        shape = (cache.shape(cluster, host), cache.shape(endpoints.get(cluster["name"]), host))
        if cluster["name"] in named or shape not in seen:
            seen.add(shape)
            clusters.append(cluster)
    kept = {cluster["name"] for cluster in clusters}
    return dataclasses.replace(config, routes=routes, clusters=clusters,
                               endpoints=[assignment for assignment in config.endpoints if assignment["cluster_name"] in kept])


def _sampled_route(route: dict, cache: ShapeCache) -> dict:
    seen: set[str] = set()
    kept = []
    for virtual_host in route.get("virtual_hosts") or []:
        shape = cache.shape(virtual_host, _vhost_host(virtual_host))
        if shape not in seen:
            seen.add(shape)
            kept.append(virtual_host)
    return {**route, "virtual_hosts": kept} if "virtual_hosts" in route else route


def _names_in(value, names: set[str]) -> set[str]:
    """The strings of these names anywhere in the value (a cluster named by a route, a TCP
    proxy, an authorizer's gRPC service, a JWKS fetch, a collector)."""
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and item in names:
            found.add(item)
    return found
