"""Kubernetes objects (their JSON as the API server sends it) become mesh resources: a
Service a ServiceEntry that selects pods and VMs alike, a pod a WorkloadEntry whose readiness
follows its EndpointSlices; served through the control plane beside the mesh files."""

from __future__ import annotations

import copy

from meshwright.compile.incremental import assignment_named
from meshwright.registry.kubernetes import ClusterView, mesh_resources, port_protocol
from meshwright.serve.plane import ControlPlane
from meshwright.serve.source import load_valid

REGISTRY = "kubernetes/c1"

SERVICE = {
    "apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "reviews", "namespace": "shop", "uid": "5c2f", "resourceVersion": "412", "creationTimestamp": "2026-12-07T17:00:00Z"},
    "spec": {"clusterIP": "10.0.0.17", "clusterIPs": ["10.0.0.17"], "type": "ClusterIP", "sessionAffinity": "None",
             "selector": {"app": "reviews"},
             "ports": [{"name": "http", "port": 9080, "protocol": "TCP", "targetPort": "web"},
                       {"name": "metrics", "port": 9090, "protocol": "TCP", "targetPort": 9091, "appProtocol": "http"},
                       {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53}]},
    "status": {"loadBalancer": {}},
}


def pod(name: str, ip: str | None, ready: bool = True, labels: dict | None = None, **metadata) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "uid": f"uid-{name}", "resourceVersion": "500",
                     "labels": labels or {"app": "reviews", "version": "v1", "pod-template-hash": "7d9f8c"}, **metadata},
        "spec": {"serviceAccountName": "reviews", "nodeName": "node-1",
                 "containers": [{"name": "app", "image": "local.test/tools:1", "ports": [{"name": "web", "containerPort": 8000, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", **({"podIP": ip, "podIPs": [{"ip": ip}]} if ip else {}),
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def endpoint_slice(*endpoints: tuple[str, str, dict]) -> dict:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": "reviews-x7k2p", "namespace": "shop", "labels": {"kubernetes.io/service-name": "reviews"}},
        "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": conditions, "nodeName": "node-1",
                       "targetRef": {"kind": "Pod", "namespace": "shop", "name": name, "uid": f"uid-{name}"}} for name, ip, conditions in endpoints],
    }


def view(pods=(), slices=(), services=(SERVICE,), istio=()) -> ClusterView:
    return ClusterView(services={(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in services},
                       pods={(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in pods},
                       endpoint_slices={(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in slices},
                       istio={(d["kind"], d["metadata"]["namespace"], d["metadata"]["name"]): d for d in istio})


def by_ref(resources) -> dict:
    return {r.ref: r for r in resources}


def test_a_service_becomes_a_service_entry_selecting_its_pods_labels():
    [entry] = mesh_resources(REGISTRY, view())

    assert entry.ref == "ServiceEntry/shop/reviews"
    assert entry.source.file == "kubernetes/c1:Service/shop/reviews"
    assert entry.spec == {"hosts": ["reviews.shop.svc.cluster.local"], "location": "MESH_INTERNAL", "resolution": "STATIC",
                          "ports": [{"number": 9080, "name": "http", "protocol": "HTTP"},
                                    {"number": 9090, "name": "metrics", "protocol": "HTTP", "targetPort": 9091}],
                          "workloadSelector": {"labels": {"app": "reviews"}}}


def test_services_without_a_selector_and_external_names_are_not_mesh_services():
    headless_manual = {**SERVICE, "metadata": {**SERVICE["metadata"], "name": "manual"}, "spec": {**SERVICE["spec"], "selector": None}}
    external = {**SERVICE, "metadata": {**SERVICE["metadata"], "name": "ext"}, "spec": {"type": "ExternalName", "externalName": "example.org"}}
    assert [r.ref for r in mesh_resources(REGISTRY, view(services=(headless_manual, external)))] == []


def test_protocols_follow_istios_explicit_selection():
    assert [port_protocol(p) for p in ({"name": "http-web"}, {"name": "grpc"}, {"name": "grpc-web"}, {"name": "https"},
                                       {"name": "tcp-db"}, {"name": "web"}, {}, {"name": "x", "appProtocol": "HTTP2"},
                                       {"name": "x", "appProtocol": "kubernetes.io/h2c"})] == [
        "HTTP", "GRPC", "HTTP", "HTTPS", "TCP", "TCP", "TCP", "HTTP2", "HTTP2"]


INJECTED = {"app": "reviews", "version": "v1", "pod-template-hash": "7d9f8c", "security.istio.io/tlsMode": "istio"}


def test_an_injected_pod_becomes_a_workload_entry_with_its_labels_account_and_named_target_ports():
    resources = by_ref(mesh_resources(REGISTRY, view(pods=[pod("reviews-a", "10.244.0.5", labels=INJECTED)])))

    entry = resources["WorkloadEntry/shop/reviews-a"]
    assert entry.source.file == "kubernetes/c1:Pod/shop/reviews-a"
    assert entry.metadata == {"name": "reviews-a", "namespace": "shop"}
    assert entry.spec == {"address": "10.244.0.5", "labels": {"app": "reviews", "version": "v1", "security.istio.io/tlsMode": "istio"},
                          "serviceAccount": "reviews", "ports": {"http": 8000}}


def test_a_pod_without_a_sidecar_is_a_workload_entry_marked_as_an_endpoint_only():
    resources = by_ref(mesh_resources(REGISTRY, view(pods=[pod("reviews-a", "10.244.0.5"), pod("reviews-b", "10.244.0.6", ready=False)])))

    assert resources["WorkloadEntry/shop/reviews-a"].metadata == {"name": "reviews-a", "namespace": "shop",
                                                                   "annotations": {"meshwright.io/sidecar": "false"}}
    assert resources["WorkloadEntry/shop/reviews-b"].annotations == {"meshwright.io/endpoint": "not-ready", "meshwright.io/sidecar": "false"}


def test_an_injected_pods_workload_entry_captures_with_iptables():
    """Its init container set up iptables capture: its proxy gets the capture listeners (15001, 15006).
    The injector's label without its status annotation: a sidecar that does not capture."""
    labels = {"app": "reviews", "version": "v1", "security.istio.io/tlsMode": "istio"}
    injected = pod("reviews-b", "10.244.0.6", labels=labels, annotations={"sidecar.istio.io/status": '{"containers": ["istio-proxy"]}'})
    resources = by_ref(mesh_resources(REGISTRY, view(pods=[injected, pod("reviews-a", "10.244.0.5", labels=labels)])))
    assert resources["WorkloadEntry/shop/reviews-b"].annotations == {"sidecar.istio.io/interceptionMode": "REDIRECT"}
    assert resources["WorkloadEntry/shop/reviews-a"].annotations == {}


def test_pods_without_an_address_or_finished_are_no_workload():
    finished = pod("done", "10.244.0.9")
    finished["status"]["phase"] = "Succeeded"
    assert [r.kind for r in mesh_resources(REGISTRY, view(pods=[pod("pending", None), finished]))] == ["ServiceEntry"]


def not_ready(resources) -> set[str]:
    return {r.name for r in resources if r.kind == "WorkloadEntry" and r.annotations.get("meshwright.io/endpoint") == "not-ready"}


def test_readiness_follows_endpoint_slices_ready_and_terminating():
    pods = [pod(name, f"10.244.0.{i + 2}") for i, name in enumerate(("ready", "unready", "terminating", "unset", "unlisted"))]
    slices = [endpoint_slice(("ready", "10.244.0.2", {"ready": True, "serving": True, "terminating": False}),
                             ("unready", "10.244.0.3", {"ready": False, "serving": False, "terminating": False}),
                             ("terminating", "10.244.0.4", {"ready": False, "serving": True, "terminating": True}),
                             ("unset", "10.244.0.5", {}))]

    assert not_ready(mesh_resources(REGISTRY, view(pods=pods, slices=slices))) == {"unready", "terminating"}


def test_a_pod_no_slice_lists_is_ready_by_its_condition_and_a_deleted_one_never():
    pods = [pod("condition-false", "10.244.0.2", ready=False), pod("condition-true", "10.244.0.3"),
            pod("deleting", "10.244.0.4", deletionTimestamp="2026-12-07T17:05:00Z")]
    assert not_ready(mesh_resources(REGISTRY, view(pods=pods))) == {"condition-false", "deleting"}


def test_istio_resources_from_the_cluster_lose_what_the_api_server_added():
    virtual_service = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                       "metadata": {"name": "reviews", "namespace": "shop", "uid": "u", "generation": 3, "resourceVersion": "77",
                                    "managedFields": [{"manager": "kubectl"}],
                                    "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"}},
                       "spec": {"hosts": ["reviews.shop.svc.cluster.local"], "http": [{"route": [{"destination": {"host": "reviews.shop.svc.cluster.local"}}]}]},
                       "status": {}}
    [resource] = [r for r in mesh_resources(REGISTRY, view(istio=[virtual_service])) if r.kind == "VirtualService"]

    assert resource.metadata == {"name": "reviews", "namespace": "shop"}
    assert resource.source.file == "kubernetes/c1:VirtualService/shop/reviews"
    assert resource.document == {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "reviews", "namespace": "shop"},
                                 "spec": virtual_service["spec"]}


def test_the_translation_is_the_same_whatever_order_objects_arrived_in():
    pods = [pod(f"reviews-{i}", f"10.244.0.{i + 2}") for i in range(5)]
    first = mesh_resources(REGISTRY, view(pods=pods))
    again = mesh_resources(REGISTRY, view(pods=list(reversed(copy.deepcopy(pods)))))
    assert [(r.ref, r.spec, r.metadata) for r in first] == [(r.ref, r.spec, r.metadata) for r in again]


FILES_MESH = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-vm, namespace: shop}
spec: {address: 192.168.7.10, labels: {app: reviews, version: v2}, serviceAccount: reviews}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client-vm, namespace: shop}
spec: {address: 192.168.7.11, labels: {app: client}, serviceAccount: client}
"""


def test_a_kubernetes_service_selects_pods_and_vm_workload_entries_through_the_control_plane(tmp_path):
    (tmp_path / "mesh.yaml").write_text(FILES_MESH)
    mesh, problems = load_valid([str(tmp_path)])
    assert problems == []
    plane = ControlPlane(mesh, require_identity=False)
    cluster = view(pods=[pod("reviews-a", "10.244.0.5", labels=INJECTED), pod("reviews-b", "10.244.0.6", ready=False, labels=INJECTED),
                         pod("reviews-plain", "10.244.0.7")])

    assert plane.apply_source(REGISTRY, mesh_resources(REGISTRY, cluster)) == []

    assignment = assignment_named(plane.estate, "client-vm.shop", "outbound|9080||reviews.shop.svc.cluster.local")
    endpoints = sorted((lb["endpoint"]["address"]["socket_address"]["address"], lb["endpoint"]["address"]["socket_address"]["port_value"])
                       for group in assignment["endpoints"] for lb in group["lb_endpoints"])
    assert endpoints == [("10.244.0.5", 8000), ("10.244.0.7", 8000), ("192.168.7.10", 9080)]
    assert {"reviews-a.shop", "reviews-b.shop", "reviews-vm.shop"} <= set(plane.estate.proxies)
    assert "reviews-plain.shop" not in plane.estate.proxies  # an endpoint only: no sidecar


def test_a_cache_translates_each_object_once_per_version_and_forgets_the_gone():
    pods = [pod(f"reviews-{i}", f"10.244.0.{i + 2}") for i in range(3)]
    cache: dict = {}
    first = mesh_resources(REGISTRY, view(pods=pods), cache)

    pods[1]["metadata"]["resourceVersion"] = "501"
    pods[1]["status"]["podIP"] = "10.244.0.99"
    again = mesh_resources(REGISTRY, view(pods=pods[:2]), cache)

    assert again[1] is first[1] and again[2] is not first[2]  # reviews-0 kept, reviews-1 made anew
    assert again[2].spec["address"] == "10.244.0.99"
    assert [(r.ref, r.spec) for r in again] == [(r.ref, r.spec) for r in mesh_resources(REGISTRY, view(pods=pods[:2]))]
    assert len(cache) == 3  # the Service and the two pods: reviews-2's entry is gone
