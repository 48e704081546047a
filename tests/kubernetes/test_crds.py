"""meshwright's CRDs (`meshwright crds`, made from the schemas `meshwright validate` uses) on a
real API server: every Istio document meshwright accepts is accepted there too; the OpenAPI
validation refuses wrong types, ranges and missing fields at apply time; fields meshwright's
own checks refuse are kept for them, never pruned."""

from __future__ import annotations

import glob
import os

import pytest
import yaml
from kubernetes import client

from meshwright.cli import main as meshwright_main
from meshwright.validate.crds import ISTIO_CRDS
from tests.kubernetes.api_server import ROOT, create_retrying

DOCUMENTS = sorted(glob.glob(os.path.join(ROOT, "tests", "istio_corpus", "*.yaml")) + glob.glob(os.path.join(ROOT, "examples", "**", "*.yaml"), recursive=True))


def istio_documents() -> list[tuple[str, dict]]:
    """(a namespace of its file's own, document): files reuse names."""
    found = []
    for index, path in enumerate(DOCUMENTS):
        with open(path) as stream:
            found += [(f"corpus-{index}", doc) for doc in yaml.safe_load_all(stream) if isinstance(doc, dict) and doc.get("kind") in ISTIO_CRDS]
    return found


def create(api_server, document: dict, namespace: str | None = None):
    group, version = document["apiVersion"].split("/")
    if namespace:
        document = {**document, "metadata": {**document["metadata"], "namespace": namespace}}
    namespace = document["metadata"].get("namespace", "default")
    objects = client.CustomObjectsApi(api_server.api_client())
    return create_retrying(lambda: objects.create_namespaced_custom_object(group, version, namespace, ISTIO_CRDS[document["kind"]][2], document))


def delete(api_server, obj: dict) -> None:
    """Other tests read the whole cluster into a mesh: what a test leaves must not break it."""
    group, version = obj["apiVersion"].split("/")
    client.CustomObjectsApi(api_server.api_client()).delete_namespaced_custom_object(
        group, version, obj["metadata"]["namespace"], ISTIO_CRDS[obj["kind"]][2], obj["metadata"]["name"])


def test_crds_are_the_same_bytes_every_time(tmp_path, crds):
    again = tmp_path / "again.yaml"
    assert meshwright_main(["crds", "--out", str(again)]) == 0
    assert again.read_bytes() == crds.read_bytes()


def test_every_kind_and_version_istio_serves_is_served(api_server, crds):
    resources = api_server.kubectl("api-resources", "-o", "name").stdout.split()
    for kind, (group, versions, plural, _) in ISTIO_CRDS.items():
        assert f"{plural}.{group}" in resources, kind
        for version in versions:
            assert api_server.kubectl("get", f"{plural}.{version}.{group}", "-A").returncode == 0


def test_every_istio_document_meshwright_accepts_is_accepted_by_the_api_server(api_server, crds):
    documents = istio_documents()
    assert len(documents) > 80
    core = client.CoreV1Api(api_server.api_client())
    for namespace in sorted({namespace for namespace, _ in documents}):
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    created = []
    try:
        created = [create(api_server, doc, namespace) for namespace, doc in documents]
        assert [c["spec"] for c in created] == [doc["spec"] for _, doc in documents]
    finally:
        for obj in created:
            delete(api_server, obj)


BAD_VIRTUAL_SERVICE = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad, namespace: crd-bad}
spec:
  hosts: reviews
  http:
  - route:
    - destination: {port: {number: 70000}}
    retries: {attempts: "three"}
"""


def test_the_api_server_refuses_wrong_types_ranges_and_missing_fields_with_their_paths(api_server, crds):
    api_server.kubectl("create", "namespace", "crd-bad")
    refused = api_server.kubectl("apply", "-f", "-", input=BAD_VIRTUAL_SERVICE, check=False)
    assert refused.returncode != 0
    for expected in ('spec.hosts: Invalid value: "string": spec.hosts in body must be of type array',
                     "spec.http[0].retries.attempts in body must be of type integer",
                     "spec.http[0].route[0].destination.port.number in body should be less than or equal to 65535",
                     "spec.http[0].route[0].destination.host: Required value"):
        assert expected in refused.stderr
    assert api_server.kubectl("get", "virtualservices", "-n", "crd-bad", "-o", "name").stdout == ""


def test_enums_and_patterns_are_checked_at_apply_time(api_server, crds):
    api_server.kubectl("create", "namespace", "crd-enum")
    policy = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": "p", "namespace": "crd-enum"},
              "spec": {"action": "PERMIT"}}
    with pytest.raises(client.ApiException) as refused:
        create(api_server, policy)
    assert refused.value.status == 422
    assert r'spec.action: Unsupported value: \"PERMIT\": supported values: \"ALLOW\", \"DENY\", \"CUSTOM\"' in refused.value.body
    exported = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "v", "namespace": "crd-enum"},
                "spec": {"hosts": ["a"], "exportTo": ["Not A Namespace"], "http": [{"route": [{"destination": {"host": "a"}}]}]}}
    with pytest.raises(client.ApiException) as refused:
        create(api_server, exported)
    assert r'spec.exportTo[0]: Invalid value: \"Not A Namespace\": spec.exportTo[0] in body should match' in refused.value.body


def test_fields_meshwright_refuses_reach_its_checks_unpruned(api_server, crds):
    """Kubernetes would drop an unknown field silently; meshwright's checks must see it to refuse it."""
    api_server.kubectl("create", "namespace", "crd-kept")
    misspelt = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "m", "namespace": "crd-kept"},
                "spec": {"hosts": ["a.crd-kept.svc.cluster.local"], "http": [{"route": [{"destination": {"host": "a"}}], "tiemout": "2s"}]}}
    kept = create(api_server, misspelt)
    delete(api_server, kept)
    assert kept["spec"]["http"][0]["tiemout"] == "2s"
