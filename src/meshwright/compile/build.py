"""compile_proxy: the Envoy resources of one proxy, from the mesh. A pure function."""

from __future__ import annotations

from dataclasses import dataclass, field

from meshwright.compile import gateway, sidecar
from meshwright.compile.clusters import service_clusters
from meshwright.compile.envoyfilter import Patchable, apply_envoy_filters
from meshwright.compile.proxy import Proxy
from meshwright.compile.scope import services_in_scope
from meshwright.model.mesh import Mesh


@dataclass
class ProxyConfig:
    """Envoy resources of one proxy, each list sorted by name."""

    proxy: Proxy
    listeners: list[dict] = field(default_factory=list)
    routes: list[dict] = field(default_factory=list)
    clusters: list[dict] = field(default_factory=list)
    endpoints: list[dict] = field(default_factory=list)


def compile_proxy(mesh: Mesh, proxy: Proxy) -> ProxyConfig:
    resources = Patchable()
    if proxy.kind == "gateway":
        listeners, routes = gateway.gateway_listeners(mesh, proxy)
        resources.add(gateway.GATEWAY, listeners, routes, [])
        services = mesh.registry.sorted()
        outbound_context = gateway.GATEWAY
    else:
        resources.add(sidecar.INBOUND, *sidecar.inbound(mesh, proxy))
        listeners, routes = sidecar.outbound(mesh, proxy)
        resources.add(sidecar.OUTBOUND, listeners, routes, [])
        services = services_in_scope(mesh, proxy)
        outbound_context = sidecar.OUTBOUND
    endpoints = []
    for service in services:
        clusters, assignments = service_clusters(mesh, proxy, service)
        resources.add(outbound_context, [], [], clusters)
        endpoints.extend(assignments)
    apply_envoy_filters(mesh, proxy, resources)
    return ProxyConfig(
        proxy=proxy,
        listeners=sorted(resources.listeners(), key=lambda r: r["name"]),
        routes=sorted(resources.routes(), key=lambda r: r["name"]),
        clusters=sorted(resources.clusters(), key=lambda r: r["name"]),
        endpoints=sorted(endpoints, key=lambda r: r["cluster_name"]),
    )
