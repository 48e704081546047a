"""Pods' identity from their service accounts: the CSR service signs a pod's CSR on its
projected service-account token, which the real API server reviews (TokenReview), and only
for the SPIFFE ID of that pod's service account; another account's token, a token bound to
another pod or made for another audience, and a VM's proxy are refused."""

from __future__ import annotations

import time

import pytest
from cryptography import x509
from kubernetes import client

from meshwright.agent import Agent
from meshwright.pki import ca, csr
from meshwright.pki.ca import certificate_pem
from meshwright.pki.spiffe import control_plane_spiffe_id
from meshwright.serve.certificates import CertificateService, CsrServiceRefusal, ServingCertificate, SignRequest, csr_server
from meshwright.serve.kubernetes import KubernetesRegistry
from meshwright.serve.plane import ControlPlane
from meshwright.serve.registries import publisher
from meshwright.serve.server import pod_token_identity, proxy_identity
from meshwright.serve.source import load_valid
from tests.harness import free_port

NAMESPACE = "identity"
VM = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm, namespace: identity}
spec: {address: 192.168.9.1, labels: {app: vm}, serviceAccount: reviews}
"""


@pytest.fixture(scope="module")
def cluster(api_server, crds, tmp_path_factory):
    """A control plane watching the cluster, whose pods reviews-a (account reviews) and
    other-a (account other) are proxies of the mesh (labelled as injected pods are), and its CSR service."""
    core = client.CoreV1Api(api_server.api_client())
    core.create_namespace({"metadata": {"name": NAMESPACE}})
    pods = {}
    for pod, account in (("reviews-a", "reviews"), ("other-a", "other")):
        core.create_namespaced_service_account(NAMESPACE, {"metadata": {"name": account}})
        created = core.create_namespaced_pod(NAMESPACE, {"metadata": {"name": pod, "labels": {"app": account, "security.istio.io/tlsMode": "istio"}}, "spec": {
            "serviceAccountName": account, "containers": [{"name": "app", "image": "local.test/tools:1"}]}})
        core.patch_namespaced_pod_status(pod, NAMESPACE, {"status": {"phase": "Running", "podIP": f"10.244.0.{len(pods) + 40}"}})
        pods[pod] = created.metadata.uid
    folder = tmp_path_factory.mktemp("identity")
    (folder / "vm.yaml").write_text(VM)
    mesh, problems = load_valid([str(folder)])
    assert problems == []
    plane = ControlPlane(mesh, require_identity=False)
    registry = KubernetesRegistry("kubernetes/test", api_server.configuration())
    registry.start(publisher(plane, registry.name))
    deadline = time.monotonic() + 15
    while not {"reviews-a.identity", "other-a.identity"} <= set(plane.estate.proxies):
        assert time.monotonic() < deadline, f"the pods never became proxies; last rejection: {plane.rejection}"
        time.sleep(0.05)
    root = ca.make_root("cluster.local")
    issuer = ca.make_intermediate(root, "cluster-test")
    service = CertificateService(issuer, lambda proxy: proxy_identity(plane, proxy), None,
                                 token_identity=pod_token_identity(plane, {registry.name: registry.token_reviewer()}))
    roots = certificate_pem(root.certificate)
    serving = ServingCertificate(issuer, control_plane_spiffe_id("cluster.local"), roots)
    server, csr_port, join_port = csr_server(service, serving, ("127.0.0.1", free_port()), ("127.0.0.1", free_port()))
    yield api_server, service, pods, (csr_port, join_port), roots
    server.stop(grace=1).wait(5)
    registry.stop()


def token(api_server, account: str, pod: str | None = None, uid: str | None = None, audience: str = "meshwright") -> str:
    """A projected service-account token, as the kubelet mounts one (bound to its pod)."""
    spec = {"audiences": [audience], "expirationSeconds": 600}
    if pod:
        spec["boundObjectRef"] = {"kind": "Pod", "apiVersion": "v1", "name": pod, "uid": uid}
    return client.CoreV1Api(api_server.api_client()).create_namespaced_service_account_token(
        account, NAMESPACE, {"spec": spec}).status.token


def sign(service: CertificateService, proxy: str, spiffe: str, service_account_token: str) -> x509.Certificate:
    key = csr.make_private_key()
    chain = service.create_certificate(SignRequest(proxy, csr.make_csr(key, spiffe), None, None, service_account_token), None)
    return x509.load_pem_x509_certificate(chain[0].encode())


def refusal(service, proxy: str, spiffe: str, service_account_token: str) -> str:
    with pytest.raises(CsrServiceRefusal) as refused:
        sign(service, proxy, spiffe, service_account_token)
    return str(refused.value)


REVIEWS = "spiffe://cluster.local/ns/identity/sa/reviews"


def test_a_pods_token_gets_its_service_accounts_spiffe_id(cluster):
    api_server, service, pods, *_ = cluster
    leaf = sign(service, "reviews-a.identity", REVIEWS, token(api_server, "reviews", "reviews-a", pods["reviews-a"]))
    uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier)
    assert uris == [REVIEWS]


def test_another_service_accounts_token_is_refused(cluster):
    api_server, service, pods, *_ = cluster
    unbound = refusal(service, "reviews-a.identity", REVIEWS, token(api_server, "other"))
    assert unbound == ("proxy reviews-a.identity, whose identity is spiffe://cluster.local/ns/identity/sa/reviews: "
                       "the service-account token proves spiffe://cluster.local/ns/identity/sa/other")
    bound = refusal(service, "reviews-a.identity", REVIEWS, token(api_server, "other", "other-a", pods["other-a"]))
    assert bound == "proxy reviews-a.identity: the token is bound to the pod identity/other-a"


def test_a_token_for_another_audience_or_a_forged_one_is_refused(cluster):
    api_server, service, pods, *_ = cluster
    other_audience = refusal(service, "reviews-a.identity", REVIEWS, token(api_server, "reviews", "reviews-a", pods["reviews-a"], audience="vault"))
    assert other_audience.startswith("proxy reviews-a.identity: the API server does not accept the token for the audience 'meshwright'")
    forged = refusal(service, "reviews-a.identity", REVIEWS, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZXZpZXdzIn0.c2lnbmF0dXJl")
    assert forged.startswith("proxy reviews-a.identity: the API server does not accept the token")


def test_a_vm_proxy_cannot_join_with_a_service_account_token(cluster):
    api_server, service, *_ = cluster
    refused = refusal(service, "vm.identity", REVIEWS, token(api_server, "reviews"))
    assert refused == "proxy vm.identity: it is not a pod of a cluster this control plane watches: no service-account token proves it"


def test_the_agent_in_a_pod_gets_its_first_certificate_with_its_projected_token(cluster, tmp_path):
    """`meshwright agent --service-account-token-file` over the CSR service's join port (gRPC, server TLS)."""
    api_server, service, pods, (csr_port, join_port), roots = cluster
    token_file = tmp_path / "token"
    token_file.write_text(token(api_server, "reviews", "reviews-a", pods["reviews-a"]))
    agent = Agent([("127.0.0.1", csr_port)], [("127.0.0.1", join_port)], "reviews-a.identity", str(tmp_path / "certs"), roots,
                  service_account_token_file=str(token_file))

    held = agent.request_certificate(None)

    leaf = x509.load_pem_x509_certificate(held.chain)
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier) == [REVIEWS]
    assert (tmp_path / "certs" / "key.pem").exists()
