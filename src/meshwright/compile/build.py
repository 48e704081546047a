"""compile_proxy: the Envoy resources of one proxy, from the mesh. A pure function.

Proxies of one class (compile/proxy_class.py) share one compiled config, built once per
mesh, stat names included (their own labels are the bootstrap's fixed tags, stat_tags; only
tagOverrides of those labels put them on top of the class's, proxy by proxy), and a proxy
that EnvoyFilters patch has its own copy."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from meshwright.collector import cyclic_collector_paused
from meshwright.compile import capture, gateway, sidecar
from meshwright.compile.authorization import policies_for
from meshwright.compile.clusters import service_clusters
from meshwright.compile.ext_authz import ext_authz_services
from meshwright.compile.envoyfilter import Patchable, apply_envoy_filters
from meshwright.compile.proxy import Proxy
from meshwright.compile.proxy_class import class_key
from meshwright.compile.request_authentication import jwks_clusters
from meshwright.compile.scope import services_in_scope
from meshwright.compile.telemetry import (
    ProxyTelemetry, apply_telemetry, effective_telemetry, own_stat_tags, with_class_stat_names, with_stat_names,
)
from meshwright.mesh import Mesh
from meshwright.registry.model import Service


@dataclass
class ProxyConfig:
    """Envoy resources of one proxy, each list sorted by name."""

    proxy: Proxy
    listeners: list[dict] = field(default_factory=list)
    routes: list[dict] = field(default_factory=list)
    clusters: list[dict] = field(default_factory=list)
    endpoints: list[dict] = field(default_factory=list)
    telemetry: ProxyTelemetry = field(default_factory=ProxyTelemetry)  # also read by the bootstrap
    bootstrap_patches: tuple[dict, ...] = ()  # EnvoyFilter BOOTSTRAP values to merge into it, in order
    stat_tags: tuple[tuple[str, str], ...] = ()  # the proxy's own metric labels: fixed tags of its bootstrap


@dataclass(frozen=True)
class ClassConfig:
    """What every proxy of one class shares (compile/proxy_class.py), each list sorted by
    name. Other proxies hold the same objects: never changed once built."""

    resources: Patchable  # every listener, route and cluster with its EnvoyFilter patch context
    listeners: list[dict]
    routes: list[dict]
    clusters: list[dict]
    endpoints: list[dict]
    telemetry: ProxyTelemetry


def class_config(mesh: Mesh, proxy: Proxy, key: tuple | None) -> ClassConfig:
    """The config of the proxy's class (key: proxy_class.class_key), compiled once per mesh
    and class; a proxy without a class gets its own."""
    if key is None:
        return _compile_class(mesh, proxy)
    return mesh.memo(("proxy-class", key), lambda: _compile_class(mesh, proxy))


def compile_proxy(mesh: Mesh, proxy: Proxy) -> ProxyConfig:
    """The Envoy resources of one proxy: the same mesh and proxy give the same output."""
    with cyclic_collector_paused():
        key = class_key(mesh, proxy)
        shared = class_config(mesh, proxy, key)
        stat_tags = own_stat_tags(mesh, proxy, shared.telemetry)
        if key is not None:
            return ProxyConfig(proxy, shared.listeners, shared.routes, with_stat_names(mesh, proxy, shared.telemetry, shared.clusters),
                               shared.endpoints, shared.telemetry, stat_tags=stat_tags)
        # EnvoyFilters patch resources in place, after the stat names: on this proxy's own copy.
        items = [(context, kind, with_stat_names(mesh, proxy, shared.telemetry, [resource])[0] if kind == "cluster" else resource)
                 for context, kind, resource in shared.resources.items]
        resources = Patchable(copy.deepcopy(items))
        bootstrap_patches = apply_envoy_filters(mesh, proxy, resources)
        return ProxyConfig(proxy, _by_name(resources.listeners()), _by_name(resources.routes()), _by_name(resources.clusters()),
                           shared.endpoints, shared.telemetry, bootstrap_patches, stat_tags)


def shared_config(mesh: Mesh, proxy: Proxy) -> ProxyConfig:
    """The proxy's config but its stat names: for a proxy of a class, what every proxy of the
    class has (the same objects); for a proxy without one, compile_proxy's."""
    with cyclic_collector_paused():
        key = class_key(mesh, proxy)
        if key is None:
            return compile_proxy(mesh, proxy)
        shared = class_config(mesh, proxy, key)
        return ProxyConfig(proxy, shared.listeners, shared.routes, shared.clusters, shared.endpoints, shared.telemetry,
                           stat_tags=own_stat_tags(mesh, proxy, shared.telemetry))


def _with_class_stat_names(mesh: Mesh, telemetry: ProxyTelemetry, items: list[tuple[str, str, dict]]) -> list[tuple[str, str, dict]]:
    """Patchable items with the clusters' class stat names (telemetry.with_class_stat_names)."""
    clusters = iter(with_class_stat_names(mesh, telemetry, [resource for dummy, kind, resource in items if kind == "cluster"]))
    return [(context, kind, next(clusters) if kind == "cluster" else resource) for context, kind, resource in items]


def _by_name(resources: list[dict]) -> list[dict]:
    return sorted(resources, key=lambda r: r["name"])


def proxy_service_clusters(mesh: Mesh, proxy: Proxy, service: Service) -> tuple[list[dict], list[dict]]:
    """A service's clusters and load assignments on a proxy: its outbound clusters and, on a
    gateway whose AUTO_PASSTHROUGH servers cover it, their SNI-DNAT copies."""
    clusters, assignments = service_clusters(mesh, proxy, service)
    if proxy.kind != "gateway":
        return clusters, assignments
    sni_clusters, sni_assignments = gateway.sni_dnat_clusters(mesh, proxy, service, clusters, assignments)
    return (clusters + sni_clusters, assignments + sni_assignments) if sni_clusters else (clusters, assignments)


def _compile_class(mesh: Mesh, proxy: Proxy) -> ClassConfig:
    """Everything of the proxy's config that its class shares: all but EnvoyFilter patches
    (and the proxy's own labels in stat names, where tagOverrides rewrite them)."""
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
    # The external authorizers the proxy's CUSTOM policies call need their clusters too.
    scoped = {service.hostname for service in services}
    services = services + [s for s in ext_authz_services(mesh, policies_for(mesh, proxy.namespace, proxy.labels)) if s.hostname not in scoped]
    for service in services:
        clusters, assignments = proxy_service_clusters(mesh, proxy, service)
        resources.add(outbound_context, [], [], clusters)
        endpoints.extend(assignments)
    # Where Envoy fetches the http(s) JWKS of the RequestAuthentications that apply to the proxy.
    resources.add(outbound_context, [], [], jwks_clusters(mesh, proxy.namespace, proxy.labels))
    telemetry = effective_telemetry(mesh, proxy)
    apply_telemetry(proxy, telemetry, resources.items)  # before EnvoyFilters, which may patch it
    resources.items = _with_class_stat_names(mesh, telemetry, resources.items)
    return ClassConfig(
        resources=resources,
        listeners=_by_name(resources.listeners()),
        routes=_by_name(resources.routes()),
        clusters=_by_name(resources.clusters()),
        endpoints=sorted(endpoints, key=lambda r: r["cluster_name"]),
        telemetry=telemetry,
    )
