"""A check of compiled output: a proxy that traces to a mesh service must have that
service's cluster (its Sidecar's egress hosts must import the collector)."""

from __future__ import annotations

from meshwright.compile.scope import sidecar_for
from meshwright.mesh import Mesh
from meshwright.problems import Problem


def collector_problems(mesh: Mesh, config) -> list[Problem]:
    """A proxy that traces to a mesh service must have that service's cluster: its Sidecar's
    egress hosts must import the collector."""
    tracings = [t for t in config.telemetry.tracings if not t.dedicated]
    if not tracings:  # most proxies: no set of their (maybe 30,000) cluster names to build
        return []
    clusters = {c["name"] for c in config.clusters}
    missing = [t for t in tracings if t.cluster not in clusters]
    if not missing:
        return []
    tracing = missing[0]
    proxy = config.proxy
    service = mesh.registry.get(tracing.provider.host)
    message = (
        f"proxy {proxy.id} reports spans to {service.hostname} (provider {tracing.provider.name!r}), "
        f"which it does not import"
    )
    sidecar = sidecar_for(mesh, proxy) if proxy.kind == "sidecar" else None
    if sidecar is not None and sidecar.spec.get("egress"):
        path = ("spec", "egress")
        return [Problem(sidecar.source.file, sidecar.line_of(path), sidecar.ref, path, f"{message}: add \"{service.namespace}/{service.hostname}\" to "
                                                                                       "these egress hosts")]
    source = mesh.find("WorkloadEntry", proxy.namespace, proxy.name) or mesh.find("Gateway", proxy.namespace, proxy.name)
    return [Problem(source.source.file, source.source.line, source.ref, (), message)]
