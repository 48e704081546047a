"""The meshwright.mesh.terraform inventory plugin, through the real `ansible-inventory`: machines in
Terraform state (AWS, GCP, libvirt; modules, count and for_each) become mesh hosts by tag or
output, and a name that cannot be a proxy id or a site is refused."""

from __future__ import annotations

import json
import stat
import sys

import pytest
import yaml

from tests.unit.ansible_inventory import REPO, as_collection, group_hosts, host_vars, inventory_error, inventory_list, run_inventory

STATES = REPO / "tests" / "unit" / "data" / "terraform"
SEED_MESH = REPO / "examples" / "seed" / "mesh"


def write_config(folder, name="estate.terraform.yml", **options):
    path = folder / name
    path.write_text(yaml.safe_dump({"plugin": "meshwright.mesh.terraform", **options}))
    return path


def state(name):
    return json.loads((STATES / name).read_text())


def write_state(folder, document, name="terraform.tfstate"):
    (folder / name).write_text(json.dumps(document))
    return name


def without_meta(listing):
    return {key: value for key, value in listing.items() if key != "_meta"} | {"hostvars": listing["_meta"]["hostvars"]}


def test_aws_instances_by_tag_from_a_version_4_state(tmp_path):
    listing = inventory_list(write_config(tmp_path, state=str(STATES / "aws.tfstate")), "terraform")

    assert group_hosts(listing, "mesh") == ["order-1", "order-2"]
    order_1, order_2 = host_vars(listing, "order-1"), host_vars(listing, "order-2")
    assert order_1 == {"mesh_proxy": "order-1.default", "mesh_namespace": "default", "mesh_site": "eu-west",
                       "ansible_host": "10.0.1.11", "terraform_address": "aws_instance.order[0]", "terraform_type": "aws_instance"}
    # The site comes from tags_all: the provider's default tags count.
    assert (order_2["ansible_host"], order_2["mesh_site"], order_2["terraform_address"]) == ("10.0.2.12", "eu-west", "aws_instance.order[1]")
    assert group_hosts(listing, "mesh_site_eu_west") == ["order-1", "order-2"]


def test_terraform_show_json_gives_the_same_hosts_as_the_state_file(tmp_path):
    from_state = inventory_list(write_config(tmp_path, "a.terraform.yml", state=str(STATES / "aws.tfstate")), "terraform")
    from_show = inventory_list(write_config(tmp_path, "b.terraform.yml", state=str(STATES / "aws.show.json")), "terraform")

    assert without_meta(from_show) == without_meta(from_state)


def test_the_public_address_is_used_when_asked_and_its_absence_is_an_error(tmp_path):
    document = state("aws.tfstate")
    document["resources"][2]["instances"] = document["resources"][2]["instances"][:1]
    listing = inventory_list(write_config(tmp_path, state=write_state(tmp_path, document), address="public"), "terraform")
    assert host_vars(listing, "order-1")["ansible_host"] == "34.240.1.11"

    error = inventory_error(write_config(tmp_path, state=str(STATES / "aws.tfstate"), address="public"), "terraform")
    assert "aws_instance.order[1]: tag mesh_proxy: the instance has no public address in the state (public_ip)" in error


def test_gcp_instances_of_a_module_by_metadata_joined_with_the_mesh_config(tmp_path):
    config = write_config(tmp_path, state=str(STATES / "gcp.tfstate"), mesh=[str(SEED_MESH)], address="private")

    listing = inventory_list(config, "terraform")

    assert group_hosts(listing, "mesh_sidecars") == ["payment-1", "payment-2"]
    assert group_hosts(listing, "mesh_gateways") == []
    payment_2 = host_vars(listing, "payment-2")
    assert payment_2["terraform_address"] == 'module.payments.google_compute_instance.vm["payment-2"]'
    assert (payment_2["ansible_host"], payment_2["mesh_site"], payment_2["mesh_proxy_kind"]) == ("10.132.0.22", "europe-west1", "sidecar")
    # What the mesh config says of the workload: its labels, and its address for other proxies.
    assert payment_2["mesh_labels"] == {"app": "payment-service", "instance": "payment-2", "version": "v1"}
    assert payment_2["mesh_address"] == "127.0.0.1"
    assert payment_2["mesh_config_paths"] == [str(SEED_MESH)]
    assert group_hosts(listing, "mesh_label_app_payment_service") == ["payment-1", "payment-2"]
    assert ("3 proxies of the mesh config have no machine in the Terraform state: ingress.default, order-1.default, "
            "order-2.default") in " ".join(run_inventory(config, "terraform").stderr.split())


def test_gcp_public_address_is_the_nat_ip(tmp_path):
    document = state("gcp.tfstate")
    document["resources"][0]["instances"] = document["resources"][0]["instances"][1:]

    listing = inventory_list(write_config(tmp_path, state=write_state(tmp_path, document), address="public"), "terraform")

    assert host_vars(listing, "payment-2")["ansible_host"] == "35.205.12.22"


def test_libvirt_domains_of_nested_modules_by_output(tmp_path):
    config = write_config(tmp_path, state=str(STATES / "libvirt.tfstate"), mesh=[str(SEED_MESH)], hostname="id")

    listing = inventory_list(config, "terraform")

    assert group_hosts(listing, "mesh_gateways") == ["ingress.default"]
    assert group_hosts(listing, "mesh_sidecars") == ["order-1.default"]
    ingress = host_vars(listing, "ingress.default")
    assert ingress["terraform_address"] == 'module.lab.module.gateways.libvirt_domain.gw["ingress"]'
    assert (ingress["ansible_host"], ingress["mesh_site"], ingress["mesh_proxy_kind"]) == ("192.168.122.50", "lab", "gateway")
    order_1 = host_vars(listing, "order-1.default")
    assert (order_1["ansible_host"], order_1["terraform_address"]) == ("192.168.122.61", 'output mesh_proxies["order-1.default"]')


@pytest.mark.parametrize("name", ["terraform_data.tfstate", "terraform_data.show.json"])
def test_the_output_of_real_terraform_in_both_formats(tmp_path, name):
    listing = inventory_list(write_config(tmp_path, state=str(STATES / name)), "terraform")

    outputs = state("terraform_data.tfstate")["outputs"]["mesh_proxies"]["value"]
    assert {host: host_vars(listing, host)["ansible_host"] for host in group_hosts(listing, "mesh")} == {
        proxy.split(".")[0]: entry["address"] for proxy, entry in outputs.items()}


def stand_in_terraform(folder, output_file, project):
    """An executable that answers `show -json -no-color` in the project folder with a saved
    output, as terraform does, and fails as terraform does for anything else."""
    binary = folder / "terraform"
    binary.write_text(f"""#!{sys.executable}
import os, sys
if sys.argv[1:] != ["show", "-json", "-no-color"] or os.getcwd() != {str(project)!r}:
    sys.exit("Error: unexpected arguments " + " ".join(sys.argv[1:]) + " in " + os.getcwd())
sys.stdout.write(open({str(output_file)!r}).read())
""")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    return binary


def test_terraform_show_is_run_in_the_project_folder(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    stand_in_terraform(tmp_path, STATES / "aws.show.json", project)

    # binary_path with a "/" is relative to the config's folder, as project_path is
    listing = inventory_list(write_config(tmp_path, project_path="project", binary_path="./terraform"), "terraform")

    assert group_hosts(listing, "mesh") == ["order-1", "order-2"]


def test_a_failing_terraform_show_is_reported_with_its_error(tmp_path):
    (tmp_path / "project").mkdir()
    binary = tmp_path / "terraform"
    binary.write_text(f"#!{sys.executable}\nimport sys\nsys.exit('Error: No state file was found!')\n")
    binary.chmod(0o755)

    error = inventory_error(write_config(tmp_path, project_path="project", binary_path=str(binary)), "terraform")

    assert f"{tmp_path / 'project'}: {binary} show -json failed (exit 1): Error: No state file was found!" in error


def test_the_collection_name_loads_the_plugin_through_auto(tmp_path):
    collections = as_collection(tmp_path / "collections")

    listing = inventory_list(write_config(tmp_path, state=str(STATES / "aws.tfstate")), "auto", collections)

    assert host_vars(listing, "order-2")["mesh_proxy"] == "order-2.default"


# Bad input: a host never chooses its own identity; every refusal names the instance and tag.

def aws_with_tags(**tags):
    document = state("aws.tfstate")
    document["resources"][2]["instances"][0]["attributes"]["tags_all"].update(tags)
    return document


@pytest.mark.parametrize("tags, message", [
    ({"mesh_proxy": "../../etc/passwd"}, "aws_instance.order[0]: tag mesh_proxy: '../../etc/passwd' is not a proxy id"),
    ({"mesh_proxy": "order-1"}, "aws_instance.order[0]: tag mesh_proxy: 'order-1' is not a proxy id: the name.namespace"),
    ({"mesh_proxy": "order-1.default\n"}, "aws_instance.order[0]: tag mesh_proxy: 'order-1.default\\n' is not a proxy id"),
    ({"mesh_proxy": "Order-1.default"}, "'Order-1.default' is not a proxy id"),
    ({"mesh_site": "../root"}, "aws_instance.order[0]: tag mesh_proxy: site '../root' is not usable: a site must be a DNS-1123 label"),
    ({"mesh_proxy": "order-2.default"}, "aws_instance.order[1]: tag mesh_proxy: proxy order-2.default is also claimed by "
                                        "aws_instance.order[0]: tag mesh_proxy"),
])
def test_a_tag_that_cannot_name_a_proxy_or_site_is_refused(tmp_path, tags, message):
    error = inventory_error(write_config(tmp_path, state=write_state(tmp_path, aws_with_tags(**tags))), "terraform")

    assert message in error


def test_a_proxy_the_mesh_config_does_not_have_is_refused(tmp_path):
    document = aws_with_tags(mesh_proxy="billing-1.default")

    error = inventory_error(write_config(tmp_path, state=write_state(tmp_path, document), mesh=[str(SEED_MESH)]), "terraform")

    assert ("aws_instance.order[0]: tag mesh_proxy: billing-1.default is not a proxy of the mesh config (its proxies: "
            "ingress.default, order-1.default, order-2.default, payment-1.default, payment-2.default)") in error


def test_a_mesh_config_problem_names_its_file_and_line(tmp_path):
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text("apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: order-1}\nspec: {}\n")

    error = inventory_error(write_config(tmp_path, state=str(STATES / "aws.tfstate"), mesh=["mesh.yaml"]), "terraform")

    assert f"{mesh}:4: WorkloadEntry/default/order-1: spec: missing required field 'address'" in error


def test_one_name_in_two_namespaces_needs_hostname_id(tmp_path):
    document = aws_with_tags(mesh_proxy="order-2.shop")

    error = inventory_error(write_config(tmp_path, state=write_state(tmp_path, document)), "terraform")

    assert ("aws_instance.order[0]: tag mesh_proxy: host 'order-2' is also the host of aws_instance.order[1]: tag mesh_proxy: "
            "set the inventory's hostname option to 'id'") in error
    listing = inventory_list(write_config(tmp_path, state="terraform.tfstate", hostname="id"), "terraform")
    assert group_hosts(listing, "mesh") == ["order-2.default", "order-2.shop"]


def libvirt_with_output(value):
    document = state("libvirt.tfstate")
    document["outputs"]["mesh_proxies"]["value"] = value
    return document


@pytest.mark.parametrize("value, message", [
    (["ingress.default"], "output mesh_proxies: a map of proxy id to address"),
    ({"ingress.default": {"instance": "libvirt_domain.gw[\"ingress\"]"}},
     'output mesh_proxies["ingress.default"]: instance \'libvirt_domain.gw["ingress"]\' is not an instance of aws_instance, '
     'google_compute_instance, libvirt_domain in the state (known: module.lab.module.gateways.libvirt_domain.gw["ingress"])'),
    ({"ingress.default": {"address": "10.0.0.1", "instance": "x"}}, "an object with one of address and instance"),
    ({"ingress.default": "10.0.0.1; rm -rf /"}, "address '10.0.0.1; rm -rf /' is not an IP address or a DNS name"),
    ({"ingress": "10.0.0.1"}, 'output mesh_proxies["ingress"]: \'ingress\' is not a proxy id'),
])
def test_a_bad_proxies_output_is_refused(tmp_path, value, message):
    error = inventory_error(write_config(tmp_path, state=write_state(tmp_path, libvirt_with_output(value))), "terraform")

    assert message in error


def test_a_domain_without_a_lease_says_how_to_get_its_address(tmp_path):
    document = state("libvirt.tfstate")
    document["resources"][1]["instances"][0]["attributes"]["network_interface"][0]["addresses"] = []

    error = inventory_error(write_config(tmp_path, state=write_state(tmp_path, document)), "terraform")

    assert ("the instance has no private address in the state (network_interface.0.addresses.0) "
            "(give the libvirt_domain's network_interface wait_for_lease = true)") in error


@pytest.mark.parametrize("content, message", [
    ('{"version": 3, "serial": 1, "modules": []}', "Terraform state format version 3 is not read: give a version 4 state"),
    ('{"resources": []}', "not Terraform state: neither a state file"),
    ('{\n  "version": 4,\n  "resources": [\n', "terraform.tfstate:4: not JSON (Expecting value)"),
])
def test_what_is_not_a_version_4_state_is_refused(tmp_path, content, message):
    (tmp_path / "terraform.tfstate").write_text(content)

    assert message in inventory_error(write_config(tmp_path, state="terraform.tfstate"), "terraform")


@pytest.mark.parametrize("options, message", [
    ({}, "give one of state (a state file or terraform show -json output) and project_path"),
    ({"state": "a.tfstate", "project_path": "."}, "give one of state"),
    ({"state": "missing.tfstate"}, "missing.tfstate: cannot read the Terraform state"),
    ({"state": "aws.tfstate", "compose": {"mesh_proxy": "'x.default'"}}, "compose sets mesh_proxy, which the Terraform state gives"),
    ({"state": "aws.tfstate", "compose": {"mesh_site": "'Not A Site'"}}, "compose sets mesh_site to 'Not A Site' is not usable"),
    ({"state": "aws.tfstate", "connection_vars": {"become": True}}, "connection_vars: become are not connection variables"),
    ({"project_path": ".", "binary_path": "/nonexistent/terraform"}, "cannot run /nonexistent/terraform: no such file"),
])
def test_bad_options_are_refused_clearly(tmp_path, options, message):
    write_state(tmp_path, state("aws.tfstate"), "aws.tfstate")

    assert message in inventory_error(write_config(tmp_path, **options), "terraform")


def test_the_mesh_plugin_does_not_take_a_terraform_config(tmp_path):
    config = write_config(tmp_path, state=str(STATES / "aws.tfstate"))

    result = run_inventory(config, "mesh")

    assert result.returncode != 0 and "Traceback" not in result.stderr



def test_the_example_config_uses_only_the_plugin_options():
    source = (REPO / "plugins" / "inventory" / "terraform.py").read_text()
    documented = yaml.safe_load(source.split('DOCUMENTATION = r"""')[1].split('"""')[0])["options"]
    example = yaml.safe_load((REPO / "examples" / "inventory" / "vms.terraform.yml").read_text())

    assert example["plugin"] == "meshwright.mesh.terraform"
    assert sorted(set(example) - set(documented)) == []
