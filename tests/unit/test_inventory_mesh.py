"""The meshwright.mesh.mesh inventory plugin, through the real `ansible-inventory`: hosts, their
variables and groups come from the mesh config, so no inventory names a host twice."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap

import pytest
import yaml

from tests.unit.ansible_inventory import ANSIBLE_INVENTORY, REPO, as_collection, group_hosts, host_vars, inventory_error, inventory_list, run_inventory, unwrap

SEED_MESH = REPO / "examples" / "seed" / "mesh"

# A hybrid estate: sidecars in two namespaces and regions, a gateway served by a WorkloadEntry
# (an ingress gateway VM) and a Gateway that selects none (a standalone gateway).
HYBRID_MESH = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: order-service, namespace: shop}
spec:
  hosts: [order-service.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: order-service}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: order-1, namespace: shop}
spec:
  address: 10.0.1.11
  labels: {app: order-service, version: v1, tier: front}
  locality: eu-west/zone-a
  serviceAccount: order-service
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: order-2, namespace: shop}
spec:
  address: 10.1.1.12
  labels: {app: order-service, version: v2, tier: front}
  locality: us-east/zone-b
  serviceAccount: order-service
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ingress-vm, namespace: istio-system}
spec:
  address: 10.0.9.1
  labels: {istio: ingressgateway, tier: edge}
  locality: eu-west
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: partners, namespace: shop}
spec:
  selector: {tier: partners}
  servers:
  - port: {number: 8443, name: http-partners, protocol: HTTP}
    hosts: ["*"]
"""


def write_config(folder, name="estate.meshwright.yml", **options):
    path = folder / name
    path.write_text(yaml.safe_dump({"plugin": "meshwright.mesh.mesh", **options}))
    return path


@pytest.fixture
def hybrid(tmp_path):
    (tmp_path / "mesh").mkdir()
    (tmp_path / "mesh" / "estate.yaml").write_text(HYBRID_MESH)
    return tmp_path


def test_the_example_gives_the_local_demo_hosts_inventories_local_writes_by_hand():
    handwritten = unwrap(json.loads(run_inventory(REPO / "inventories" / "local" / "hosts.yml", "yaml").stdout))

    listing = inventory_list(REPO / "examples" / "inventory" / "local.meshwright.yml", "mesh")

    for group in ("mesh_gateways", "mesh_sidecars"):
        assert group_hosts(listing, group) == group_hosts(handwritten, group)
        for host in group_hosts(handwritten, group):
            assert host_vars(listing, host)["mesh_proxy"] == host_vars(handwritten, host)["mesh_proxy"]
            assert host_vars(listing, host)["ansible_connection"] == "local"
            assert "ansible_host" not in host_vars(listing, host)
    assert sorted(listing["mesh"]["children"]) == ["mesh_gateways", "mesh_sidecars"]
    assert group_hosts(listing, "namespace_default") == ["ingress", "order-1", "order-2", "payment-1", "payment-2"]
    assert host_vars(listing, "order-1")["mesh_config_paths"] == [str(SEED_MESH)]


def plays_and_hosts(inventory) -> dict[str, list[str]]:
    """`ansible-playbook playbooks/deploy.yml --list-hosts` with this inventory: play -> its hosts."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_INVENTORY_PLUGINS=str(REPO / "plugins" / "inventory"),
               ANSIBLE_INVENTORY_ENABLED="mesh,yaml", ANSIBLE_INVENTORY_UNPARSED_FAILED="true", PYTHONWARNINGS="ignore")
    result = subprocess.run([str(ANSIBLE_INVENTORY.parent / "ansible-playbook"), "-i", str(inventory), str(REPO / "playbooks" / "deploy.yml"),
                             "--list-hosts"], cwd="/", env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    plays, play = {}, None
    for line in result.stdout.splitlines():
        if line.strip().startswith("play #"):
            play = plays.setdefault(line.strip(), [])
        elif play is not None and line.startswith("      ") and line.strip():
            play.append(line.strip())
    return {name: sorted(hosts) for name, hosts in plays.items()}


def test_the_deploy_playbook_runs_on_the_same_hosts_with_the_plugin_inventory():
    from_plugin = plays_and_hosts(REPO / "examples" / "inventory" / "local.meshwright.yml")

    assert from_plugin == plays_and_hosts(REPO / "inventories" / "local" / "hosts.yml")
    # Every play has its hosts, but the one for Kubernetes clusters: neither inventory names a cluster.
    assert len(from_plugin) >= 4 and all(hosts or "(mesh_clusters)" in play for play, hosts in from_plugin.items())
    assert [play for play, hosts in from_plugin.items() if not hosts] == [next(play for play in from_plugin if "(mesh_clusters)" in play)]


def test_every_proxy_is_a_host_with_its_address_labels_site_and_groups(hybrid):
    config = write_config(hybrid, mesh=["mesh"], site_from="locality", connection_vars={"ansible_user": "deploy"})

    listing = inventory_list(config, "mesh")

    assert group_hosts(listing, "mesh_sidecars") == ["order-1", "order-2"]
    assert group_hosts(listing, "mesh_gateways") == ["ingress-vm", "partners"]
    order_1 = host_vars(listing, "order-1")
    assert (order_1["mesh_proxy"], order_1["ansible_host"], order_1["mesh_site"]) == ("order-1.shop", "10.0.1.11", "eu-west")
    assert order_1["mesh_labels"] == {"app": "order-service", "version": "v1", "tier": "front"}
    assert (order_1["mesh_namespace"], order_1["mesh_service_account"], order_1["ansible_user"]) == ("shop", "order-service", "deploy")
    ingress = host_vars(listing, "ingress-vm")
    assert (ingress["mesh_proxy"], ingress["mesh_proxy_kind"], ingress["ansible_host"]) == ("ingress-vm.istio-system", "gateway", "10.0.9.1")
    # The standalone gateway has no address in the mesh config: its name reaches it.
    partners = host_vars(listing, "partners")
    assert (partners["mesh_proxy"], partners["mesh_proxy_kind"]) == ("partners.shop", "gateway")
    assert "ansible_host" not in partners and "mesh_site" not in partners
    assert group_hosts(listing, "mesh_site_eu_west") == ["ingress-vm", "order-1"]
    assert group_hosts(listing, "mesh_site_us_east") == ["order-2"]
    assert group_hosts(listing, "mesh_label_tier_front") == ["order-1", "order-2"]
    assert group_hosts(listing, "mesh_label_version_v2") == ["order-2"]
    assert group_hosts(listing, "mesh_label_tier_partners") == ["partners"]


@pytest.mark.parametrize("site_from, extra, sites", [
    ("locality", {}, {"order-1": "eu-west", "order-2": "us-east", "partners": None}),
    ("label", {"site_label": "version"}, {"order-1": "v1", "order-2": "v2"}),
])
def test_the_site_comes_from_the_source_asked_for(hybrid, site_from, extra, sites):
    listing = inventory_list(write_config(hybrid, mesh=["mesh"], site_from=site_from, **extra), "mesh")

    assert {host: host_vars(listing, host).get("mesh_site") for host in sites} == sites


def test_hosts_are_named_by_proxy_id_when_asked(hybrid):
    listing = inventory_list(write_config(hybrid, mesh=["mesh"], hostname="id", label_groups=False), "mesh")

    assert group_hosts(listing, "mesh_sidecars") == ["order-1.shop", "order-2.shop"]
    assert group_hosts(listing, "mesh_gateways") == ["ingress-vm.istio-system", "partners.shop"]
    assert not [group for group in listing if group.startswith("mesh_label_")]


def test_compose_and_keyed_groups_build_on_the_mesh_variables(hybrid):
    config = write_config(hybrid, mesh=["mesh"], use_address=False,
                          compose={"mesh_config_dir": "'/srv/' ~ inventory_hostname ~ '/proxy'", "mesh_site": "mesh_labels.tier"},
                          keyed_groups=[{"key": "mesh_namespace", "prefix": "namespace"}],
                          groups={"canary": "mesh_labels.version | default('') == 'v2'"})

    listing = inventory_list(config, "mesh")

    assert host_vars(listing, "order-2")["mesh_config_dir"] == "/srv/order-2/proxy"
    assert host_vars(listing, "ingress-vm")["mesh_site"] == "edge"
    assert "ansible_host" not in host_vars(listing, "order-1")
    assert group_hosts(listing, "namespace_shop") == ["order-1", "order-2", "partners"]
    assert group_hosts(listing, "namespace_istio_system") == ["ingress-vm"]
    assert group_hosts(listing, "canary") == ["order-2"]


def test_the_collection_name_loads_the_plugin_through_auto(hybrid, tmp_path):
    collections = as_collection(tmp_path / "collections")

    listing = inventory_list(write_config(hybrid, mesh=["mesh"]), "auto", collections)

    assert host_vars(listing, "order-2")["mesh_proxy"] == "order-2.shop"


def test_the_short_plugin_name_is_accepted_from_the_plugins_folder(hybrid):
    config = hybrid / "short.meshwright.yml"
    config.write_text("plugin: mesh\nmesh: [mesh]\n")

    assert host_vars(inventory_list(config, "mesh"), "order-1")["mesh_proxy"] == "order-1.shop"


def test_the_cache_is_used_until_the_mesh_config_changes(hybrid):
    config = write_config(hybrid, mesh=["mesh"], cache=True, cache_plugin="ansible.builtin.jsonfile",
                          cache_connection=str(hybrid / "cache"))
    assert group_hosts(inventory_list(config, "mesh"), "mesh_sidecars") == ["order-1", "order-2"]
    # A change that keeps the file's size and time is not seen: the hosts come from the cache.
    mesh = hybrid / "mesh" / "estate.yaml"
    written = os.stat(mesh)
    mesh.write_text(mesh.read_text().replace("name: order-2,", "name: order-3,"))
    os.utime(mesh, ns=(written.st_atime_ns, written.st_mtime_ns))
    assert group_hosts(inventory_list(config, "mesh"), "mesh_sidecars") == ["order-1", "order-2"]

    os.utime(mesh, ns=(written.st_atime_ns, written.st_mtime_ns + 10**9))
    assert group_hosts(inventory_list(config, "mesh"), "mesh_sidecars") == ["order-1", "order-3"]


# Bad input: one clear message naming the file, line, resource and field; no traceback.

def test_a_mesh_config_problem_names_file_line_resource_and_field(hybrid):
    mesh = hybrid / "mesh" / "estate.yaml"
    mesh.write_text(HYBRID_MESH.replace("  address: 10.1.1.12\n", ""))

    error = inventory_error(write_config(hybrid, mesh=["mesh"]), "mesh")

    line = HYBRID_MESH.splitlines().index("metadata: {name: order-2, namespace: shop}") + 2
    assert f"{mesh}:{line}: WorkloadEntry/shop/order-2: spec: missing required field 'address'" in error


def test_yaml_that_does_not_parse_names_its_line(hybrid):
    mesh = hybrid / "mesh" / "estate.yaml"
    mesh.write_text(HYBRID_MESH + "---\nkind: Gateway: public\n")

    error = inventory_error(write_config(hybrid, mesh=["mesh"]), "mesh")

    assert f"{mesh}:{len(HYBRID_MESH.splitlines()) + 2}: not valid YAML: mapping values are not allowed in this context" in error


def test_two_proxies_of_one_name_are_refused_with_the_way_out(hybrid):
    mesh = hybrid / "mesh" / "estate.yaml"
    mesh.write_text(HYBRID_MESH.replace("metadata: {name: order-2, namespace: shop}", "metadata: {name: order-1, namespace: shop-us}"))

    error = inventory_error(write_config(hybrid, mesh=["mesh"]), "mesh")

    assert "WorkloadEntry/shop/order-1" in error and "WorkloadEntry/shop-us/order-1: metadata.name: host 'order-1' is already the host of" in error
    assert "set the inventory's hostname option to 'id'" in error
    assert group_hosts(inventory_list(write_config(hybrid, mesh=["mesh"], hostname="id"), "mesh"), "mesh_sidecars") == [
        "order-1.shop", "order-1.shop-us"]


def test_a_site_that_cannot_name_an_intermediate_is_refused_where_it_is_written(hybrid):
    mesh = hybrid / "mesh" / "estate.yaml"
    mesh.write_text(HYBRID_MESH.replace("locality: us-east/zone-b", "locality: US_East/zone-b"))

    error = inventory_error(write_config(hybrid, mesh=["mesh"], site_from="locality"), "mesh")

    line = HYBRID_MESH.splitlines().index("  locality: us-east/zone-b") + 1
    assert f"{mesh}:{line}: WorkloadEntry/shop/order-2: spec.locality: site 'US_East' (from the locality) is not usable" in error


@pytest.mark.parametrize("options, message", [
    ({"compose": {"mesh_proxy": "'payment-1.default'"}}, "compose sets mesh_proxy, which the mesh config gives each host"),
    ({"compose": {"mesh_site": "'../root'"}}, "compose sets mesh_site to '../root' is not usable: a site must be a DNS-1123 label"),
    ({"connection_vars": {"mesh_site": "eu"}}, "connection_vars: mesh_site are not connection variables"),
    ({"site_from": "label"}, "site_from: label needs site_label"),
    ({"site_from": "region"}, "site_from"),
    ({"mesh": ["missing"]}, "missing:0: no such file or directory"),
])
def test_bad_options_are_refused_clearly(hybrid, options, message):
    error = inventory_error(write_config(hybrid, **{"mesh": ["mesh"], **options}), "mesh")

    assert message in error


def test_a_config_for_another_plugin_is_not_taken(hybrid):
    config = hybrid / "other.meshwright.yml"
    config.write_text(textwrap.dedent("""\
        plugin: meshwright.mesh.terraform
        mesh: [mesh]
    """))

    assert "Incorrect plugin name in file: meshwright.mesh.terraform" in inventory_error(config, "mesh")
