# Copyright (c) meshwright contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: terraform
short_description: Hosts of a meshwright mesh, from the Terraform state that made their machines
description:
  - Reads Terraform state, a state file (format version 4, Terraform 0.12 and later) or the output of
    C(terraform show -json) saved to a file, or runs C(terraform show -json) in a Terraform working directory.
  - >-
    A machine becomes a mesh host in one of two ways. By tag, an C(aws_instance) with the tag O(proxy_tag) (in its
    C(tags_all), so provider default tags count), a C(google_compute_instance) with that key in its C(metadata) (GCP
    label values cannot hold the C(.) of a proxy id) or its C(labels). By output, the Terraform output O(proxies_output),
    a map of proxy id to the host's address, or to an object with C(address) or C(instance) (a resource instance
    address such as C(module.vms.libvirt_domain.node["order-1"]), whose address is read from the state), and
    optionally C(site).
  - Every proxy id (C(mesh_proxy)) and site (C(mesh_site), from the tag O(site_tag) or the output's C(site)) is
    checked by the rules of meshwright's core; a bad one fails the inventory and names the instance and tag.
  - The address (C(ansible_host)) is an C(aws_instance)'s C(private_ip) or C(public_ip), a
    C(google_compute_instance)'s C(network_interface[0].network_ip) or C(network_interface[0].access_config[0].nat_ip),
    a C(libvirt_domain)'s C(network_interface[0].addresses[0]) (O(address) chooses which).
  - With O(mesh), every proxy must be one of the mesh config's, and hosts get what the C(meshwright.mesh.mesh)
    inventory gives them (groups C(mesh_sidecars) and C(mesh_gateways), labels); without it they are in the group
    C(mesh) only.
  - The configuration file's name must end in C(terraform.yml) or C(terraform.yaml).
version_added: 0.1.0
author: meshwright maintainers (@meshwright)
requirements:
  - The meshwright Python package (the controller's Python must import it).
  - The C(terraform) binary, only with O(project_path).
extends_documentation_fragment:
  - constructed
options:
  plugin:
    description: Marks the file as a source for this plugin.
    required: true
    type: str
    choices: [meshwright.mesh.terraform, terraform]
  state:
    description:
      - A Terraform state file (version 4) or a file holding C(terraform show -json) output.
      - Relative paths are relative to the folder of this configuration file. Exactly one of O(state) and
        O(project_path) is given.
    type: str
  project_path:
    description:
      - A Terraform working directory (initialised); the plugin runs O(binary_path) C(show -json) there.
      - Relative paths are relative to the folder of this configuration file.
    type: str
  binary_path:
    description:
      - The Terraform binary to run with O(project_path). A bare name is looked up in E(PATH); a path with a C(/)
        is relative to the folder of this configuration file.
    type: str
    default: terraform
  timeout:
    description: Seconds C(terraform show -json) may take.
    type: int
    default: 60
  proxy_tag:
    description: The tag (AWS), metadata key or label (GCP) whose value is the machine's proxy id, C(name.namespace).
    type: str
    default: mesh_proxy
  site_tag:
    description: The tag, metadata key or label whose value is the machine's site.
    type: str
    default: mesh_site
  proxies_output:
    description: The Terraform output that maps proxy ids to hosts (ignored when the state has no such output).
    type: str
    default: mesh_proxies
  address:
    description: Which address of an instance becomes C(ansible_host).
    type: str
    choices: [private, public]
    default: private
  hostname:
    description: C(name) names a host by its proxy's name (C(payment-1)), C(id) by the proxy id (C(payment-1.default)).
    type: str
    choices: [name, id]
    default: name
  mesh:
    description:
      - Mesh config files or folders; every proxy the state names must be one of its proxies.
      - Relative paths are relative to the folder of this configuration file.
    type: list
    elements: str
  label_groups:
    description: With O(mesh), put each host in one group per label of its workload, C(mesh_label_<key>_<value>).
    type: bool
    default: true
  connection_vars:
    description: Connection variables (names starting C(ansible_)) for every host, set on the group C(mesh).
    type: dict
    default: {}
"""

EXAMPLES = r"""
---
# inventories/aws/terraform.yml: instances tagged mesh_proxy = "payment-1.default", mesh_site = "eu-west"
plugin: meshwright.mesh.terraform
state: ../../terraform/terraform.tfstate
mesh: [../../mesh]
connection_vars:
  ansible_user: admin
  ansible_become: true

---
# Run terraform show -json in the working directory (libvirt domains mapped by an output):
#   output "mesh_proxies" {
#     value = { for name, vm in libvirt_domain.node : "${name}.default" => vm.network_interface[0].addresses[0] }
#   }
plugin: meshwright.mesh.terraform
project_path: ../../terraform/lab
binary_path: /usr/local/bin/terraform
mesh: [../../mesh]
"""

import ipaddress
import json
import os
import subprocess
from dataclasses import dataclass, replace

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable

try:
    from meshwright.lifecycle.hosts import (KIND_GROUPS, PARENT_GROUP, HostsError, MeshHost, host_groups, host_variables,
                                            load_mesh_for_hosts, mesh_hosts, proxy_id_problem, site_problem)
    from meshwright.names import is_host
except ImportError as error:
    MESHWRIGHT_IMPORT_ERROR = error
else:
    MESHWRIGHT_IMPORT_ERROR = None

ACCEPTED_NAMES = ("meshwright.mesh.terraform", "terraform")
CONFIG_SUFFIXES = ("terraform.yml", "terraform.yaml")
OWN_VARIABLES = ("mesh_proxy",)


class StateError(Exception):
    """The state cannot give a sound set of hosts; the message says where."""


@dataclass(frozen=True)
class Instance:
    address: str  # the resource instance address: module.vms.aws_instance.web[0]
    type: str
    attributes: dict


def _dig(value, path):
    """value[path[0]][path[1]]..., or None where the state has nothing there."""
    for part in path:
        if isinstance(part, int):
            value = value[part] if isinstance(value, list) and len(value) > part else None
        else:
            value = value.get(part) if isinstance(value, dict) else None
    return value


def _aws_tags(attributes):
    return attributes.get("tags_all") or attributes.get("tags") or {}


def _gcp_tags(attributes):
    # Labels first, metadata over them: a label value cannot hold the "." of a proxy id.
    return {**(attributes.get("labels") or {}), **(attributes.get("metadata") or {})}


# type -> (its tags, where its private and its public address are)
INSTANCE_TYPES = {
    "aws_instance": (_aws_tags, {"private": ("private_ip",), "public": ("public_ip",)}),
    "google_compute_instance": (_gcp_tags, {"private": ("network_interface", 0, "network_ip"),
                                            "public": ("network_interface", 0, "access_config", 0, "nat_ip")}),
    "libvirt_domain": (lambda attributes: {}, {"private": ("network_interface", 0, "addresses", 0),
                                               "public": ("network_interface", 0, "addresses", 0)}),
}


def _index(key):
    """A count index ([0]) or a for_each key (["order-1"]) as Terraform writes it in addresses."""
    if key is None:
        return ""
    return f"[{key}]" if isinstance(key, int) else f"[{json.dumps(key)}]"


def state_instances(document, origin):
    """The managed resource instances of a state (version 4) or of `terraform show -json` output."""
    if not isinstance(document, dict):
        raise StateError(f"{origin}: not Terraform state: a JSON object is expected")
    if "format_version" in document:
        return list(_module_instances((document.get("values") or {}).get("root_module") or {}))
    if document.get("version") == 4:
        return list(_state_v4_instances(document, origin))
    if "version" in document:
        raise StateError(f"{origin}: Terraform state format version {document['version']!r} is not read: give a version 4 "
                         "state (Terraform 0.12 and later) or the output of terraform show -json")
    raise StateError(f"{origin}: not Terraform state: neither a state file (\"version\": 4) nor terraform show -json output "
                     "(\"format_version\")")


def _state_v4_instances(document, origin):
    for number, resource in enumerate(document.get("resources") or []):
        if not isinstance(resource, dict) or not isinstance(resource.get("instances", []), list):
            raise StateError(f"{origin}: resources[{number}]: not a resource of a version 4 state")
        if resource.get("mode") != "managed":
            continue
        prefix = f"{resource['module']}." if resource.get("module") else ""
        for instance in resource.get("instances") or []:
            if isinstance(instance, dict) and not instance.get("deposed"):  # a deposed object is being destroyed
                address = f"{prefix}{resource.get('type')}.{resource.get('name')}{_index(instance.get('index_key'))}"
                yield Instance(address, str(resource.get("type")), instance.get("attributes") or {})


def _module_instances(module):
    for resource in module.get("resources") or []:
        if isinstance(resource, dict) and resource.get("mode") == "managed" and not resource.get("deposed_key"):
            yield Instance(str(resource.get("address")), str(resource.get("type")), resource.get("values") or {})
    for child in module.get("child_modules") or []:
        yield from _module_instances(child)


def state_outputs(document):
    """Output name -> value, from either shape."""
    outputs = (document.get("values") or {}).get("outputs") if "format_version" in document else document.get("outputs")
    return {name: output.get("value") for name, output in (outputs or {}).items() if isinstance(output, dict)}


@dataclass(frozen=True)
class Claim:
    """A machine the state says runs a proxy."""

    proxy: str
    address: str
    site: str
    origin: str  # the instance and tag, or the output entry, that says so
    resource: str = ""  # the resource instance address, when one is known
    type: str = ""


def instance_address(instance, which, origin):
    path = INSTANCE_TYPES[instance.type][1][which]
    address = _dig(instance.attributes, path)
    if not address:
        hint = " (give the libvirt_domain's network_interface wait_for_lease = true)" if instance.type == "libvirt_domain" else ""
        raise StateError(f"{origin}: the instance has no {which} address in the state ({'.'.join(map(str, path))}){hint}")
    return address


def tag_claims(instances, proxy_tag, site_tag, which):
    claims = []
    for instance in instances:
        if instance.type not in INSTANCE_TYPES:
            continue
        tags = INSTANCE_TYPES[instance.type][0](instance.attributes)
        if proxy_tag in tags:
            origin = f"{instance.address}: tag {proxy_tag}"
            claims.append(Claim(tags[proxy_tag], instance_address(instance, which, origin), tags.get(site_tag, ""), origin,
                                instance.address, instance.type))
    return claims


def output_claims(outputs, name, instances, which):
    if outputs.get(name) is None:
        return []
    value = outputs[name]
    if not isinstance(value, dict):
        raise StateError(f"output {name}: a map of proxy id to address (or to {{address, site}} or {{instance, site}}) is expected")
    by_address = {instance.address: instance for instance in instances}
    return [_output_claim(f"output {name}[{json.dumps(proxy)}]", proxy, entry, by_address, which) for proxy, entry in value.items()]


def _output_claim(origin, proxy, entry, by_address, which):
    if isinstance(entry, str):
        return Claim(proxy, entry, "", origin)
    if not isinstance(entry, dict) or ("address" in entry) == ("instance" in entry):
        raise StateError(f"{origin}: an address, or an object with one of address and instance (and optionally site), is expected")
    site = entry.get("site") or ""
    if "address" in entry:
        return Claim(proxy, entry["address"], site, origin)
    instance = by_address.get(entry["instance"])
    if instance is None or instance.type not in INSTANCE_TYPES:
        known = ", ".join(sorted(a for a, i in by_address.items() if i.type in INSTANCE_TYPES)[:10]) or "none"
        raise StateError(f"{origin}: instance {entry['instance']!r} is not an instance of {', '.join(INSTANCE_TYPES)} in the "
                         f"state (known: {known})")
    return Claim(proxy, instance_address(instance, which, origin), site, origin, instance.address, instance.type)


def check_claims(claims):
    """Every proxy id, site and address is sound, and no proxy is claimed twice."""
    seen = {}
    for claim in claims:
        problem = proxy_id_problem(claim.proxy)
        if problem:
            raise StateError(f"{claim.origin}: {problem}")
        if claim.site and site_problem(claim.site):
            raise StateError(f"{claim.origin}: site {site_problem(claim.site)}")
        if not _is_address(claim.address):
            raise StateError(f"{claim.origin}: address {claim.address!r} is not an IP address or a DNS name")
        if claim.proxy in seen:
            raise StateError(f"{claim.origin}: proxy {claim.proxy} is also claimed by {seen[claim.proxy]}: a proxy runs on "
                             "one machine")
        seen[claim.proxy] = claim.origin


def _is_address(text):
    if not isinstance(text, str):
        return False
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return "*" not in text and is_host(text)


class InventoryModule(BaseInventoryPlugin, Constructable):
    NAME = "meshwright.mesh.terraform"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(CONFIG_SUFFIXES)

    def _read_config_data(self, path):
        # The same file works from the collection and, as "terraform", from ANSIBLE_INVENTORY_PLUGINS.
        self._redirected_names = list(dict.fromkeys([*(getattr(self, "_redirected_names", None) or []), *ACCEPTED_NAMES]))
        return super()._read_config_data(path)

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        if MESHWRIGHT_IMPORT_ERROR is not None:
            raise AnsibleParserError(f"{path}: the meshwright.mesh.terraform inventory needs the meshwright Python package in "
                                     f"the Python that runs Ansible ({MESHWRIGHT_IMPORT_ERROR})")
        self._read_config_data(path)
        self._check_options(path)
        folder = os.path.dirname(os.path.abspath(path))
        document, origin = self._state_document(folder)
        mesh_paths = [os.path.abspath(os.path.join(folder, os.path.expanduser(p))) for p in self.get_option("mesh") or []]
        try:
            hosts = self._hosts(document, origin, mesh_paths)
        except (StateError, HostsError) as error:
            raise AnsibleParserError(str(error)) from None
        self._add_hosts(hosts, mesh_paths)

    def _check_options(self, path):
        if (self.get_option("state") is None) == (self.get_option("project_path") is None):
            raise AnsibleParserError(f"{path}: give one of state (a state file or terraform show -json output) and "
                                     "project_path (a Terraform working directory)")
        owned = sorted(set(self.get_option("compose") or {}) & set(OWN_VARIABLES))
        if owned:
            raise AnsibleParserError(f"{path}: compose sets {', '.join(owned)}, which the Terraform state gives each host: "
                                     "remove it from compose")
        bad = sorted(str(name) for name in self.get_option("connection_vars") if not str(name).startswith("ansible_"))
        if bad:
            raise AnsibleParserError(f"{path}: connection_vars: {', '.join(bad)} are not connection variables (their names "
                                     "start with ansible_); set other variables in group_vars")

    def _state_document(self, folder):
        """(the parsed state, where it came from)."""
        if self.get_option("state") is not None:
            state = os.path.join(folder, os.path.expanduser(self.get_option("state")))
            try:
                with open(state, encoding="utf-8") as handle:
                    text = handle.read()
            except (OSError, UnicodeDecodeError) as error:
                raise AnsibleParserError(f"{state}: cannot read the Terraform state: {error}") from None
            return _parse_json(text, state), state
        project = os.path.join(folder, os.path.expanduser(self.get_option("project_path")))
        origin = f"terraform show -json in {project}"
        return _parse_json(self._terraform_show(project, folder), origin), origin

    def _terraform_show(self, project, folder):
        binary = os.path.expanduser(self.get_option("binary_path"))
        if "/" in binary:
            binary = os.path.join(folder, binary)
        command = [binary, "show", "-json", "-no-color"]
        try:
            done = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=self.get_option("timeout"),
                                  env=dict(os.environ, TF_IN_AUTOMATION="1", TF_INPUT="0"), check=False)
        except FileNotFoundError:
            raise AnsibleParserError(f"{project}: cannot run {binary}: no such file (set binary_path to the Terraform binary)") from None
        except (OSError, subprocess.TimeoutExpired) as error:
            raise AnsibleParserError(f"{project}: {binary} show -json did not finish: {error}") from None
        if done.returncode != 0:
            raise AnsibleParserError(f"{project}: {binary} show -json failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
        return done.stdout

    def _hosts(self, document, origin, mesh_paths):
        """(name, groups, variables) of every machine the state maps to a proxy."""
        instances = state_instances(document, origin)
        which = self.get_option("address")
        claims = tag_claims(instances, self.get_option("proxy_tag"), self.get_option("site_tag"), which)
        claims += output_claims(state_outputs(document), self.get_option("proxies_output"), instances, which)
        check_claims(claims)
        known = self._mesh_hosts(mesh_paths, claims) if mesh_paths else None
        hosts, names = [], {}
        for claim in sorted(claims, key=lambda c: c.proxy):
            host = self._host(claim, known)
            if host.name in names:
                raise StateError(f"{claim.origin}: host {host.name!r} is also the host of {names[host.name]}: set the "
                                 "inventory's hostname option to 'id' to name hosts name.namespace")
            names[host.name] = claim.origin
            variables = host_variables(host)
            if known is None:  # the state says nothing of its kind, labels or service account
                variables = {key: value for key, value in variables.items() if key in ("mesh_proxy", "mesh_namespace", "mesh_site")}
            variables.update(ansible_host=claim.address, terraform_address=claim.resource or claim.origin)
            if claim.type:
                variables["terraform_type"] = claim.type
            hosts.append((host.name, host_groups(host, known is not None and self.get_option("label_groups")), variables))
        return hosts

    def _mesh_hosts(self, mesh_paths, claims):
        """Proxy id -> its host in the mesh config; a claim of a proxy the mesh lacks is refused."""
        known = {host.proxy: host for host in mesh_hosts(load_mesh_for_hosts(mesh_paths), "id")}
        for claim in claims:
            if claim.proxy not in known:
                names = sorted(known)
                listed = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
                raise StateError(f"{claim.origin}: {claim.proxy} is not a proxy of the mesh config (its proxies: {listed or 'none'})")
        missing = sorted(set(known) - {claim.proxy for claim in claims})
        if missing:
            self.display.warning(f"{len(missing)} proxies of the mesh config have no machine in the Terraform state: "
                                 + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
        return known

    def _host(self, claim, known):
        """The claim as a mesh host: the mesh config's (its kind, labels) where one is given."""
        name, namespace = claim.proxy.rsplit(".", 1)
        hostname = name if self.get_option("hostname") == "name" else claim.proxy
        if known is None:
            return MeshHost(hostname, claim.proxy, "", namespace, claim.address, (), "", "", claim.site, claim.origin)
        # mesh_address stays the WorkloadEntry's (what other proxies dial); ansible_host is the state's.
        return replace(known[claim.proxy], name=hostname, site=claim.site)

    def _add_hosts(self, hosts, mesh_paths):
        inventory = self.inventory
        inventory.add_group(PARENT_GROUP)
        if mesh_paths:
            for group in KIND_GROUPS.values():
                inventory.add_child(PARENT_GROUP, inventory.add_group(group))
            inventory.set_variable(PARENT_GROUP, "mesh_config_paths", mesh_paths)
        for name, value in self.get_option("connection_vars").items():
            inventory.set_variable(PARENT_GROUP, str(name), value)
        strict = self.get_option("strict")
        constructed = any(self.get_option(option) for option in ("compose", "groups", "keyed_groups"))
        for name, groups, variables in hosts:
            inventory.add_host(name)
            for group in groups:
                inventory.add_child(inventory.add_group(self._sanitize_group_name(group)), name)
            for variable, value in variables.items():
                inventory.set_variable(name, variable, value)
            if not constructed:
                continue
            composable = inventory.get_host(name).get_vars()
            self._set_composite_vars(self.get_option("compose"), composable, name, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), composable, name, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), composable, name, strict=strict)
            site = inventory.get_host(name).vars.get("mesh_site")
            if site is not None and site_problem(site):
                raise AnsibleParserError(f"host {name}: compose sets mesh_site to {site_problem(site)}")


def _parse_json(text, origin):
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise AnsibleParserError(f"{origin}:{error.lineno}: not JSON ({error.msg}): Terraform state is JSON") from None
