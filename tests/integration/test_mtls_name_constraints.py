"""Issue 10 item 23 on real Envoy (BoringSSL): a site intermediate carries a URI name
constraint for the mesh's trust domain (CaFolder makes every intermediate so), and Envoy
enforces it. A client certificate for another trust domain's SPIFFE ID, signed by that
intermediate, fails the handshake at the server's sidecar; the same certificate from an
intermediate without the constraint (as meshwright made them before) gets through TLS. The
mesh's own chains through the constrained intermediate keep working (test_mtls.py runs every
mTLS test on such a chain)."""

from __future__ import annotations

import http.client
import ssl

import pytest

from meshwright.pki import ca, csr
from meshwright.pki.ca_folder import permitted_trust_domains
from meshwright.pki.workload import sign_csr
from tests.integration.test_mtls import Mesh, mtls_get, tls_client, wait_for

OTHER_DOMAIN_ID = "spiffe://other.domain/ns/default/sa/client"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    running = Mesh(str(tmp_path_factory.mktemp("nc")), running=("server.default",))
    yield running
    running.close()


def test_envoy_refuses_an_identity_outside_the_intermediates_trust_domain(mesh):
    assert permitted_trust_domains(mesh.site.certificate) == ["cluster.local"]
    server = mesh.envoys["server.default"]
    failures_stat = f"listener.127.0.0.1_{mesh.inbound}.ssl.fail_verify_error"
    key = csr.make_private_key()

    unconstrained = ca.make_intermediate(mesh.root, "site-old")
    through_old = sign_csr(csr.make_csr(key, OTHER_DOMAIN_ID), OTHER_DOMAIN_ID, unconstrained)
    status, _, _ = mtls_get(mesh.inbound, tls_client(mesh, through_old, key, "old-site"))
    assert status in (200, 403)  # the handshake passed: only the name constraint stops it below

    before, failures = mesh.app.count, server.stat(failures_stat)
    through_site = sign_csr(csr.make_csr(key, OTHER_DOMAIN_ID), OTHER_DOMAIN_ID, mesh.site)
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
        mtls_get(mesh.inbound, tls_client(mesh, through_site, key, "other-domain"))
    assert mesh.app.count == before
    assert wait_for(lambda: server.stat(failures_stat) > failures)
