"""The mesh across a real Kubernetes node and a VM, end to end.

One node for the module (tests/kubernetes_node/node.py: the whole envtest node, the proxy image
built here and imported). `meshwright serve` runs on the host as a user runs it: mTLS, its CSR
service (a pod's first certificate on its projected token, reviewed by the API server), the
Kubernetes registry, the injection webhook (its serving certificate issued by serve from the
mesh CA, the API server trusting the mesh's roots), and the mesh's
roots in every namespace (the ConfigMap istio-ca-root-cert the pods mount). The VM is a
sidecar on the host (a WorkloadEntry of the mesh files, at the node's bridge address, its
certificate from a join token) in front of an app on loopback.

The service `reviews` (a Kubernetes Service in the namespace `mesh`) has two versions: v1 is the
VM (its labels match the Service's selector, as Istio lets a Service select WorkloadEntries),
v2 two pods of a Deployment, injected by the webhook (iptables capture by the init container,
Envoy as uid 1337). A VirtualService sends 30 % to v1 and 70 % to v2; an AuthorizationPolicy
lets only the service accounts productpage (a pod) and reviews-vm (the VM) call it.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time

import pytest
import yaml
from kubernetes import client

from meshwright.cli import main as meshwright_main
from meshwright.pki import ca, csr, workload
from meshwright.pki.ca import certificate_pem
from meshwright.pki.spiffe import control_plane_spiffe_id
from meshwright.validate.crds import ISTIO_CRDS
from tests.constant_load import ConstantLoad
from tests.harness import Backend, Envoy, free_offset, free_port, request
from tests.kubernetes_node.node import NODE_ADDRESS, start_node, stop_node

NAMESPACE = "mesh"
HOST = f"reviews.{NAMESPACE}.svc.cluster.local"
TRUST_DOMAIN = "cluster.local"
APP_PORT = 8000  # the pods' app (busybox httpd) and the VM's inbound port on the bridge
V1_WEIGHT, V2_WEIGHT = 30, 70
VM_MESH = """\
apiVersion: meshwright.io/v1alpha1
kind: MeshConfig
metadata: {{name: mesh}}
spec:
  certificates: {{dir: ../certs}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: reviews-vm
  namespace: mesh
  annotations: {{meshwright.io/port-offset: "{offset}"}}
spec: {{address: {address}, ports: {{http: {port}}}, labels: {{app: reviews, version: v1}}, serviceAccount: reviews-vm}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: reviews-vm, namespace: mesh}}
spec:
  workloadSelector: {{labels: {{app: reviews, version: v1}}}}
  ingress:
  - port: {{number: {port}, protocol: HTTP, name: http}}
    bind: {address}
    defaultEndpoint: 127.0.0.1:{app}
"""
# The v2 app: busybox httpd answering its pod's name; ready while /tmp/ready exists; on deletion it
# keeps serving for 3 s (preStop), while the endpoint leaves every client.
REVIEWS_V2 = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "reviews-v2", "namespace": NAMESPACE},
    "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "reviews", "version": "v2"}},
             "template": {"metadata": {"labels": {"app": "reviews", "version": "v2"}}, "spec": {
                 "serviceAccountName": "reviews", "terminationGracePeriodSeconds": 20,
                 "containers": [{
                     "name": "app", "image": "local.test/tools:1", "imagePullPolicy": "Never",
                     "command": ["sh", "-c", 'mkdir -p /tmp/www && printf \'{"instance": "%s", "version": "v2"}\' "$HOSTNAME" > /tmp/www/index.html '
                                             f'&& touch /tmp/ready && exec httpd -f -p {APP_PORT} -h /tmp/www'],
                     "ports": [{"containerPort": APP_PORT, "name": "http"}],
                     "readinessProbe": {"exec": {"command": ["test", "-f", "/tmp/ready"]}, "periodSeconds": 1, "failureThreshold": 1},
                     "lifecycle": {"preStop": {"exec": {"command": ["sleep", "3"]}}},
                 }]}}}}
ISTIO = f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: {NAMESPACE}}}
spec:
  host: {HOST}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: {NAMESPACE}}}
spec:
  hosts: [{HOST}]
  http:
  - route:
    - {{destination: {{host: {HOST}, subset: v1}}, weight: {V1_WEIGHT}}}
    - {{destination: {{host: {HOST}, subset: v2}}, weight: {V2_WEIGHT}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: reviews-callers, namespace: {NAMESPACE}}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
  action: ALLOW
  rules:
  - from:
    - source: {{principals: [{TRUST_DOMAIN}/ns/{NAMESPACE}/sa/productpage, {TRUST_DOMAIN}/ns/{NAMESPACE}/sa/reviews-vm]}}
"""
WAIT = 90


def _write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


class Mesh:
    """The node, the control plane on the host, the VM (app + agent + Envoy), the cluster's objects."""

    def __init__(self, folder):
        self.folder = folder
        self.processes: list[subprocess.Popen] = []
        self.vm_app = Backend("reviews", "reviews-vm", version="v1")
        self.envoy = None
        self.node = start_node()
        self.api = self.node.api
        self.core = client.CoreV1Api(self.api.api_client())

    # ---- the control plane ----
    def start_control_plane(self) -> None:
        folder = self.folder
        root = ca.make_root(TRUST_DOMAIN)
        site = ca.make_intermediate(root, "site-node", trust_domains=[TRUST_DOMAIN])
        self.roots = certificate_pem(root.certificate)
        plane_key = csr.make_private_key()
        plane_chain = workload.sign_csr(csr.make_csr(plane_key, control_plane_spiffe_id(TRUST_DOMAIN)), control_plane_spiffe_id(TRUST_DOMAIN), site)
        self.offset = free_offset()
        self.mesh_dir = folder / "mesh"
        self.mesh_dir.mkdir()
        (self.mesh_dir / "vm.yaml").write_text(VM_MESH.format(offset=self.offset, address=NODE_ADDRESS, port=APP_PORT, app=self.vm_app.port))
        self.xds, self.csr, self.webhook, self.status = free_port(), free_port(), free_port(), free_port()
        self.tokens = folder / "tokens"
        self.serve_log = open(folder / "serve.log", "w")  # pylint: disable=consider-using-with
        self.processes.append(subprocess.Popen([  # pylint: disable=consider-using-with
            sys.executable, "-m", "meshwright.cli", "serve", "--mesh", str(self.mesh_dir),
            "--listen", f"{NODE_ADDRESS}:{self.xds}", "--status-listen", f"127.0.0.1:{self.status}",
            "--tls-cert", _write(folder / "plane.pem", plane_chain), "--tls-key", _write(folder / "plane.key", plane_key),
            "--ca", _write(folder / "roots.pem", self.roots),
            "--signing-cert", _write(folder / "site.pem", site.certificate_pem() + site.parents_pem()),
            "--signing-key", _write(folder / "site.key", site.key_pem()),
            "--csr-listen", f"{NODE_ADDRESS}:{self.csr}", "--join-listen", f"{NODE_ADDRESS}:{self.csr + 1}", "--join-tokens", str(self.tokens),
            "--kubeconfig", f"node={self.api.kubeconfig}",
            # the webhook's certificate: issued by serve from the mesh CA for NODE_ADDRESS (the caBundle: the mesh's roots)
            "--webhook-listen", f"{NODE_ADDRESS}:{self.webhook}",
            "--proxy-image", self.node.proxy_image, "--injection-xds", f"{NODE_ADDRESS}:{self.xds}",
            "--injection-csr", f"{NODE_ADDRESS}:{self.csr}"], stdout=self.serve_log, stderr=subprocess.STDOUT))
        self.wait_for(lambda: self.serve_status() is not None, "the control plane's status endpoint")

    def serve_status(self) -> dict | None:
        try:
            return json.loads(subprocess.run(["curl", "-fsS", f"http://127.0.0.1:{self.status}/status"], capture_output=True,
                                             text=True, check=True, timeout=5).stdout)
        except (subprocess.CalledProcessError, ValueError):
            return None

    # ---- the cluster ----
    def apply(self, text: str) -> None:
        self.api.kubectl("apply", "-f", "-", input=text)

    def set_up_cluster(self) -> None:
        crds = self.folder / "crds.yaml"
        assert meshwright_main(["crds", "--out", str(crds)]) == 0
        self.api.kubectl("apply", "--server-side", "-f", str(crds))
        self.api.kubectl("wait", "--for=condition=Established", "--timeout=30s", "-f", str(crds))
        self.apply(json.dumps({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE, "labels": {"istio-injection": "enabled"}}},
            *({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": NAMESPACE}}
              for name in ("reviews", "productpage", "other")),
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "reviews", "namespace": NAMESPACE},
             "spec": {"selector": {"app": "reviews"}, "ports": [{"name": "http", "port": 80, "targetPort": APP_PORT}]}},
            {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration", "metadata": {"name": "meshwright-sidecar-injector"},
             "webhooks": [{"name": "injection.meshwright.io", "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Fail",
                           "clientConfig": {"url": f"https://{NODE_ADDRESS}:{self.webhook}/inject",
                                            "caBundle": base64.b64encode(self.roots).decode()},
                           "namespaceSelector": {"matchLabels": {"istio-injection": "enabled"}},
                           "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]}]},
        ]}))
        self.apply(ISTIO)
        self.wait_for(self.roots_published, "the control plane's istio-ca-root-cert in the namespace", 20)
        self.cluster_ip = self.core.read_namespaced_service("reviews", NAMESPACE).spec.cluster_ip
        self.apply(json.dumps(REVIEWS_V2))
        for account in ("productpage", "other"):
            self.apply(json.dumps(self.client_pod(account)))
        ready = self.api.kubectl("-n", NAMESPACE, "wait", "--for=condition=Ready", "pod", "--all", "--timeout=50s", check=False)
        assert ready.returncode == 0, f"pods not ready within 50 s:\n{self.pods_report()}"

    def roots_published(self) -> bool:
        """The control plane has put the mesh's roots in the namespace (injected pods mount them)."""
        try:
            return self.core.read_namespaced_config_map("istio-ca-root-cert", NAMESPACE).data == {"root-cert.pem": self.roots.decode()}
        except client.ApiException:
            return False

    def pods_report(self) -> str:
        """The pods, and the last lines of their proxies' logs: what a failed start shows."""
        report = [self.api.kubectl("-n", NAMESPACE, "get", "pods", "-o", "wide", check=False).stdout]
        for pod in self.core.list_namespaced_pod(NAMESPACE).items:
            for container in ("istio-init", "istio-proxy"):
                logs = self.api.kubectl("-n", NAMESPACE, "logs", pod.metadata.name, "-c", container, "--tail=15", check=False)
                report.append(f"--- {pod.metadata.name} {container}:\n{logs.stdout}{logs.stderr}")
        return "\n".join(report)

    @staticmethod
    def client_pod(account: str) -> dict:
        """A pod that calls reviews (from_pod)."""
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": account, "namespace": NAMESPACE, "labels": {"app": account}},
                "spec": {"serviceAccountName": account, "terminationGracePeriodSeconds": 1,
                         "containers": [{"name": "app", "image": "local.test/tools:1", "imagePullPolicy": "Never", "command": ["sleep", "3600"]}]}}

    # ---- the VM ----
    def start_vm(self) -> None:
        proxy = f"reviews-vm.{NAMESPACE}"
        token = self.folder / "vm.token"
        assert meshwright_main(["join-token", "--mesh", str(self.mesh_dir), "--proxy", proxy, "--tokens-dir", str(self.tokens),
                                "--out", str(token)]) == 0
        certs = self.folder / "certs"
        self.processes.append(subprocess.Popen([  # pylint: disable=consider-using-with
            sys.executable, "-m", "meshwright.cli", "agent", "--server", f"{NODE_ADDRESS}:{self.csr}", "--proxy", proxy,
            "--certs-dir", str(certs), "--join-token-file", str(token), "--ca", str(self.folder / "roots.pem")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.wait_for(lambda: (certs / "cert-chain.pem").exists(), "the VM's first certificate")
        config = self.folder / "vm"
        assert meshwright_main(["xds-bootstrap", "--mesh", str(self.mesh_dir), "--proxy", proxy, "--xds", f"{NODE_ADDRESS}:{self.xds}",
                                "--certs-dir", str(certs), "--out", str(config / "bootstrap.yaml")]) == 0
        self.envoy = Envoy(str(config), 15000 + self.offset)

    @property
    def vm_outbound(self) -> int:
        return 15001 + self.offset

    def from_vm(self, count: int, host: str = HOST) -> list[tuple[int, str]]:
        """(status, instance) of count requests from the VM to reviews (or host)."""
        answers = []
        for _ in range(count):
            status, body, _ = request(self.vm_outbound, "/", host=host)
            answers.append((status, body.get("instance", body.get("raw", ""))))
        return answers

    def from_pod(self, pod: str, count: int) -> list[tuple[int, str]]:
        """(status, instance or body) of count requests from a pod's app container to reviews: to its
        Service's IP with the service's name as Host (no cluster DNS here, and the static busybox of the
        tools image cannot resolve names, and its wget -T crashes); the pod's capture sends them to its Envoy."""
        script = (f"for i in $(seq {count}); do rm -f /tmp/body; "
                  f"wget -S -O /tmp/body --header 'Host: {HOST}' http://{self.cluster_ip}/ 2>/tmp/headers; "
                  "echo \"$(grep -m1 'HTTP/1' /tmp/headers | awk '{print $2}') $(cat /tmp/body 2>/dev/null)\"; done")
        ran = self.api.kubectl("-n", NAMESPACE, "exec", pod, "-c", "app", "--", "sh", "-c", script)
        answers = []
        for line in ran.stdout.splitlines():
            status, _, body = line.partition(" ")
            try:
                body = json.loads(body).get("instance", body)
            except ValueError:
                pass
            answers.append((int(status or 0), body))
        return answers

    def v2_pods(self, ready_only: bool = False) -> list[str]:
        pods = self.core.list_namespaced_pod(NAMESPACE, label_selector="app=reviews,version=v2").items
        return sorted(p.metadata.name for p in pods if p.metadata.deletion_timestamp is None and (
            not ready_only or any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])))

    @staticmethod
    def wait_for(condition, what: str, timeout: float = WAIT) -> float:
        started = time.monotonic()
        while not condition():
            assert time.monotonic() - started < timeout, f"{what}: not within {timeout} s"
            time.sleep(0.1)
        return time.monotonic() - started

    def close(self) -> None:
        if self.envoy:
            self.envoy.stop()
        for process in reversed(self.processes):
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        self.vm_app.close()
        print(open(self.folder / "serve.log", encoding="utf-8").read()[-3000:] if (self.folder / "serve.log").exists() else "")
        stop_node(self.node)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    started = time.monotonic()
    lab = Mesh(tmp_path_factory.mktemp("node-mesh"))
    try:
        phases = {"node and proxy image": time.monotonic() - started}
        for phase, step in (("control plane", lab.start_control_plane), ("cluster, pods ready", lab.set_up_cluster), ("VM", lab.start_vm)):
            phases[phase] = Mesh.wait_for(lambda step=step: step() or True, phase)
        phases["VM reaches every instance"] = lab.wait_for(
            lambda: {i for s, i in lab.from_vm(20) if s == 200} >= {"reviews-vm", *lab.v2_pods()}, "reviews' three instances from the VM")
        print("set-up: " + ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in phases.items()))
        yield lab
    finally:
        lab.close()


def test_pods_are_injected_and_their_envoy_runs_as_uid_1337_behind_iptables_capture(mesh):
    pod = mesh.core.read_namespaced_pod(mesh.v2_pods()[0], NAMESPACE)
    assert [c.name for c in pod.spec.init_containers] == ["istio-init"]
    assert [c.name for c in pod.spec.containers] == ["app", "istio-proxy"]
    assert pod.spec.containers[1].image == mesh.node.proxy_image
    rules = mesh.api.kubectl("-n", NAMESPACE, "logs", pod.metadata.name, "-c", "istio-init").stdout
    assert "-A MESHWRIGHT_REDIRECT -p tcp -j REDIRECT --to-ports 15001" in rules
    envoys = subprocess.run(["ps", "-o", "uid=,args=", "-C", "envoy"], capture_output=True, text=True, check=False).stdout.splitlines()
    in_pods = [line.split(None, 1) for line in envoys if "/etc/istio/proxy/bootstrap.json" in line]
    assert len(in_pods) == 4 and {uid for uid, dummy in in_pods} == {"1337"}  # two reviews-v2, productpage, other


def inbound_handshakes(envoy: Envoy) -> int:
    """TLS handshakes Envoy's inbound listeners completed: mTLS from the mesh's proxies."""
    return sum(value for name, value in envoy.stats().items() if name.startswith("listener.") and name.endswith(".ssl.handshake"))


def test_a_pod_and_the_vm_call_each_other_through_the_mesh_with_mtls(mesh):
    handshakes = inbound_handshakes(mesh.envoy)
    from_pod = mesh.from_pod("productpage", 12)
    assert {status for status, dummy in from_pod} == {200}, from_pod
    assert {instance for dummy, instance in from_pod} == {"reviews-vm", *mesh.v2_pods()}  # the VM and both pods
    # The pod's proxy reached the VM's over TLS, and with the pod's own certificate: the VM's
    # proxy allows only the principals the AuthorizationPolicy names (a plaintext caller has none).
    assert inbound_handshakes(mesh.envoy) > handshakes
    from_vm = mesh.from_vm(12)
    assert {status for status, dummy in from_vm} == {200}
    assert set(mesh.v2_pods()) <= {instance for dummy, instance in from_vm}  # the pods allow the VM's principal: mTLS from it


def test_the_authorization_policy_refuses_another_service_account_with_403(mesh):
    refused = mesh.from_pod("other", 8)
    assert [status for status, dummy in refused] == [403] * 8, refused
    assert {status for status, dummy in mesh.from_pod("productpage", 4)} == {200}


def test_the_virtual_service_splits_between_the_vm_version_and_the_pod_version(mesh):
    answers = mesh.from_vm(300)
    assert {status for status, dummy in answers} == {200}
    to_vm = sum(1 for dummy, instance in answers if instance == "reviews-vm") / len(answers)
    print(f"v1 (VM) {to_vm:.1%}, v2 (pods) {1 - to_vm:.1%} of {len(answers)} (VirtualService: {V1_WEIGHT}/{V2_WEIGHT})")
    assert abs(to_vm - V1_WEIGHT / 100) < 0.1


def test_endpoints_follow_the_pods_readiness(mesh):
    first, second = mesh.v2_pods()
    mesh.api.kubectl("-n", NAMESPACE, "exec", first, "-c", "app", "--", "rm", "/tmp/ready")
    try:
        left = mesh.wait_for(lambda: first not in {i for s, i in mesh.from_vm(20)}, f"{first} not ready, out of the VM's endpoints", 20)
        assert {i for s, i in mesh.from_vm(30)} == {"reviews-vm", second}
    finally:
        mesh.api.kubectl("-n", NAMESPACE, "exec", first, "-c", "app", "--", "touch", "/tmp/ready")
    back = mesh.wait_for(lambda: first in {i for s, i in mesh.from_vm(20)}, f"{first} ready again, back in the VM's endpoints", 20)
    print(f"a pod turning not ready left the VM's endpoints in {left:.1f} s, came back in {back:.1f} s (probe period 1 s)")


def test_deleting_a_pod_under_constant_load_fails_no_request(mesh):
    doomed, kept = mesh.v2_pods()
    with ConstantLoad(mesh.vm_outbound, host=HOST, rate=40, max_seconds=60) as load:
        time.sleep(1)
        mesh.core.delete_namespaced_pod(doomed, NAMESPACE)
        mesh.wait_for(lambda: len(set(mesh.v2_pods(ready_only=True)) - {doomed, kept}) == 1, "the Deployment's new pod ready", 60)
        mesh.wait_for(lambda: not mesh.core.list_namespaced_pod(NAMESPACE, field_selector=f"metadata.name={doomed}").items, f"{doomed} gone", 30)
        time.sleep(1)
    print(f"{load.sent} requests at 40/s while {doomed} was deleted and replaced: {len(load.failures)} failed")
    assert load.sent > 100 and load.failures == []


HEALTH_HOST = f"health.{NAMESPACE}.svc.cluster.local"
HEALTH = f"""\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: health-strict, namespace: {NAMESPACE}}}
spec:
  selector: {{matchLabels: {{app: health}}}}
  mtls: {{mode: STRICT}}
---
apiVersion: v1
kind: Service
metadata: {{name: health, namespace: {NAMESPACE}}}
spec:
  selector: {{app: health}}
  ports: [{{name: http, port: 80, targetPort: {APP_PORT}}}]
"""


def health_pod(name: str, rewrite: bool) -> dict:
    """An app whose readiness is an httpGet probe on its own port (busybox httpd answering its name)."""
    annotations = {} if rewrite else {"sidecar.istio.io/rewriteAppHTTPProbers": "false"}
    app = REVIEWS_V2["spec"]["template"]["spec"]["containers"][0]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "health"},
                                                            "annotations": annotations},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                **{key: app[key] for key in ("name", "image", "imagePullPolicy", "command", "ports")},
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1}}]}}


def _ready(mesh, name: str) -> bool:
    pod = mesh.core.read_namespaced_pod(name, NAMESPACE)
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def test_an_http_readiness_probe_reaches_the_app_through_the_sidecar_under_strict_mtls(mesh):
    """Under STRICT mTLS the kubelet's plaintext probe of the app's port meets the inbound
    listener, which refuses it: the pod whose probe the injector sent through the sidecar's
    15020 becomes Ready and is served through the mesh; the one that opted out never does."""
    mesh.apply(HEALTH)
    mesh.apply(json.dumps({"apiVersion": "v1", "kind": "List", "items": [health_pod("health-rewritten", True), health_pod("health-kept", False)]}))
    try:
        ready = mesh.wait_for(lambda: _ready(mesh, "health-rewritten"), "health-rewritten Ready", 60)
        probe = mesh.core.read_namespaced_pod("health-rewritten", NAMESPACE).spec.containers[0].readiness_probe.http_get
        assert (probe.path, probe.port) == ("/app-health/app/readyz", 15020)
        mesh.wait_for(lambda: {s for s, i in mesh.from_vm(5, HEALTH_HOST)} == {200}, "health served to the VM", 30)
        answers = mesh.from_vm(20, HEALTH_HOST)
        assert answers == [(200, "health-rewritten")] * 20  # the pod that opted out is no endpoint
        kept = mesh.core.read_namespaced_pod("health-kept", NAMESPACE)
        assert kept.spec.containers[0].readiness_probe.http_get.port == "http" and not _ready(mesh, "health-kept")

        def app_probe_failures() -> list[str]:  # the kubelet's own probe of the app's port (not the sidecar's 15021)
            events = mesh.core.list_namespaced_event(NAMESPACE, field_selector="involvedObject.name=health-kept").items
            return [e.message for e in events if e.reason == "Unhealthy" and f":{APP_PORT}/" in (e.message or "")]

        mesh.wait_for(app_probe_failures, "health-kept's app probe failing", 30)
        assert not _ready(mesh, "health-kept")
        print(f"rewritten probe: Ready in {ready:.1f} s; the kept one still not ready, its probe: {app_probe_failures()[-1]}")
    finally:
        for kind, *names in (("pod", "health-rewritten", "health-kept"), ("service", "health"), ("peerauthentication", "health-strict")):
            mesh.api.kubectl("-n", NAMESPACE, "delete", kind, *names, "--ignore-not-found", "--wait=false", check=False)


CONTROL_PLANE_NAMESPACE = "meshwright-system"
STATUS_SCRIPT = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:15014/status', timeout=3).read().decode())"


def control_plane_cluster_role() -> dict:
    """The ClusterRole roles/kubernetes_mesh gives the control plane, its Istio kinds filled in
    from the CRDs as the role does: the test runs serve in the cluster with exactly those rights."""
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "roles", "kubernetes_mesh", "tasks", "access.yml"), encoding="utf-8") as tasks:
        role = next(d for task in yaml.safe_load(tasks) for d in task.get("kubernetes.core.k8s", {}).get("definition", [])
                    if d["kind"] == "ClusterRole")
    for rule in role["rules"]:
        if isinstance(rule["resources"], str):  # the role's Jinja: the plurals of the group's CRDs
            rule["resources"] = sorted(plural for group, dummy, plural, dummy2 in ISTIO_CRDS.values() if group == rule["apiGroups"][0])
    return role


def in_cluster_control_plane(image: str) -> list[dict]:
    """meshwright serve as a Deployment of the cluster, with the role's RBAC and in-cluster config."""
    labels = {"app": "meshwright"}
    # workload identity on (certificates): the cluster's AuthorizationPolicy names principals
    mesh = "apiVersion: meshwright.io/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\nspec: {trustDomain: cluster.local, certificates: {}}\n"
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": CONTROL_PLANE_NAMESPACE}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "meshwright", "namespace": CONTROL_PLANE_NAMESPACE}},
        control_plane_cluster_role(),
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "meshwright-control-plane"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "meshwright-control-plane"},
         "subjects": [{"kind": "ServiceAccount", "name": "meshwright", "namespace": CONTROL_PLANE_NAMESPACE}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "meshwright-mesh", "namespace": CONTROL_PLANE_NAMESPACE},
         "data": {"mesh.yaml": mesh}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "meshwright", "namespace": CONTROL_PLANE_NAMESPACE},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {
             "serviceAccountName": "meshwright", "terminationGracePeriodSeconds": 2,
             "containers": [{
                 "name": "serve", "image": image, "imagePullPolicy": "Never",
                 "command": ["python3", "-m", "meshwright.cli", "serve", "--mesh", "/etc/meshwright/mesh/mesh.yaml", "--plaintext-loopback",
                             "--listen", "127.0.0.1:15012", "--status-listen", "127.0.0.1:15014", "--in-cluster", "node"],
                 "env": [{"name": "PYTHONPATH", "value": "/opt/meshwright/lib"}, {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}],
                 "securityContext": {"runAsUser": 1337, "runAsNonRoot": True, "allowPrivilegeEscalation": False},
                 # the status endpoint listens on loopback only: asked from inside the pod
                 "readinessProbe": {"exec": {"command": ["python3", "-c", STATUS_SCRIPT]}, "periodSeconds": 2, "timeoutSeconds": 5},
                 "volumeMounts": [{"name": "mesh", "mountPath": "/etc/meshwright/mesh", "readOnly": True}]}],
             "volumes": [{"name": "mesh", "configMap": {"name": "meshwright-mesh"}}]}}}},
    ]


def test_the_control_plane_runs_in_the_cluster_with_its_service_account(mesh):
    """serve as a pod (`--in-cluster`): in-cluster config with its service account's token and
    only the role's RBAC; it sees the cluster's injected pods as proxies."""
    mesh.apply(json.dumps({"apiVersion": "v1", "kind": "List", "items": in_cluster_control_plane(mesh.node.proxy_image)}))
    try:
        ready = mesh.api.kubectl("-n", CONTROL_PLANE_NAMESPACE, "rollout", "status", "deployment/meshwright", "--timeout=45s", check=False)
        pod = mesh.core.list_namespaced_pod(CONTROL_PLANE_NAMESPACE, label_selector="app=meshwright").items[0]
        if ready.returncode != 0:
            described = mesh.api.kubectl("-n", CONTROL_PLANE_NAMESPACE, "describe", "pod", pod.metadata.name, check=False).stdout
            logs = mesh.api.kubectl("-n", CONTROL_PLANE_NAMESPACE, "logs", pod.metadata.name, check=False)
            pytest.fail(f"{ready.stdout}{ready.stderr}\n{described[-3000:]}\n{logs.stdout[-3000:]}{logs.stderr[-1000:]}", pytrace=False)

        def proxies() -> set[str]:
            status = mesh.api.kubectl("-n", CONTROL_PLANE_NAMESPACE, "exec", pod.metadata.name, "--", "python3", "-c", STATUS_SCRIPT, check=False)
            return {proxy["proxy"] for proxy in json.loads(status.stdout)["proxies"]} if status.returncode == 0 else set()

        expected = {f"{name}.{NAMESPACE}" for name in mesh.v2_pods()}
        try:
            seen = mesh.wait_for(lambda: expected <= proxies(), "the in-cluster control plane sees the injected pods", 30)
        except AssertionError as missed:
            logs = mesh.api.kubectl("-n", CONTROL_PLANE_NAMESPACE, "logs", pod.metadata.name, check=False).stdout
            raise AssertionError(f"{missed}; it sees {sorted(proxies())}; its log:\n{logs[-3000:]}") from None
        print(f"serve in a pod of the cluster: rolled out, and saw the injected pods {seen:.1f} s later")
    finally:
        mesh.api.kubectl("delete", "namespace", CONTROL_PLANE_NAMESPACE, "--wait=false", check=False)
        mesh.api.kubectl("delete", "clusterrolebinding,clusterrole", "meshwright-control-plane", "--ignore-not-found", check=False)
