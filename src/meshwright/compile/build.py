"""compile_proxy: the Envoy resources of one proxy, from the mesh. A pure function."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass, field

from meshwright.compile import capture, gateway, sidecar
from meshwright.compile.clusters import service_clusters
from meshwright.compile.envoyfilter import Patchable, apply_envoy_filters
from meshwright.compile.proxy import Proxy
from meshwright.compile.scope import services_in_scope
from meshwright.compile.telemetry import ProxyTelemetry, apply_telemetry, effective_telemetry
from meshwright.mesh import Mesh


@dataclass
class ProxyConfig:
    """Envoy resources of one proxy, each list sorted by name."""

    proxy: Proxy
    listeners: list[dict] = field(default_factory=list)
    routes: list[dict] = field(default_factory=list)
    clusters: list[dict] = field(default_factory=list)
    endpoints: list[dict] = field(default_factory=list)
    telemetry: ProxyTelemetry = field(default_factory=ProxyTelemetry)  # also read by the bootstrap


@contextmanager
def cyclic_collector_paused():
    """Compiling builds trees of dicts and lists, which hold no reference cycles, so the
    cyclic garbage collector finds nothing in them; but each of its full passes walks every
    object alive (the mesh and the output so far), and in a large mesh those passes cost
    more than the compile. Reference counting frees memory as usual meanwhile."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def compile_proxy(mesh: Mesh, proxy: Proxy) -> ProxyConfig:
    """The Envoy resources of one proxy: the same mesh and proxy give the same output."""
    with cyclic_collector_paused():
        return _compile_proxy(mesh, proxy)


def _compile_proxy(mesh: Mesh, proxy: Proxy) -> ProxyConfig:
    resources = Patchable()
    if proxy.kind == "gateway":
        listeners, routes = gateway.gateway_listeners(mesh, proxy)
        resources.add(gateway.GATEWAY, listeners, routes, [])
        services = mesh.registry.sorted()
        outbound_context = gateway.GATEWAY
    elif proxy.captures:
        resources.add(sidecar.INBOUND, *capture.inbound(mesh, proxy))
        resources.add(sidecar.OUTBOUND, *capture.outbound(mesh, proxy))
        services = services_in_scope(mesh, proxy)
        outbound_context = sidecar.OUTBOUND
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
    telemetry = effective_telemetry(mesh, proxy)
    apply_telemetry(mesh, proxy, telemetry, resources.items)  # before EnvoyFilters, which may patch it
    apply_envoy_filters(mesh, proxy, resources)
    return ProxyConfig(
        proxy=proxy,
        listeners=sorted(resources.listeners(), key=lambda r: r["name"]),
        routes=sorted(resources.routes(), key=lambda r: r["name"]),
        clusters=sorted(resources.clusters(), key=lambda r: r["name"]),
        endpoints=sorted(endpoints, key=lambda r: r["cluster_name"]),
        telemetry=telemetry,
    )
