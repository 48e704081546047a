# -*- coding: utf-8 -*-
"""meshwright.mesh.mesh_render: validate the mesh config and render every proxy, in the
controller's Ansible process (documentation: plugins/modules/mesh_render.py)."""

from __future__ import annotations

from ansible_collections.meshwright.mesh.plugins.plugin_utils.controller_action import ControllerAction, ControllerTask

try:
    from meshwright.collector import cyclic_collector_paused
    from meshwright.deliver.bundle import bundle_proxies, load_mesh, xds_bundle
    from meshwright.names import LABEL_HELP, is_label
except ImportError:
    pass  # ControllerAction names the missing package


def identity_plan(task: ControllerTask, bundles: dict) -> dict:
    """Host -> {proxy, site, spiffe_id}: what each host may be signed for (from the inventory and the mesh)."""
    sites = {str(host): site for host, site in (task.params["sites"] or {}).items()}
    plan = {}
    for host, proxy in sorted((task.params["hosts"] or {}).items()):
        host, proxy, site = str(host), str(proxy), sites.get(str(host)) or "default"
        if proxy not in bundles:
            task.fail(f"hosts.{host}: proxy {proxy!r} is not one of the rendered proxies (proxies)")
        if not is_label(site):
            task.fail(f"sites.{host}: site {site!r} must be {LABEL_HELP}")
        identity = bundles[proxy].identity
        plan[host] = dict(proxy=proxy, site=site, spiffe_id=identity["spiffe_id"] if identity else None)
    unknown = sorted(set(sites) - set(plan))
    if unknown:
        task.fail(f"sites names hosts that are not in hosts: {', '.join(unknown)}")
    return plan


def control_plane_address(task: ControllerTask, text: str) -> tuple[str, int]:
    """"HOST:PORT" (an IPv6 host in brackets) -> (host, port); fails the task otherwise."""
    host, dummy, port = str(text).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) <= 65535:
        task.fail(f"xds_servers: control plane address {text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def with_xds_delivery(task: ControllerTask, mesh, bundles: dict) -> dict:
    """The bundles of the proxies in xds replaced by their xDS bootstrap (to every instance of xds_servers)."""
    xds = sorted({str(proxy) for proxy in task.params["xds"] or []})
    unknown = [proxy for proxy in xds if proxy not in bundles]
    if unknown:
        task.fail(f"xds names proxies that are not in proxies: {', '.join(unknown)}")
    servers = [control_plane_address(task, address) for address in task.params["xds_servers"] or []]
    delivered = dict(bundles)
    for proxy in xds:
        delivered[proxy] = xds_bundle(mesh, bundles[proxy], servers, task.params["xds_delta"], task.params["format"])
    return delivered


class ActionModule(ControllerAction):
    WHAT = "to render the mesh on the controller"
    ARGUMENT_SPEC = dict(
        mesh=dict(type="list", elements="path", required=True),
        proxies=dict(type="dict", required=True),
        hosts=dict(type="dict"),
        sites=dict(type="dict"),
        format=dict(type="str", choices=["yaml", "json"], default="yaml"),
        xds=dict(type="list", elements="str"),
        xds_servers=dict(type="list", elements="str"),
        xds_delta=dict(type="bool", default=False),
    )

    def work(self, task, task_vars):
        config_dirs = {str(proxy): str(folder) for proxy, folder in task.params["proxies"].items()}
        # One pause for loading and rendering: each step's own pause would end in a pass of
        # the collector over everything built so far.
        with cyclic_collector_paused():
            mesh = load_mesh(task.params["mesh"])
            bundles = with_xds_delivery(task, mesh, bundle_proxies(mesh, config_dirs, task.params["format"]))
        proxies = {
            proxy: dict(kind=b.kind, digest=b.digest, files=b.files, validation_bootstrap=b.validation_bootstrap, ports=b.ports,
                        identity=b.identity, capture=b.capture)
            for proxy, b in bundles.items()
        }
        for warning in mesh.warnings:  # problems that do not stop the run (a principal in another trust domain)
            task.warn(str(warning))
        result = dict(changed=False, proxies=proxies, envoy_version=mesh.settings.envoy_version)
        if task.params["hosts"] is not None:
            result["identities"] = identity_plan(task, bundles)
        return result
