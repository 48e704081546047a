"""The CRDs come from meshwright's schemas: every Istio kind meshwright reads has one, in the
versions meshwright reads, and a schema node the generator does not know is an error, never
a silently looser CRD."""

from __future__ import annotations

import pytest

from meshwright.validate.crds import ISTIO_CRDS, custom_resource_definitions, openapi_schema
from meshwright.validate.istio_api import KINDS
from meshwright.validate.shape import Schema


def test_every_istio_kind_meshwright_reads_has_a_crd():
    istio_kinds = {kind for kind, (versions, _) in KINDS.items() if versions[0].split("/")[0].endswith("istio.io")}
    assert istio_kinds == set(ISTIO_CRDS)
    assert [crd["spec"]["names"]["kind"] for crd in custom_resource_definitions()] == [
        "DestinationRule", "EnvoyFilter", "Gateway", "ServiceEntry", "Sidecar", "VirtualService", "WorkloadEntry", "WorkloadGroup",
        "AuthorizationPolicy", "PeerAuthentication", "RequestAuthentication", "Telemetry"]


def test_each_crd_stores_its_first_version_and_serves_them_all():
    crd = next(c for c in custom_resource_definitions() if c["spec"]["names"]["kind"] == "VirtualService")
    assert crd["metadata"]["name"] == "virtualservices.networking.istio.io"
    assert [(v["name"], v["served"], v["storage"]) for v in crd["spec"]["versions"]] == [
        ("v1", True, True), ("v1beta1", True, False), ("v1alpha3", True, False)]


def test_a_schema_node_without_an_openapi_form_is_an_error():
    class Unknown(Schema):
        pass

    with pytest.raises(TypeError, match="no OpenAPI schema for Unknown"):
        openapi_schema(Unknown())
