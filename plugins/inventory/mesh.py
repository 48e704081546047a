# Copyright (c) meshwright contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: mesh
short_description: Hosts of a meshwright mesh, from its mesh config
description:
  - One host per proxy of the mesh config (the Istio API YAML that C(meshwright validate) reads), so that no
    inventory writes the hosts again. A WorkloadEntry is a sidecar's or a gateway's workload; a Gateway that selects
    no WorkloadEntry is a standalone gateway.
  - Every host gets C(mesh_proxy) (its proxy's C(name.namespace)), is in C(mesh_sidecars) or C(mesh_gateways) (both
    children of C(mesh), the groups the meshwright playbooks run on), and, with O(label_groups), in one group per
    label; with O(site_from), it gets C(mesh_site) and is in C(mesh_site_<site>).
  - C(ansible_host) is the WorkloadEntry's address; a standalone gateway has none in the mesh config, so its host
    name (or O(compose)) says how to reach it.
  - The group C(mesh) gets C(mesh_config_paths) (the mesh config read, as absolute paths) and O(connection_vars).
  - "The mesh config is loaded and checked by meshwright's own loader; a problem fails the inventory with
    C(FILE:LINE: Kind/namespace/name: field.path: message) for each."
  - The configuration file's name must end in C(meshwright.yml) or C(meshwright.yaml).
version_added: 0.1.0
author: meshwright maintainers (@meshwright)
requirements:
  - The meshwright Python package (the controller's Python must import it).
extends_documentation_fragment:
  - constructed
  - inventory_cache
options:
  plugin:
    description: Marks the file as a source for this plugin.
    required: true
    type: str
    choices: [meshwright.mesh.mesh, mesh]
  mesh:
    description:
      - Mesh config files or folders (every C(.yaml) and C(.yml) file in them), as C(meshwright validate) takes them.
      - Relative paths are relative to the folder of this configuration file.
    required: true
    type: list
    elements: str
  hostname:
    description:
      - C(name) names a host by its WorkloadEntry's (or Gateway's) name, as C(payment-1); two proxies of one name in
        different namespaces are an error then.
      - C(id) names it by its proxy id, as C(payment-1.default).
    type: str
    choices: [name, id]
    default: name
  site_from:
    description:
      - Where C(mesh_site) (the site whose intermediate CA signs the proxy) comes from.
      - C(locality) is the region of the WorkloadEntry's C(locality), C(label) the value of its label O(site_label)
        (for a standalone gateway, of its selector).
      - C(none) sets no C(mesh_site) (group_vars or O(compose) may set it; the playbooks' default is C(default)).
      - A site must be a DNS-1123 label.
    type: str
    choices: [none, locality, label]
    default: none
  site_label:
    description: The label whose value is the host's site, with O(site_from=label).
    type: str
  label_groups:
    description: Put each host in one group per label of its workload, C(mesh_label_<key>_<value>).
    type: bool
    default: true
  use_address:
    description: Set C(ansible_host) to the WorkloadEntry's address.
    type: bool
    default: true
  connection_vars:
    description:
      - Connection variables (names starting C(ansible_)) for every host, set on the group C(mesh), as
        C(ansible_connection), C(ansible_user), C(ansible_become).
    type: dict
    default: {}
  control_plane:
    description:
      - Hosts of the group C(mesh_control_plane) (host name to its variables), where the control_plane role runs
        C(meshwright serve) for proxies delivered by xds. They are not proxies, so not in C(mesh); they get
        O(connection_vars) too.
    type: dict
    default: {}
"""

EXAMPLES = r"""
---
# inventories/hybrid/meshwright.yml: the VMs of the mesh config in mesh/
plugin: meshwright.mesh.mesh
mesh: [mesh]
site_from: locality
connection_vars:
  ansible_connection: ssh
  ansible_user: deploy
  ansible_become: true
# one group per namespace as well
keyed_groups:
  - key: mesh_namespace
    prefix: namespace
compose:
  mesh_config_dir: "'/etc/meshwright/proxy'"

---
# The local demo, every proxy on this machine, hosts named as inventories/local names them
plugin: meshwright.mesh.mesh
mesh: [../../examples/seed/mesh]
use_address: false
connection_vars:
  ansible_connection: local
"""

import hashlib
import json
import os

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable

try:
    from meshwright.lifecycle.hosts import (KIND_GROUPS, PARENT_GROUP, HostsError, host_groups, host_variables, load_mesh_for_hosts,
                                            mesh_hosts, site_problem)
    from meshwright.model.load import YAML_SUFFIXES
except ImportError as error:
    MESHWRIGHT_IMPORT_ERROR = error
else:
    MESHWRIGHT_IMPORT_ERROR = None

ACCEPTED_NAMES = ("meshwright.mesh.mesh", "mesh")
CONFIG_SUFFIXES = ("meshwright.yml", "meshwright.yaml")
# Where the control plane runs (roles/control_plane); its hosts are not proxies, so not in PARENT_GROUP.
CONTROL_PLANE_GROUP = "mesh_control_plane"
# Variables this plugin owns: compose may not set them (the mesh config names each host's proxy).
OWN_VARIABLES = ("mesh_proxy",)


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "meshwright.mesh.mesh"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(CONFIG_SUFFIXES)

    def _read_config_data(self, path):
        # The same file works whether Ansible loads this plugin from the collection or, before it
        # is installed, from a folder in ANSIBLE_INVENTORY_PLUGINS (where its name is "mesh").
        self._redirected_names = list(dict.fromkeys([*(getattr(self, "_redirected_names", None) or []), *ACCEPTED_NAMES]))
        return super()._read_config_data(path)

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        if MESHWRIGHT_IMPORT_ERROR is not None:
            raise AnsibleParserError(f"{path}: the meshwright.mesh.mesh inventory needs the meshwright Python package in the "
                                     f"Python that runs Ansible ({MESHWRIGHT_IMPORT_ERROR})")
        self._read_config_data(path)
        self._check_options(path)
        folder = os.path.dirname(os.path.abspath(path))
        mesh_paths = [os.path.abspath(os.path.join(folder, os.path.expanduser(p))) for p in self.get_option("mesh")]
        hosts = self._cached_hosts(path, mesh_paths, cache)
        self._add_hosts(hosts, mesh_paths)

    def _check_options(self, path):
        if self.get_option("site_from") == "label" and not self.get_option("site_label"):
            raise AnsibleParserError(f"{path}: site_from: label needs site_label, the label whose value is the site")
        owned = sorted(set(self.get_option("compose") or {}) & set(OWN_VARIABLES))
        if owned:
            raise AnsibleParserError(f"{path}: compose sets {', '.join(owned)}, which the mesh config gives each host (its "
                                     "proxy's name.namespace): remove it from compose")
        bad = sorted(str(name) for name in self.get_option("connection_vars") if not str(name).startswith("ansible_"))
        if bad:
            raise AnsibleParserError(f"{path}: connection_vars: {', '.join(bad)} are not connection variables (their names "
                                     "start with ansible_); set other variables in group_vars")

    def _cached_hosts(self, path, mesh_paths, cache):
        """The hosts from the cache when it holds them for these options and these exact mesh files
        (a fingerprint of their names, sizes and modification times); loaded otherwise."""
        fingerprint = self._fingerprint(mesh_paths)
        key = self.get_cache_key(path)
        if self.get_option("cache") and cache:
            try:
                cached = self._cache[key]
            except KeyError:
                cached = None
            if isinstance(cached, dict) and cached.get("fingerprint") == fingerprint:
                return cached["hosts"]
        hosts = self._load_hosts(mesh_paths)
        if self.get_option("cache"):
            self._cache[key] = {"fingerprint": fingerprint, "hosts": hosts}
        return hosts

    def _load_hosts(self, mesh_paths):
        """[name, groups, variables] of every host (plain data: what the cache keeps)."""
        try:
            mesh = load_mesh_for_hosts(mesh_paths)
            found = mesh_hosts(mesh, self.get_option("hostname"), self.get_option("site_from"), self.get_option("site_label") or "")
        except HostsError as error:
            raise AnsibleParserError(str(error)) from None
        use_address = self.get_option("use_address")
        hosts = []
        for host in found:
            variables = host_variables(host)
            if use_address and host.address:
                variables["ansible_host"] = host.address
            hosts.append([host.name, host_groups(host, self.get_option("label_groups")), variables])
        return hosts

    def _fingerprint(self, mesh_paths):
        options = [self.get_option(name) for name in ("hostname", "site_from", "site_label", "label_groups", "use_address")]
        files = []
        for path in mesh_paths:
            for name in _yaml_files(path):
                info = os.stat(name)
                files.append([name, info.st_size, info.st_mtime_ns])
        return hashlib.sha256(json.dumps([options, files]).encode()).hexdigest()

    def _add_hosts(self, hosts, mesh_paths):
        inventory = self.inventory
        inventory.add_group(PARENT_GROUP)
        for group in KIND_GROUPS.values():
            inventory.add_child(PARENT_GROUP, inventory.add_group(group))
        inventory.set_variable(PARENT_GROUP, "mesh_config_paths", mesh_paths)
        for name, value in self.get_option("connection_vars").items():
            inventory.set_variable(PARENT_GROUP, str(name), value)
        constructed = any(self.get_option(option) for option in ("compose", "groups", "keyed_groups"))
        safe_names = {}
        for name, groups, variables in hosts:
            inventory.add_host(name)
            for group in groups:
                if group not in safe_names:
                    safe_names[group] = inventory.add_group(self._sanitize_group_name(group))
                inventory.add_child(safe_names[group], name)
            for variable, value in variables.items():
                inventory.set_variable(name, variable, value)
            if constructed:  # a host's variables with its magic ones are built for it: only when asked
                self._construct(name)
        self._add_control_plane()

    def _add_control_plane(self):
        """The control_plane option's hosts, in mesh_control_plane (outside mesh: they run no proxy)."""
        hosts = self.get_option("control_plane") or {}
        if not hosts:
            return
        inventory = self.inventory
        inventory.add_group(CONTROL_PLANE_GROUP)
        for name, variables in hosts.items():
            inventory.add_host(str(name), group=CONTROL_PLANE_GROUP)
            for variable, value in {**self.get_option("connection_vars"), **(variables or {})}.items():
                inventory.set_variable(str(name), str(variable), value)

    def _construct(self, name):
        """compose, groups and keyed_groups (Constructable); a composed mesh_site must be a site."""
        strict = self.get_option("strict")
        variables = self.inventory.get_host(name).get_vars()  # with inventory_hostname
        self._set_composite_vars(self.get_option("compose"), variables, name, strict=strict)
        self._add_host_to_composed_groups(self.get_option("groups"), variables, name, strict=strict)
        self._add_host_to_keyed_groups(self.get_option("keyed_groups"), variables, name, strict=strict)
        site = self.inventory.get_host(name).vars.get("mesh_site")
        if site is not None and site_problem(site):
            raise AnsibleParserError(f"host {name}: compose sets mesh_site to {site_problem(site)}")


def _yaml_files(path):
    """The files the mesh loader reads under path (for the cache's fingerprint)."""
    if not os.path.isdir(path):
        return [path] if os.path.exists(path) else []
    found = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        found += [os.path.join(root, name) for name in sorted(files) if name.endswith(YAML_SUFFIXES)]
    return found
