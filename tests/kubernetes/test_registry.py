"""The Kubernetes registry on a real API server: it lists and watches Services, pods,
EndpointSlices (written here as the endpoint controller would) and Istio resources, and
publishes what they mean to the mesh as they change; an expired watch (410 Gone from the
API server) lists again."""

from __future__ import annotations

import threading
import time

import pytest
from kubernetes import client

from meshwright.registry.kubernetes import mesh_resources
from meshwright.serve.kubernetes import Gone, KubernetesRegistry
from meshwright.serve.registries import ViewChanges, view_after
from tests.kubernetes.api_server import create_retrying

NAMESPACE = "registry"
TIMEOUT = 15


class Published:
    """The registry's view as its publishes left it (a whole list, then what changed), and a
    wait for a condition on it."""

    def __init__(self):
        self.view, self.count, self.updates = {}, 0, []
        self._changed = threading.Condition()

    def __call__(self, update):
        with self._changed:
            self.view, self.count = view_after(self.view, update), self.count + 1
            self.updates.append(update)
            self._changed.notify_all()

    def by_ref(self) -> dict:
        return {r.ref: r for r in self.view.values()}

    def wait_for(self, condition, what: str):
        deadline = time.monotonic() + TIMEOUT
        with self._changed:
            while not condition(self.by_ref()):
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"the registry did not publish {what} in {TIMEOUT} s; it published: {sorted(self.by_ref())}")
                self._changed.wait(left)
        return self.by_ref()


@pytest.fixture(scope="module")
def cluster(api_server, crds):
    core = client.CoreV1Api(api_server.api_client())
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
    return api_server


@pytest.fixture
def registry(cluster):
    published = Published()
    registry = KubernetesRegistry("kubernetes/test", cluster.configuration())
    registry.start(published)
    yield registry, published
    registry.stop()


def make_service(api, name: str):
    client.CoreV1Api(api).create_namespaced_service(NAMESPACE, {
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": 8000}]}})


def make_pod(api, name: str, app: str, ip: str, ready: bool = True):
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(NAMESPACE, {"metadata": {"name": f"{name}-sa"}})
    core.create_namespaced_pod(NAMESPACE, {
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"serviceAccountName": f"{name}-sa", "containers": [{"name": "app", "image": "local.test/tools:1"}]}})
    set_pod_status(api, name, ip, ready)


def set_pod_status(api, name: str, ip: str, ready: bool, namespace: str = NAMESPACE):
    """What the kubelet would report (no kubelet runs beside this API server)."""
    client.CoreV1Api(api).patch_namespaced_pod_status(name, namespace, {"status": {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}})


def write_slice(api, service: str, endpoints: list[tuple[str, str, dict]], namespace: str = NAMESPACE):
    """The EndpointSlice the endpoint-slice controller would write for service."""
    body = {"metadata": {"name": f"{service}-abcde", "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": conditions, "targetRef": {"kind": "Pod", "namespace": namespace, "name": pod}}
                          for pod, ip, conditions in endpoints]}
    discovery = client.DiscoveryV1Api(api)
    try:
        current = discovery.read_namespaced_endpoint_slice(body["metadata"]["name"], namespace)
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        discovery.replace_namespaced_endpoint_slice(body["metadata"]["name"], namespace, body)
    except client.ApiException as error:
        if error.status != 404:
            raise
        discovery.create_namespaced_endpoint_slice(namespace, body)


def not_ready(entry) -> bool:
    return entry.annotations.get("meshwright.io/endpoint") == "not-ready"


def test_services_and_pods_become_mesh_resources_and_follow_endpoint_slices(cluster, registry):
    api = cluster.api_client()
    _, published = registry
    make_service(api, "cart")
    make_pod(api, "cart-a", "cart", "10.244.0.11")
    make_pod(api, "cart-b", "cart", "10.244.0.12", ready=False)

    seen = published.wait_for(lambda r: "WorkloadEntry/registry/cart-b" in r and "ServiceEntry/registry/cart" in r, "the Service and both pods")
    assert seen["ServiceEntry/registry/cart"].spec["workloadSelector"] == {"labels": {"app": "cart"}}
    assert seen["ServiceEntry/registry/cart"].source.file == "kubernetes/test:Service/registry/cart"
    assert seen["WorkloadEntry/registry/cart-a"].spec == {"address": "10.244.0.11", "labels": {"app": "cart"}, "serviceAccount": "cart-a-sa"}
    assert not not_ready(seen["WorkloadEntry/registry/cart-a"]) and not_ready(seen["WorkloadEntry/registry/cart-b"])

    # The endpoint controller's view wins over the pods' conditions: b ready, a terminating.
    write_slice(api, "cart", [("cart-a", "10.244.0.11", {"ready": False, "serving": True, "terminating": True}),
                              ("cart-b", "10.244.0.12", {"ready": True, "serving": True, "terminating": False})])
    seen = published.wait_for(lambda r: not_ready(r["WorkloadEntry/registry/cart-a"]) and not not_ready(r["WorkloadEntry/registry/cart-b"]),
                              "cart-a terminating and cart-b ready")
    # A slice's change publishes the pods it lists, not the cluster's view.
    assert isinstance(published.updates[-1], ViewChanges)
    assert set(published.updates[-1].changes) <= {("WorkloadEntry", NAMESPACE, "cart-a"), ("WorkloadEntry", NAMESPACE, "cart-b")}

    client.CoreV1Api(api).delete_namespaced_pod("cart-a", NAMESPACE, grace_period_seconds=0)
    published.wait_for(lambda r: "WorkloadEntry/registry/cart-a" not in r, "cart-a gone once deleted")
    assert published.updates[-1] == ViewChanges({("WorkloadEntry", NAMESPACE, "cart-a"): None})
    wait_for_the_whole_translation(*registry)
    client.CoreV1Api(api).delete_namespaced_service("cart", NAMESPACE)
    published.wait_for(lambda r: "ServiceEntry/registry/cart" not in r, "the ServiceEntry gone with its Service")
    wait_for_the_whole_translation(*registry)


def wait_for_the_whole_translation(registry, published) -> None:
    """The view the registry's changes built is the cluster's translated whole."""
    def whole() -> dict:
        with registry._lock:
            return {r.ref: r for r in mesh_resources(registry.name, registry.view)}
    published.wait_for(lambda r: r == whole(), "the view the changes built, equal to the whole translation")


def test_istio_resources_in_the_cluster_are_published(cluster, registry):
    _, published = registry
    objects = client.CustomObjectsApi(cluster.api_client())
    create_retrying(lambda: objects.create_namespaced_custom_object("networking.istio.io", "v1beta1", NAMESPACE, "destinationrules", {
        "apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule", "metadata": {"name": "cart"},
        "spec": {"host": "cart.registry.svc.cluster.local", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}}))

    try:
        seen = published.wait_for(lambda r: "DestinationRule/registry/cart" in r, "the DestinationRule")
    finally:  # other tests read the whole cluster into a mesh, where this rule's host is unknown
        objects.delete_namespaced_custom_object("networking.istio.io", "v1", NAMESPACE, "destinationrules", "cart")
    rule = seen["DestinationRule/registry/cart"]
    assert rule.api_version == "networking.istio.io/v1"  # read in the stored version, whatever it was written in
    assert rule.spec == {"host": "cart.registry.svc.cluster.local", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}
    assert rule.source.file == "kubernetes/test:DestinationRule/registry/cart"


def test_istio_resources_already_there_are_listed_with_their_kind(cluster):
    objects = client.CustomObjectsApi(cluster.api_client())
    create_retrying(lambda: objects.create_namespaced_custom_object("security.istio.io", "v1", NAMESPACE, "peerauthentications", {
        "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication", "metadata": {"name": "strict"}, "spec": {"mtls": {"mode": "STRICT"}}}))
    published = Published()
    registry = KubernetesRegistry("kubernetes/listed", cluster.configuration())
    registry.start(published)
    try:
        seen = published.wait_for(lambda r: "PeerAuthentication/registry/strict" in r, "the PeerAuthentication listed")
        assert (seen["PeerAuthentication/registry/strict"].api_version, seen["PeerAuthentication/registry/strict"].spec) == (
            "security.istio.io/v1", {"mtls": {"mode": "STRICT"}})
    finally:
        registry.stop()
        objects.delete_namespaced_custom_object("security.istio.io", "v1", NAMESPACE, "peerauthentications", "strict")


def test_an_expired_watch_lists_again_and_forgets_what_was_deleted_meanwhile(cluster, monkeypatch):
    """While the pods' watch is away, one pod is deleted and one created; its return finds
    the resourceVersion expired (410 Gone), and the relist replaces what was known."""
    api = cluster.api_client()
    make_pod(api, "old", "old", "10.244.0.30")
    published = Published()
    registry = KubernetesRegistry("kubernetes/expired", cluster.configuration())
    away, back = threading.Event(), threading.Event()
    watch = registry._watch

    def watch_away_then_expired(kind, version):
        if kind.name == "Pod" and not back.is_set():
            away.set()
            back.wait(TIMEOUT)
            back.set()
            raise Gone("too old resource version")
        return watch(kind, version)

    monkeypatch.setattr(registry, "_watch", watch_away_then_expired)
    registry.start(published)
    try:
        published.wait_for(lambda r: "WorkloadEntry/registry/old" in r, "the pod listed first")
        assert away.wait(TIMEOUT)
        client.CoreV1Api(api).delete_namespaced_pod("old", NAMESPACE, grace_period_seconds=0)
        make_pod(api, "new", "new", "10.244.0.31")
        back.set()
        published.wait_for(lambda r: "WorkloadEntry/registry/new" in r and "WorkloadEntry/registry/old" not in r, "the relisted pods")
        assert registry.relists == {"Pod": 1}
    finally:
        registry.stop()


def test_a_watch_error_event_of_410_is_gone(cluster):
    """The API server's own shape of an expired watch (a Status in an ERROR event)."""
    registry = KubernetesRegistry("kubernetes/events", cluster.configuration())
    pods = next(kind for kind in registry._kinds if kind.name == "Pod")
    expired = {"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                           "message": "too old resource version: 1 (215)", "reason": "Expired", "code": 410}}
    with pytest.raises(Gone, match="too old resource version"):
        registry._apply_event(pods, expired, "300")
