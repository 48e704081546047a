"""Marathon apps and pods as mesh resources (registry/marathon.py), from responses in
Marathon's real shapes (tests/unit/data/marathon: `GET /v2/apps?embed=apps.tasks` and
`GET /v2/pods/::status` as Marathon 1.5-1.10 answer them): which services, which endpoints,
where each task is reached in every network mode, which tasks are not ready, and that the
result is a valid mesh."""

from __future__ import annotations

import copy
import json
import os

from meshwright.check.pipeline import validate_mesh
from meshwright.model.load import LoadResult, load_paths
from meshwright.registry.inventory import ENDPOINT_ANNOTATION, NOT_READY
from meshwright.registry.marathon import mesh_resources, run_spec_identity, workload_name

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "marathon")
REGISTRY = "marathon/prod"


def fixture(name: str):
    with open(os.path.join(DATA, name)) as handle:
        return json.load(handle)


def translated(apps=None, pods=None):
    apps = fixture("apps.json")["apps"] if apps is None else apps
    pods = fixture("pods_status.json") if pods is None else pods
    return mesh_resources(REGISTRY, apps, pods)


def by_ref(resources):
    return {r.ref: r for r in resources}


def workloads_of(resources, service: str):
    return sorted((r for r in resources if r.kind == "WorkloadEntry" and r.spec["labels"]["app"] == service), key=lambda r: r.spec["address"])


def test_identity_comes_from_the_app_id_and_labels_override_it():
    assert run_spec_identity("/shop/payment", {}) == run_spec_identity("/shop/payment", {"meshwright.io/namespace": "shop"})
    identity = run_spec_identity("/shop/payment", {})
    assert (identity.service, identity.namespace, identity.service_account, identity.host) == \
        ("payment", "shop", "payment", "payment.shop.svc.cluster.local")
    assert run_spec_identity("/web", {}).namespace == "default"
    assert run_spec_identity("/a/b/web", {}).namespace == "a-b"
    labelled = run_spec_identity("/shop/payment-v2", {"meshwright.io/service": "payment", "meshwright.io/service-account": "pay"})
    assert (labelled.service, labelled.service_account) == ("payment", "pay")


def test_every_app_and_pod_becomes_a_service_entry_but_the_one_that_opts_out():
    resources, problems = translated()
    services = {r.ref: r.spec for r in resources if r.kind == "ServiceEntry"}
    assert sorted(services) == ["ServiceEntry/data-orders/api", "ServiceEntry/default/pywebserver",
                                "ServiceEntry/shop/cart", "ServiceEntry/shop/payment", "ServiceEntry/shop/web"]
    payment = services["ServiceEntry/shop/payment"]
    assert payment == {"hosts": ["payment.shop.svc.cluster.local"], "location": "MESH_INTERNAL", "resolution": "STATIC",
                       "ports": [{"number": 10001, "name": "http", "protocol": "HTTP"}],
                       "workloadSelector": {"labels": {"app": "payment"}}}
    # Service port, else container port; protocol from the name (Istio's convention) or TCP.
    assert services["ServiceEntry/default/pywebserver"]["ports"] == [{"number": 10101, "name": "http-web", "protocol": "HTTP", "targetPort": 80}]
    assert services["ServiceEntry/data-orders/api"]["ports"] == [
        {"number": 10200, "name": "grpc", "protocol": "GRPC", "targetPort": 8080},
        {"number": 10201, "name": "metrics", "protocol": "TCP", "targetPort": 9090}]
    assert services["ServiceEntry/shop/cart"]["ports"] == [{"number": 80, "name": "http", "protocol": "HTTP", "targetPort": 8080}]
    assert problems == []


def test_host_mode_tasks_are_reached_at_host_and_host_port_and_only_healthy_ones_are_ready():
    resources, _ = translated()
    payment = workloads_of(resources, "payment")
    assert [(w.spec["address"], w.spec["ports"]) for w in payment] == [
        ("10.0.6.25", {"http": 31001}), ("10.0.6.26", {"http": 31002}), ("10.0.6.27", {"http": 31003})]
    # Passing its health check: ready. Failing it, or not checked yet: not ready.
    assert [w.annotations.get(ENDPOINT_ANNOTATION) for w in payment] == [None, NOT_READY, NOT_READY]
    assert payment[0].name == "payment-01da9a15-68a7-11e7-a229-e6a514ca0c21"
    assert payment[0].spec["serviceAccount"] == "payment"
    # Marathon labels that are valid mesh labels pass (subsets by version); others do not.
    assert payment[0].spec["labels"] == {"team": "payments", "version": "v2", "app": "payment"}
    assert payment[0].source.file == "marathon/prod:WorkloadEntry/shop/payment-01da9a15-68a7-11e7-a229-e6a514ca0c21"
    

def test_bridge_mode_tasks_are_reached_at_the_agent_and_not_at_the_container_address():
    resources, _ = translated()
    web = workloads_of(resources, "pywebserver")
    assert [(w.spec["address"], w.spec["ports"], w.annotations.get(ENDPOINT_ANNOTATION)) for w in web] == [
        ("10.0.2.148", {"http-web": 1565}, None), ("10.0.2.149", {"http-web": 1566}, NOT_READY)]  # staging: not ready


def test_container_mode_tasks_are_reached_at_their_container_ip_and_container_ports():
    resources, _ = translated()
    [api] = workloads_of(resources, "api")
    assert (api.namespace, api.spec["address"], api.spec["ports"], api.spec["serviceAccount"]) == \
        ("data-orders", "9.0.6.3", {"grpc": 8080, "metrics": 9090}, "orders-api")


def test_pod_instances_are_ready_when_stable_and_an_injected_pod_is_reached_through_its_sidecar():
    resources, _ = translated()
    web = workloads_of(resources, "web")
    assert [(w.spec["address"], w.spec["ports"], w.annotations.get(ENDPOINT_ANNOTATION)) for w in web] == [
        ("9.0.6.3", {"http": 80}, None), ("9.0.6.4", {"http": 80}, NOT_READY)]
    [cart] = workloads_of(resources, "cart")
    assert (cart.spec["address"], cart.spec["ports"]) == ("10.0.0.167", {"http": 31191})  # the sidecar's host port


def test_a_killed_task_leaves_and_a_task_without_an_address_waits():
    apps = fixture("apps.json")["apps"]
    apps[0]["tasks"][0]["state"] = "TASK_KILLED"
    api = apps[2]
    api["tasks"][0]["ipAddresses"] = []  # container IP not reported yet; "grpc" has no host port
    resources, problems = translated(apps, [])
    assert len(workloads_of(resources, "payment")) == 2
    assert workloads_of(resources, "api") == []
    assert problems == ["marathon/prod: task data_orders_api.instance-c7c311a4-b669-11e6-a48f-0ea4f4b1778c._app.1: "
                        "not addressable yet (no container IP, host ports not allocated)"]


def test_an_app_with_a_bad_label_is_skipped_with_a_clear_problem_and_the_rest_kept():
    apps = fixture("apps.json")["apps"]
    apps[0]["labels"]["meshwright.io/namespace"] = "Shop_Prod"
    resources, problems = translated(apps, [])
    assert "ServiceEntry/shop/payment" not in by_ref(resources)
    assert "ServiceEntry/default/pywebserver" in by_ref(resources)
    assert problems == ["marathon/prod: app /shop/payment: label meshwright.io/namespace: 'Shop_Prod' is not a DNS-1123 label "
                        "(at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit): skipped"]


def test_blue_and_green_apps_of_one_service_share_its_service_entry():
    apps = fixture("apps.json")["apps"][:1]
    green = copy.deepcopy(apps[0])
    green["id"] = "/shop/payment-green"
    green["labels"]["meshwright.io/service"] = "payment"
    green["tasks"] = [dict(green["tasks"][0], id="shop_payment-green.11da9a15-68a7-11e7-a229-e6a514ca0c21", host="10.0.7.1")]
    resources, problems = translated([*apps, green], [])
    assert problems == []
    assert [r.ref for r in resources if r.kind == "ServiceEntry"] == ["ServiceEntry/shop/payment"]
    assert len(workloads_of(resources, "payment")) == 4


def test_workload_names_are_dns_names_unique_per_task():
    long_service = "a" * 60
    name = workload_name(long_service, "x.instance-c7c311a4-b669-11e6-a48f-0ea4f4b1778c._app.1")
    assert len(name) <= 63 and name.endswith("-c7c311a4-b669-11e6-a48f-0ea4f4b1778c")
    assert workload_name("web", "web.1") != workload_name("web", "web.2")


def test_translation_is_deterministic_whatever_the_order_marathon_answers_in():
    apps, pods = fixture("apps.json")["apps"], fixture("pods_status.json")
    first, _ = translated(apps, pods)
    shuffled = [dict(a, tasks=list(reversed(a.get("tasks", [])))) for a in reversed(apps)]
    second, _ = translated(shuffled, list(reversed(pods)))
    assert [(r.ref, r.spec, r.metadata) for r in first] == [(r.ref, r.spec, r.metadata) for r in second]


def test_the_resources_make_a_valid_mesh_with_a_vm_service(tmp_path):
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text("""apiVersion: meshwright.io/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec: {trustDomain: cluster.local}
""")
    loaded = load_paths([str(mesh_file)])
    resources, _ = translated()
    mesh, problems = validate_mesh(LoadResult(loaded.resources + resources, []))
    assert problems == []
    payment = mesh.registry.get("payment.shop.svc.cluster.local")
    assert {e.address for e in payment.endpoints} >= {"10.0.6.25"}
