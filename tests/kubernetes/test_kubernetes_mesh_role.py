"""The role meshwright.mesh.kubernetes_mesh on a real API server, run by ansible-playbook from
the installed collection: CRDs, the control plane's namespace, ServiceAccount and
least-privilege RBAC (the API server enforces it: its token lists and watches what the
registry reads, reviews tokens, and is refused anything else), the webhook configurations
with the mesh CA as caBundle, namespace labels; a second run changes nothing; --check --diff
reports without changing; bad input stops before any change."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time

import ansible
import pytest
import yaml
from kubernetes import client

from meshwright.pki import ca
from meshwright.serve.kubernetes import KubernetesRegistry
from meshwright.serve.root_cert_publisher import RootCertPublisher
from tests.e2e.deploy import BIN, ROOT, PlaybookRun, playbook_env
from tests.harness import free_port
from tests.kubernetes.api_server import create_retrying

PLAYBOOK = """\
- name: Mesh the clusters
  hosts: mesh_clusters
  gather_facts: false
  roles: [meshwright.mesh.kubernetes_mesh]
"""
# Loopback, where nothing listens: the API server never sends anything off this machine.
WEBHOOK_URL = f"https://127.0.0.1:{free_port()}"


def collections_env() -> dict:
    """The installed meshwright.mesh (as users install it) and kubernetes.core, which the
    `ansible` package brings into this Python's site-packages (pyproject's test extra)."""
    site_packages = os.path.dirname(os.path.dirname(ansible.__file__))
    assert os.path.isdir(os.path.join(site_packages, "ansible_collections", "kubernetes", "core")), \
        "kubernetes.core is missing: install the ansible package (pip install -e '.[test]')"
    env = playbook_env()
    return dict(env, ANSIBLE_COLLECTIONS_PATH=env["ANSIBLE_COLLECTIONS_PATH"] + os.pathsep + site_packages)


def run_role(folder, kubeconfig: str, extra: dict, *args: str) -> PlaybookRun:
    inventory = {"mesh_clusters": {"hosts": {"east": {"ansible_connection": "local", "ansible_python_interpreter": os.path.join(BIN, "python"),
                                                      "kubernetes_mesh_kubeconfig": kubeconfig}}}}
    (folder / "inventory.yml").write_text(yaml.safe_dump(inventory))
    (folder / "mesh_clusters.yml").write_text(PLAYBOOK)
    command = [os.path.join(BIN, "ansible-playbook"), "-i", str(folder / "inventory.yml"), str(folder / "mesh_clusters.yml"),
               "-e", json.dumps(extra), *args]
    return PlaybookRun(subprocess.run(command, cwd=ROOT, env=collections_env(), capture_output=True, text=True, timeout=600))


@pytest.fixture(scope="module")
def meshed(api_server, tmp_path_factory):
    """The role run twice on the cluster, then once with --check --diff and a changed label set."""
    folder = tmp_path_factory.mktemp("kubernetes-mesh")
    bundle = ca.make_root("cluster.local").certificate_pem().decode()
    extra = {"kubernetes_mesh_webhook_url": WEBHOOK_URL, "kubernetes_mesh_ca_bundle": bundle, "kubernetes_mesh_injection_namespaces": ["role-shop"]}
    client.CoreV1Api(api_server.api_client()).create_namespace({"metadata": {"name": "role-shop", "labels": {"team": "payments"}}})
    first = run_role(folder, api_server.kubeconfig, extra)
    second = run_role(folder, api_server.kubeconfig, extra)
    checked = run_role(folder, api_server.kubeconfig, {**extra, "kubernetes_mesh_injection_namespaces": ["role-shop", "role-orders"]}, "--check", "--diff")
    yield first, second, checked, bundle
    # The session's other tests share this API server: no webhook of a control plane that is not there.
    admission = client.AdmissionregistrationV1Api(api_server.api_client())
    admission.delete_validating_webhook_configuration("meshwright-validation")
    admission.delete_mutating_webhook_configuration("meshwright-injection")


def test_the_first_run_meshes_the_cluster_and_the_second_changes_nothing(meshed):
    first, second, dummy, dummy_bundle = meshed
    assert first.returncode == 0, str(first)
    assert first.changed()["east"] > 0, str(first)
    assert second.returncode == 0, str(second)
    assert second.changed() == {"east": 0}, str(second)


def test_every_crd_of_meshwright_is_established(api_server, meshed):
    crds = client.ApiextensionsV1Api(api_server.api_client()).list_custom_resource_definition().items
    ours = {crd.metadata.name: {c.type: c.status for c in crd.status.conditions} for crd in crds if crd.spec.group.endswith(".istio.io")}
    assert len(ours) == 12 and all(conditions.get("Established") == "True" for conditions in ours.values()), ours
    assert "virtualservices.networking.istio.io" in ours and "telemetries.telemetry.istio.io" in ours


def test_the_webhooks_call_the_control_plane_and_trust_the_mesh_ca(api_server, meshed):
    bundle = meshed[3]
    admission = client.AdmissionregistrationV1Api(api_server.api_client())
    [validation] = admission.read_validating_webhook_configuration("meshwright-validation").webhooks
    [injection] = admission.read_mutating_webhook_configuration("meshwright-injection").webhooks
    assert validation.client_config.url == f"{WEBHOOK_URL}/validate" and injection.client_config.url == f"{WEBHOOK_URL}/inject"
    assert base64.b64decode(validation.client_config.ca_bundle).decode() == bundle == base64.b64decode(injection.client_config.ca_bundle).decode()
    assert validation.rules[0].api_groups == ["networking.istio.io", "security.istio.io", "telemetry.istio.io"]
    assert injection.namespace_selector.match_labels == {"istio-injection": "enabled"} and injection.rules[0].resources == ["pods"]


def test_injected_namespaces_are_labelled_and_keep_their_own_labels(api_server, meshed):
    labels = client.CoreV1Api(api_server.api_client()).read_namespace("role-shop").metadata.labels
    assert labels["istio-injection"] == "enabled" and labels["team"] == "payments"


def test_check_diff_reports_a_change_and_makes_none(api_server, meshed):
    checked = meshed[2]
    assert checked.returncode == 0, str(checked)
    assert checked.changed() == {"east": 1}, str(checked)
    assert "role-orders" in checked.output and "istio-injection" in checked.output
    names = {ns.metadata.name for ns in client.CoreV1Api(api_server.api_client()).list_namespace().items}
    assert "role-orders" not in names  # a server-side dry run


def control_plane_token(api_server) -> str:
    core = client.CoreV1Api(api_server.api_client())
    request = core.create_namespaced_service_account_token("meshwright", "meshwright-system", {"spec": {"audiences": [], "expirationSeconds": 3600}})
    return request.status.token


def test_the_control_plane_identity_reads_what_its_registry_watches_and_nothing_more(api_server, meshed):
    token = control_plane_token(api_server)
    registry = KubernetesRegistry("kubernetes/east", api_server.configuration(token))
    views = []
    registry.start(views.append)
    try:
        deadline = time.monotonic() + 20
        while not registry.synced():
            assert time.monotonic() < deadline, "the registry did not sync with the control plane's RBAC"
            time.sleep(0.1)
    finally:
        registry.stop()
    roots = ca.make_root("cluster.local").certificate_pem().decode()
    publisher = RootCertPublisher("kubernetes/east", api_server.configuration(token), lambda: roots)
    publisher.start()
    try:
        admin = client.CoreV1Api(api_server.api_client())
        wait_until(lambda: _held_roots(admin, "role-shop") == roots, "the roots published with the control plane's RBAC")
    finally:
        publisher.stop()
    as_plane = api_server.api_client(token)
    review = client.AuthenticationV1Api(as_plane).create_token_review({"spec": {"token": token}})
    assert review.status.authenticated and review.status.user.username == "system:serviceaccount:meshwright-system:meshwright"
    core = client.CoreV1Api(as_plane)
    admin.create_namespaced_config_map("role-shop", {"metadata": {"name": "app-settings"}, "data": {"a": "b"}})
    for refused in (lambda: core.list_secret_for_all_namespaces(), lambda: core.read_namespace("role-shop"),
                    lambda: core.list_config_map_for_all_namespaces(),
                    lambda: core.patch_namespaced_config_map("app-settings", "role-shop", {"data": {"a": "c"}}),
                    lambda: core.create_namespaced_pod("role-shop", {"metadata": {"name": "x"}, "spec": {"containers": [{"name": "a", "image": "b"}]}}),
                    lambda: client.CustomObjectsApi(as_plane).create_namespaced_custom_object(
                        "networking.istio.io", "v1", "role-shop", "virtualservices", {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                                                                                   "metadata": {"name": "x"}, "spec": {"hosts": ["x"]}})):
        with pytest.raises(client.ApiException) as error:
            create_retrying(refused)
        assert error.value.status == 403


def _held_roots(core: client.CoreV1Api, namespace: str) -> str | None:
    try:
        return core.read_namespaced_config_map("istio-ca-root-cert", namespace).data["root-cert.pem"]
    except client.ApiException:
        return None


def wait_until(condition, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.1)


def test_a_webhook_address_that_is_not_https_stops_the_run_before_any_change(api_server, tmp_path):
    run = run_role(tmp_path, api_server.kubeconfig, {"kubernetes_mesh_webhook_url": "http://127.0.0.1:15017", "kubernetes_mesh_ca_bundle": "x"})
    assert run.returncode != 0
    assert "kubernetes_mesh_webhook_url must be https://HOST:PORT of the control plane's webhook server (not \"http://127.0.0.1:15017\")" in run.output
    assert run.changed() == {"east": 0}
