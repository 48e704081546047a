"""The hosts a mesh runs on, for an inventory: one per proxy (compile/proxy.py), named, given
a site and checked, so that no inventory writes again a host the mesh config already names.

Pure Python: the Ansible inventory plugins (plugins/inventory/mesh.py and terraform.py) turn
these into hosts, groups and variables.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshwright.check.pipeline import validate_resources
from meshwright.compile.proxy import Proxy, list_proxies
from meshwright.mesh import Mesh
from meshwright.model.load import load_paths
from meshwright.model.resource import Resource
from meshwright.names import LABEL_HELP, PROXY_ID_HELP, is_label, is_proxy_id
from meshwright.problems import Problem, Problems

# How a host is named in the inventory: its proxy's resource name ("payment-1", as
# inventories/local names them) or its proxy id ("payment-1.default", unique across namespaces).
HOSTNAME_SOURCES = ("name", "id")
# Where a host's site (the intermediate CA that signs its proxy: mesh_site) comes from.
SITE_SOURCES = ("none", "locality", "label")
SITE_HELP = f"a site must be {LABEL_HELP}: it names the intermediate CA that signs the proxy"


class HostsError(Exception):
    """The mesh config does not give a sound set of hosts; problems say where."""

    def __init__(self, message: str, problems: list[Problem] | None = None):
        self.problems = problems or []
        super().__init__("\n".join([message] + [str(problem) for problem in self.problems]))


@dataclass(frozen=True)
class MeshHost:
    name: str  # the inventory hostname
    proxy: str  # the proxy id, name.namespace
    kind: str  # "sidecar" or "gateway"
    namespace: str
    # The WorkloadEntry's address; "" for a gateway no WorkloadEntry serves (the mesh config
    # gives it no address: the inventory's connection settings reach it).
    address: str
    labels: tuple[tuple[str, str], ...]
    service_account: str
    locality: str
    site: str  # "" when the site source gives none
    source: str  # "FILE:LINE" of the resource that makes the proxy


def load_mesh_for_hosts(paths: list[str]) -> Mesh:
    """The mesh, when every resource is sound (shapes, references, semantics: what names a
    proxy and its address); HostsError listing every problem otherwise. Compiling the
    proxies is left to the render step, which checks the rest."""
    mesh, problems = validate_resources(load_paths(paths))
    if mesh is None:
        raise HostsError(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in the mesh config", problems)
    return mesh


def mesh_hosts(mesh: Mesh, hostname: str = "name", site_from: str = "none", site_label: str = "") -> list[MeshHost]:
    """One host per proxy of the mesh, in proxy order; HostsError when two get one name or a
    site is not a DNS-1123 label."""
    problems = Problems()
    hosts, taken = [], {}
    for proxy in list_proxies(mesh):
        resource = _resource_of(mesh, proxy)
        name = proxy.name if hostname == "name" else proxy.id
        if name in taken:
            problems.add(resource, ("metadata", "name"), f"host {name!r} is already the host of {taken[name]}: "
                         "set the inventory's hostname option to 'id' to name hosts name.namespace")
            continue
        taken[name] = f"{resource.ref} ({resource.source.file}:{resource.source.line})"
        site = _site(resource, proxy, site_from, site_label, problems)
        hosts.append(MeshHost(name, proxy.id, proxy.kind, proxy.namespace, "" if proxy.address == "0.0.0.0" else proxy.address,
                              proxy.labels, proxy.service_account, proxy.locality, site,
                              f"{resource.source.file}:{resource.source.line}"))
    if problems:
        raise HostsError("the mesh config does not name its hosts soundly", problems.sorted())
    return hosts


# The groups the playbooks run on: every host is in one of these, both children of mesh.
PARENT_GROUP = "mesh"
KIND_GROUPS = {"gateway": "mesh_gateways", "sidecar": "mesh_sidecars"}


def host_variables(host: MeshHost) -> dict:
    """The inventory variables of a host: its proxy and what the mesh config says of it."""
    variables = {
        "mesh_proxy": host.proxy,
        "mesh_proxy_kind": host.kind,
        "mesh_namespace": host.namespace,
        "mesh_labels": dict(host.labels),
        "mesh_service_account": host.service_account,
        "mesh_address": host.address,
    }
    if host.site:
        variables["mesh_site"] = host.site
    return variables


def host_groups(host: MeshHost, label_groups: bool) -> list[str]:
    """The groups of a host (before an inventory makes them safe names): its kind's (or mesh's,
    when the kind is not known), its site's, and with label_groups one per label."""
    groups = [KIND_GROUPS.get(host.kind, PARENT_GROUP)]
    if host.site:
        groups.append(f"mesh_site_{host.site}")
    if label_groups:
        groups += [f"mesh_label_{key}_{value}" for key, value in host.labels]
    return groups


def _resource_of(mesh: Mesh, proxy: Proxy) -> Resource:
    """The WorkloadEntry a proxy runs beside, or the Gateway that is its own proxy."""
    return mesh.find("WorkloadEntry", proxy.namespace, proxy.name) or mesh.find("Gateway", proxy.namespace, proxy.name)


def _site(resource: Resource, proxy: Proxy, site_from: str, site_label: str, problems: Problems) -> str:
    """The host's site from the source asked for ("" when it gives none); a site that is not
    a DNS-1123 label is a problem at the field it came from."""
    if site_from == "none":
        return ""
    if site_from == "label":
        labels_path = ("spec", "labels") if resource.kind == "WorkloadEntry" else ("spec", "selector")
        site, path = proxy.label_map.get(site_label, ""), labels_path + (site_label,)
    else:
        site, path = proxy.locality.split("/")[0], ("spec", "locality")
    if site and not is_label(site):
        problems.add(resource, path, f"site {site!r} (from the {site_from}) is not usable: {SITE_HELP}")
    return site


def proxy_id_problem(text: object) -> str | None:
    """Why a name given as a proxy id (a Terraform tag, an inventory variable) cannot be one."""
    if is_proxy_id(text):
        return None
    return f"{text!r} is not {PROXY_ID_HELP}"


def site_problem(text: object) -> str | None:
    return None if is_label(text) else f"{text!r} is not usable: {SITE_HELP}"
