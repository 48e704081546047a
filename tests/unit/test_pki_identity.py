"""Signing for a proxy of the mesh: the identity is the one its WorkloadEntry (or standalone
Gateway) gives it, and the lifetime the MeshConfig's; a CSR for any other identity is refused."""

from __future__ import annotations

import datetime

import pytest

from meshwright.compile.proxy import UnknownProxy
from meshwright.deliver.identity import proxy_spiffe_id, sign_proxy_csr
from meshwright.pki import ca, csr, info
from meshwright.pki.workload import CsrRefused
from tests.unit.security_mesh import load_mesh

NOW = datetime.datetime(2026, 3, 1, tzinfo=datetime.timezone.utc)
GATEWAY = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
"""


@pytest.fixture(scope="module")
def issuer():
    return ca.make_intermediate(ca.make_root("cluster.local", now=NOW), "site-a", now=NOW)


def test_identity_comes_from_the_workload_entry(tmp_path):
    mesh = load_mesh(tmp_path, GATEWAY)
    assert proxy_spiffe_id(mesh, "client.default") == "spiffe://cluster.local/ns/default/sa/client"
    assert proxy_spiffe_id(mesh, "server-2.default") == "spiffe://cluster.local/ns/default/sa/default"  # no serviceAccount
    assert proxy_spiffe_id(mesh, "edge.istio-system") == "spiffe://cluster.local/ns/istio-system/sa/edge-service-account"
    with pytest.raises(UnknownProxy):
        proxy_spiffe_id(mesh, "nobody.default")


def test_csr_not_matching_the_workload_entry_is_refused(tmp_path, issuer):
    """The client host asking for the server's identity gets nothing."""
    mesh = load_mesh(tmp_path)
    key = csr.make_private_key()
    with pytest.raises(CsrRefused, match="sa/server, but this workload's identity is spiffe://cluster.local/ns/default/sa/client"):
        sign_proxy_csr(mesh, "client.default", csr.make_csr(key, "spiffe://cluster.local/ns/default/sa/server"), issuer, now=NOW)


def test_lifetime_comes_from_the_mesh_config(tmp_path, issuer):
    mesh = load_mesh(tmp_path, "apiVersion: meshwright.io/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\nspec: {certificates: {workloadCertTtl: 24h}}\n", identity=False)
    key = csr.make_private_key()
    chain = sign_proxy_csr(mesh, "client.default", csr.make_csr(key, proxy_spiffe_id(mesh, "client.default")), issuer, now=NOW)
    leaf = info.first_certificate(chain)
    assert info.not_after(leaf) - NOW == datetime.timedelta(hours=24)
    assert info.describe(leaf, NOW).spiffe_id == "spiffe://cluster.local/ns/default/sa/client"
