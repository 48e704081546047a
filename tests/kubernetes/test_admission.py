"""The admission webhooks on a real API server, served by `meshwright serve --webhook-listen`
on this host over HTTPS. Validating: `kubectl apply` of an invalid VirtualService is refused
with the messages `meshwright validate` prints for the same file; a valid one is created.
Injecting: a pod created in a namespace labelled istio-injection=enabled gets its sidecar; a
pod that opts out, or one in another namespace, does not; a pod that cannot be injected is
refused with the reason."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import socket
import subprocess
import sys
import time

import pytest
import yaml

from meshwright.cli import main as meshwright_main
from tests.harness import free_port
from tests.kubernetes.webhook_certificates import write_webhook_certificates
from tests.unit.test_kube_inject import FLAGS, MANIFESTS

NAMESPACE = "admission"
BAD = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: admission
spec:
  hosts: [reviews.admission.svc.cluster.local]
  http:
  - match:
    - uri: {regex: "/api/([a-z+"}
    route:
    - destination: {host: reviews.admission.svc.cluster.local}
      weight: 60
    - destination: {host: reviews.admission.svc.cluster.local}
      weight: 30
    timeout: 3 seconds
    retry: {attempts: 3}
"""
# What the VirtualService routes to, for `meshwright validate` (the webhook checks no references).
SERVICE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: admission}
spec:
  hosts: [reviews.admission.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  location: MESH_INTERNAL
  resolution: STATIC
  workloadSelector: {labels: {app: reviews}}
---
"""
GOOD = BAD.replace("([a-z+", "[a-z]+").replace("3 seconds", "3s").replace("retry:", "retries:")
TIMEOUT = 20


def webhook_configuration(port: int, ca: bytes) -> str:
    return f"""\
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {{name: meshwright-test}}
webhooks:
- name: validation.meshwright.io
  clientConfig:
    url: https://127.0.0.1:{port}/validate
    caBundle: {base64.b64encode(ca).decode()}
  rules:
  - apiGroups: [networking.istio.io, security.istio.io, telemetry.istio.io]
    apiVersions: ["*"]
    operations: [CREATE, UPDATE]
    resources: ["*"]
  namespaceSelector:
    matchLabels: {{kubernetes.io/metadata.name: {NAMESPACE}}}
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Fail
  timeoutSeconds: 10
"""


PROXY_IMAGE = "local.test/meshwright-proxy:test"
INJECTED, PLAIN = "injected", "plain"


def injection_configuration(port: int, ca: bytes) -> str:
    return json.dumps({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "meshwright-injection-test"},
        "webhooks": [{"name": "injection.meshwright.io",
                      "clientConfig": {"url": f"https://127.0.0.1:{port}/inject", "caBundle": base64.b64encode(ca).decode()},
                      "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
                      "namespaceSelector": {"matchLabels": {"istio-injection": "enabled"}},
                      "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Fail", "reinvocationPolicy": "Never"}]})


@pytest.fixture(scope="module")
def webhook(api_server, crds, tmp_path_factory):
    folder = tmp_path_factory.mktemp("webhook")
    cert, key, ca = write_webhook_certificates(folder)
    (folder / "mesh").mkdir()
    (folder / "mesh" / "mesh.yaml").write_text(SERVICE)
    port = free_port()
    log = open(folder / "serve.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "meshwright.cli", "serve", "--mesh", str(folder / "mesh"), "--plaintext-loopback",
                               "--listen", f"127.0.0.1:{free_port()}", "--status-listen", f"127.0.0.1:{free_port()}",
                               "--webhook-listen", f"127.0.0.1:{port}", "--webhook-cert", cert, "--webhook-key", key,
                               "--proxy-image", PROXY_IMAGE, "--injection-xds", "10.244.0.1:15012", "--injection-csr", "10.244.0.1:15017"],
                              stdout=log, stderr=subprocess.STDOUT)
    wait_for_port(port, server, folder / "serve.log")
    api_server.kubectl("create", "namespace", NAMESPACE)
    api_server.kubectl("apply", "-f", "-", input=webhook_configuration(port, ca))
    for namespace, labels in ((INJECTED, {"istio-injection": "enabled"}), (PLAIN, {})):
        api_server.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}}))
        api_server.kubectl("create", "serviceaccount", "default", "-n", namespace)
    api_server.kubectl("apply", "-f", "-", input=injection_configuration(port, ca))
    try:
        yield api_server
    finally:  # other tests read the whole cluster into a mesh, where the VirtualService's host is unknown
        api_server.kubectl("delete", "virtualservices", "--all", "-n", NAMESPACE, check=False)
        api_server.kubectl("delete", "validatingwebhookconfiguration", "meshwright-test", check=False)
        api_server.kubectl("delete", "mutatingwebhookconfiguration", "meshwright-injection-test", check=False)
        server.terminate()
        server.wait(timeout=15)
        log.close()


def wait_for_port(port: int, server: subprocess.Popen, log_path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"meshwright serve's webhook does not listen on {port}:\n{log_path.read_text()}", pytrace=False)
            time.sleep(0.1)


def validate_messages(path) -> list[str]:
    """`meshwright validate FILE`'s problems without their FILE:LINE."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert meshwright_main(["validate", str(path)]) == 1
    return [line.split(": ", 1)[1] for line in err.getvalue().splitlines() if line.startswith(str(path))]


def apply_refused(api_server, text: str) -> subprocess.CompletedProcess:
    """kubectl apply, again until the API server calls the new webhook (it learns of a new
    configuration within a second or so)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        applied = api_server.kubectl("apply", "-f", "-", input=text, check=False)
        if applied.returncode != 0 or time.monotonic() > deadline:
            return applied
        api_server.kubectl("delete", "-f", "-", input=text, check=False)
        time.sleep(0.3)


def test_an_invalid_virtual_service_is_refused_at_apply_with_meshwrights_messages(webhook, tmp_path):
    (tmp_path / "bad.yaml").write_text(SERVICE + BAD)
    expected = validate_messages(tmp_path / "bad.yaml")
    errors = [message for message in expected if ": warning: " not in message]
    assert len(errors) == 3  # the regex, the timeout, the misspelt retries

    refused = apply_refused(webhook, BAD)

    assert refused.returncode == 1
    assert 'admission webhook "validation.meshwright.io" denied the request' in refused.stderr
    for message in errors:
        assert message in refused.stderr
    assert webhook.kubectl("get", "virtualservices", "-n", NAMESPACE, "-o", "name").stdout == ""


def test_a_valid_virtual_service_is_created(webhook):
    apply_refused(webhook, BAD)  # the webhook answers by now
    created = webhook.kubectl("apply", "-f", "-", input=GOOD)
    assert "virtualservice.networking.istio.io/reviews created" in created.stdout
    # What `meshwright validate` warns of, kubectl shows as the API server's warnings.
    assert "Warning: VirtualService/admission/reviews: spec.http[0].route: weights sum to 90 (60 + 30), not 100" in created.stderr


def pod(name: str, **spec) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, **spec.pop("metadata", {})},
                       "spec": {"containers": [{"name": "app", "image": "local.test/tools:1"}], **spec}})


def created_containers(api_server, namespace: str, text: str, injected: bool = True) -> list[str]:
    """Create the pod, its containers' names; one that must be injected is created again
    until the API server calls the new webhook (it learns of it within a second or so)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        api_server.kubectl("apply", "-n", namespace, "-f", "-", input=text)
        made = json.loads(api_server.kubectl("get", "pod", "-n", namespace, "-o", "json", json.loads(text)["metadata"]["name"]).stdout)
        names = [c["name"] for c in made["spec"].get("initContainers", []) + made["spec"]["containers"]]
        if not injected or "istio-proxy" in names or time.monotonic() > deadline:
            return names
        api_server.kubectl("delete", "pod", "-n", namespace, "--grace-period=0", made["metadata"]["name"])
        time.sleep(0.3)


def test_a_pod_in_an_injection_namespace_gets_its_sidecar(webhook):
    assert created_containers(webhook, INJECTED, pod("web")) == ["istio-init", "app", "istio-proxy"]
    made = json.loads(webhook.kubectl("get", "pod", "web", "-n", INJECTED, "-o", "json").stdout)
    proxy = made["spec"]["containers"][1]
    assert proxy["image"] == PROXY_IMAGE and proxy["securityContext"]["runAsUser"] == 1337
    assert made["metadata"]["labels"]["security.istio.io/tlsMode"] == "istio"


def test_pods_that_opt_out_or_live_elsewhere_are_not_injected(webhook):
    created_containers(webhook, INJECTED, pod("warm-up"))  # the webhook answers by now
    opted_out = pod("batch", metadata={"labels": {"sidecar.istio.io/inject": "false"}})
    assert created_containers(webhook, INJECTED, opted_out, injected=False) == ["app"]
    assert created_containers(webhook, PLAIN, pod("elsewhere"), injected=False) == ["app"]


def test_a_pod_that_cannot_be_injected_is_refused_with_the_reason(webhook):
    created_containers(webhook, INJECTED, pod("warm-up-2"))
    refused = webhook.kubectl("apply", "-n", INJECTED, "-f", "-", input=pod("on-host", hostNetwork=True), check=False)
    assert refused.returncode == 1
    assert ('admission webhook "injection.meshwright.io" denied the request: meshwright cannot inject this pod: '
            "spec.hostNetwork: a pod on the host's network cannot be injected") in refused.stderr


def test_kube_injected_workloads_of_every_kind_are_accepted_by_the_api_server(webhook, tmp_path):
    """`meshwright kube-inject`'s output passes the real API server's validation (a server-side dry run)."""
    (tmp_path / "workloads.yaml").write_text(yaml.safe_dump_all(MANIFESTS))
    injected = subprocess.run([sys.executable, "-m", "meshwright.cli", "kube-inject", "-f", str(tmp_path / "workloads.yaml"), *FLAGS],
                              capture_output=True, text=True, timeout=60)
    assert injected.returncode == 0, injected.stderr
    applied = webhook.kubectl("apply", "--dry-run=server", "-n", PLAIN, "-f", "-", input=injected.stdout, check=False)
    assert applied.returncode == 0, applied.stderr
    for created in ("pod/p", "deployment.apps/d", "statefulset.apps/s", "daemonset.apps/ds", "job.batch/j", "cronjob.batch/c", "service/web"):
        assert f"{created} created (server dry run)" in applied.stdout
