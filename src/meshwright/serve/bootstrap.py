"""A proxy's bootstrap for ADS from `meshwright serve` (compile/xds_bootstrap.py), as text."""

from __future__ import annotations

from meshwright.compile.build import compile_proxy
from meshwright.compile.proxy import find_proxy
from meshwright.compile.xds_bootstrap import XdsServer, compile_xds_bootstrap
from meshwright.deliver.files import serialize
from meshwright.mesh import Mesh


def xds_bootstrap(mesh: Mesh, proxy_id: str, server: XdsServer) -> dict:
    """UnknownProxy when the mesh has no such proxy."""
    proxy = find_proxy(mesh, proxy_id)
    config = compile_proxy(mesh, proxy)
    return compile_xds_bootstrap(proxy, mesh.settings, config.telemetry, server, config.stat_tags)


def xds_bootstrap_text(mesh: Mesh, proxy_id: str, server: XdsServer, fmt: str = "yaml") -> str:
    return serialize(xds_bootstrap(mesh, proxy_id, server), fmt)
