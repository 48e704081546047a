"""One inventory names VMs and a Kubernetes cluster; one `deploy.yml` run meshes both: the seed
mesh's VM proxies on this machine (inventories/local's hosts) and, on a real API server
(../shared/envtest, the API server alone), meshwright's CRDs, the control plane's RBAC, the
webhooks trusting the mesh CA that the same run kept, and the injected namespace's label. A
second run changes nothing anywhere."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import shutil
import signal
import subprocess

import pytest
import yaml
from kubernetes import client

from tests.e2e.deploy import BIN, ROOT, PlaybookRun, remove_state_folder, state_folder
from tests.e2e.test_deploy_local import Lab, get, processes_under
from tests.kubernetes.api_server import start_api_server, stop_api_server
from tests.kubernetes.test_kubernetes_mesh_role import collections_env

WEBHOOK_URL = "https://127.0.0.1:15019"  # loopback (nothing listens there: the API server calls it only for Istio resources)


def one_inventory(folder: pathlib.Path, kubeconfig: str) -> str:
    """inventories/local (the VMs) with a cluster beside them, as one inventory folder."""
    inventory = folder / "inventory"
    shutil.copytree(os.path.join(ROOT, "inventories", "local"), inventory)
    hosts = yaml.safe_load((inventory / "hosts.yml").read_text())
    hosts["mesh_clusters"] = {"hosts": {"east": {
        "ansible_connection": "local", "ansible_python_interpreter": os.path.join(BIN, "python"), "kubernetes_mesh_kubeconfig": kubeconfig,
        "kubernetes_mesh_webhook_url": WEBHOOK_URL, "kubernetes_mesh_injection_namespaces": ["shop"]}}}
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts, sort_keys=False))
    return str(inventory)


def deploy(inventory: str, extra_vars: dict) -> PlaybookRun:
    command = [os.path.join(BIN, "ansible-playbook"), "-i", inventory, "meshwright.mesh.deploy", "-e", json.dumps(extra_vars)]
    return PlaybookRun(subprocess.run(command, cwd=ROOT, env=collections_env(), capture_output=True, text=True, timeout=1200))


@pytest.fixture(scope="module")
def estate():
    api = start_api_server()
    folder = state_folder("clusters")
    lab = Lab(pathlib.Path(folder))
    inventory = one_inventory(pathlib.Path(folder), api.kubeconfig)
    try:
        first = deploy(inventory, lab.extra_vars)
        assert first.returncode == 0, f"deploy failed:\n{first}"
        second = deploy(inventory, lab.extra_vars)
        yield api, lab, first, second
    finally:
        subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", inventory, "meshwright.mesh.uninstall", "-e", json.dumps(lab.extra_vars)],
                       cwd=ROOT, env=collections_env(), capture_output=True, timeout=600)
        for pid in processes_under(lab.state):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        stop_api_server(api)
        remove_state_folder(folder)


def test_one_run_meshes_the_vms_and_the_cluster_and_a_second_changes_nothing(estate):
    dummy_api, dummy_lab, first, second = estate
    assert first.changed()["east"] > 0 and first.changed()["order-1"] > 0, str(first)
    assert second.returncode == 0, str(second)
    assert set(second.changed().values()) == {0}, str(second)


def test_the_vm_proxies_serve_through_the_mesh(estate):
    status, body = get("/order")
    assert status == 200, body


def test_the_clusters_webhooks_trust_the_mesh_ca_the_run_kept(estate):
    api, lab, dummy_first, dummy_second = estate
    admission = client.AdmissionregistrationV1Api(api.api_client())
    [webhook] = admission.read_validating_webhook_configuration("meshwright-validation").webhooks
    bundle = base64.b64decode(webhook.client_config.ca_bundle).decode()
    assert bundle.startswith("-----BEGIN CERTIFICATE-----")
    # The trust bundle the same run gave the VM proxies.
    served = sorted(pathlib.Path(lab.state).rglob("root-cert.pem"))
    assert served and {path.read_text() for path in served} == {bundle}, served
    crds = client.ApiextensionsV1Api(api.api_client()).list_custom_resource_definition().items
    assert len([crd for crd in crds if crd.spec.group.endswith(".istio.io")]) == 12
    assert client.CoreV1Api(api.api_client()).read_namespace("shop").metadata.labels["istio-injection"] == "enabled"
    assert client.RbacAuthorizationV1Api(api.api_client()).read_cluster_role_binding("meshwright-control-plane").subjects[0].name == "meshwright"
