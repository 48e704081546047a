"""A Marathon task's first certificate (serve/marathon.py attest_task, which the CSR service
asks): Marathon, asked afresh, must say the task runs, is the task of the proxy it claims,
and runs where the call comes from; each task joins once. And the injected pod's instance
as the registry publishes it: a WorkloadEntry on the sidecar's inbound port and its own
Sidecar resource handing traffic to the app. And the bootstrap the control plane serves a
sidecar: only to the proxy its client certificate proves."""

from __future__ import annotations

import json

import grpc
import pytest

from meshwright.deliver.marathon_inject import SidecarSettings, inject
from meshwright.registry.marathon import LABEL_INSTANCE, pod_resources, workload_name
from meshwright.pki import ca, csr, workload
from meshwright.serve.certificates import CertificateService, MarathonTaskRefused
from meshwright.serve.marathon import MarathonRegistry
from tests.fakes.marathon import MarathonDouble

APP = {"id": "/shop/payment", "cmd": "./payment", "instances": 2,
       "portDefinitions": [{"port": 0, "name": "http", "labels": {"meshwright.io/port": "80"}}]}


@pytest.fixture
def marathon():
    double = MarathonDouble()
    double.cluster.put_pod(inject(APP, SidecarSettings("127.0.0.1:15012", "127.0.0.1:15016")), force=False)
    registry = MarathonRegistry([double.url], "marathon/test")
    registry._publish = lambda resources: None
    registry.relist()
    yield double, registry
    double.stop()


def sidecar_task(instance: dict) -> str:
    return next(c["containerId"] for c in instance["containers"] if c["name"] == "meshwright-sidecar")


def proxy_of(instance: dict) -> str:
    return workload_name("payment", instance["id"]) + ".shop"


def test_a_running_task_joins_once_from_its_host(marathon):
    double, registry = marathon
    instance = double.cluster.instances["/shop/payment"][0]
    registry.attest_task(proxy_of(instance), sidecar_task(instance), "127.0.0.1")
    with pytest.raises(MarathonTaskRefused, match="already has its first certificate"):
        registry.attest_task(proxy_of(instance), sidecar_task(instance), "127.0.0.1")


def test_another_tasks_id_a_stranger_host_and_a_killed_task_are_refused(marathon):
    double, registry = marathon
    first, second = double.cluster.instances["/shop/payment"]
    with pytest.raises(MarathonTaskRefused, match=f"task {sidecar_task(second)} is not the task of proxy {proxy_of(first)}"):
        registry.attest_task(proxy_of(first), sidecar_task(second), "127.0.0.1")
    with pytest.raises(MarathonTaskRefused, match="runs on 127.0.0.1, the call comes from 10.9.9.9"):
        registry.attest_task(proxy_of(first), sidecar_task(first), "10.9.9.9")
    double.cluster.kill_instance(second["id"])  # the registry has not seen it: Marathon is asked afresh
    with pytest.raises(MarathonTaskRefused, match="runs on no known address"):
        registry.attest_task(proxy_of(second), sidecar_task(second), "127.0.0.1")
    with pytest.raises(MarathonTaskRefused, match="Marathon has no task for the WorkloadEntry shop/nobody"):
        registry.attest_task("nobody.shop", sidecar_task(first), "127.0.0.1")


def test_an_injected_instance_is_reached_on_its_sidecar_which_hands_traffic_to_the_app(marathon):
    double, dummy = marathon
    status = double.cluster.pod_status("/shop/payment")
    part = pod_resources("marathon/test", status)
    instance = status["instances"][0]
    allocated = {e["name"]: e["allocatedHostPort"] for c in instance["containers"] for e in c["endpoints"]}
    name = workload_name("payment", instance["id"])
    entry = next(r for r in part.workloads if r.kind == "WorkloadEntry" and r.name == name)
    sidecar = next(r for r in part.workloads if r.kind == "Sidecar" and r.name == name)
    assert entry.spec["ports"] == {"http": allocated["mesh-inbound"]}
    # Host networking: the sidecar's well-known ports follow the health port Marathon checks.
    assert entry.annotations["meshwright.io/port-offset"] == str(allocated["mesh-health"] - 15021)
    assert sidecar.spec == {"workloadSelector": {"labels": {LABEL_INSTANCE: entry.spec["labels"][LABEL_INSTANCE]}},
                            "ingress": [{"port": {"number": allocated["mesh-inbound"], "protocol": "HTTP", "name": "http"},
                                         "defaultEndpoint": f"127.0.0.1:{allocated['http']}"}]}
    assert part.service.spec["ports"] == [{"number": 80, "name": "http", "protocol": "HTTP"}]


class AbortedCall(Exception):
    pass


class FakeContext:
    """What the CSR service reads of a gRPC call: the client certificate, the peer; abort raises."""

    def __init__(self, pem: bytes | None):
        self.pem = pem

    def auth_context(self):
        return {"x509_pem_cert": [self.pem]} if self.pem else {}

    def peer(self):
        return "ipv4:127.0.0.1:40000"

    def abort(self, code, details):
        raise AbortedCall(code, details)


def test_the_bootstrap_is_served_over_mtls_only_to_the_proxy_the_certificate_proves():
    root = ca.make_root("cluster.local")
    site = ca.make_intermediate(root, "site-a", trust_domains=["cluster.local"])
    identities = {"payment-1.shop": "spiffe://cluster.local/ns/shop/sa/payment", "orders-1.shop": "spiffe://cluster.local/ns/shop/sa/orders"}
    service = CertificateService(site, identities.get, None)
    service.bootstrap_of = lambda proxy, xds, certs_dir: {"node": {"id": proxy}, "xds": xds, "certs": certs_dir}
    key = csr.make_private_key()
    pem = workload.sign_csr(csr.make_csr(key, identities["payment-1.shop"]), identities["payment-1.shop"], site)
    ask = {"xds": ["10.0.0.1:15012"], "certs_dir": "/sandbox/meshwright/certs"}
    answer = json.loads(service.handle_bootstrap(json.dumps({"proxy": "payment-1.shop", **ask}).encode(), FakeContext(pem)))
    assert answer == {"node": {"id": "payment-1.shop"}, "xds": [["10.0.0.1", 15012]], "certs": "/sandbox/meshwright/certs"}
    with pytest.raises(AbortedCall) as refused:
        service.handle_bootstrap(json.dumps({"proxy": "orders-1.shop", **ask}).encode(), FakeContext(pem))
    assert refused.value.args[0] == grpc.StatusCode.PERMISSION_DENIED
    assert "the client certificate proves spiffe://cluster.local/ns/shop/sa/payment" in refused.value.args[1]
    with pytest.raises(AbortedCall) as refused:
        service.handle_bootstrap(json.dumps({"proxy": "payment-1.shop", **ask}).encode(), FakeContext(None))
    assert refused.value.args[0] == grpc.StatusCode.UNAUTHENTICATED
