"""The identity the mesh gives each proxy: the SPIFFE ID of its namespace and service
account (a WorkloadEntry's serviceAccount, "default" when it names none; a standalone
gateway's "<name>-service-account"), and signing a CSR for exactly that identity."""

from __future__ import annotations

import datetime

from meshwright.compile.proxy import find_proxy
from meshwright.model.mesh import Mesh
from meshwright.pki.ca import Authority
from meshwright.pki.spiffe import spiffe_id
from meshwright.pki.workload import sign_csr


def proxy_spiffe_id(mesh: Mesh, proxy_id: str) -> str:
    """The SPIFFE ID of a proxy (name.namespace); UnknownProxy if the mesh has none of that name."""
    proxy = find_proxy(mesh, proxy_id)
    return spiffe_id(mesh.settings.trust_domain, proxy.namespace, proxy.service_account)


def sign_proxy_csr(mesh: Mesh, proxy_id: str, csr_pem: bytes, issuer: Authority, now: datetime.datetime | None = None) -> bytes:
    """The certificate chain for a proxy's CSR, with the mesh's workload certificate lifetime;
    CsrRefused if the CSR asks for any identity but the proxy's own."""
    return sign_csr(csr_pem, proxy_spiffe_id(mesh, proxy_id), issuer, mesh.settings.workload_cert_lifetime, now)
