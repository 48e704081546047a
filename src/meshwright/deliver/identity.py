"""The identity the mesh gives each proxy: the SPIFFE ID of its namespace and service
account (a WorkloadEntry's serviceAccount, "default" when it names none; a standalone
gateway's "<name>-service-account"), and signing a CSR for exactly that identity."""

from __future__ import annotations

import datetime

from cryptography import x509

from meshwright.compile.proxy import find_proxy
from meshwright.mesh import Mesh
from meshwright.pki.ca import Authority
from meshwright.pki.csr import public_key_sha256
from meshwright.pki.spiffe import spiffe_id
from meshwright.pki.workload import CsrRefused, sign_csr


def proxy_spiffe_id(mesh: Mesh, proxy_id: str) -> str:
    """The SPIFFE ID of a proxy (name.namespace); UnknownProxy if the mesh has none of that name."""
    proxy = find_proxy(mesh, proxy_id)
    return spiffe_id(mesh.settings.trust_domain, proxy.namespace, proxy.service_account)


def sign_proxy_csr(mesh: Mesh, proxy_id: str, csr_pem: bytes, issuer: Authority, now: datetime.datetime | None = None) -> bytes:
    """The certificate chain for a proxy's CSR, with the mesh's workload certificate lifetime;
    CsrRefused if the CSR asks for any identity but the proxy's own."""
    return sign_csr(csr_pem, proxy_spiffe_id(mesh, proxy_id), issuer, mesh.settings.workload_cert_lifetime, now)


class HostRefused(CsrRefused):
    """A host's request refused before its CSR is even read (the message names the host)."""

    def __init__(self, host: str, reason: str):
        super().__init__(f"refused to sign the CSR of host {host}: {reason}")
        self.host = host


class SignRequest:
    """One CSR to sign: under key (a proxy ID, or with a signing plan an inventory host) for
    proxy at site; what the host says about its key (the SHA-256 of its public key), if it says."""

    def __init__(self, key: str, proxy: str, csr: str, site: str, spiffe_id: str | None = None, public_key: str | None = None):
        self.key, self.proxy, self.csr, self.site, self.spiffe_id, self.public_key = key, proxy, csr, site, spiffe_id, public_key

    @property
    def who(self) -> str:
        return f"host {self.key} (proxy {self.proxy}, site {self.site})" if self.spiffe_id is not None else self.key


def _entry(key: str, entry) -> tuple[str, str | None, str | None, str | None]:
    """(csr, claimed proxy, claimed site, claimed public key digest) of one csrs entry."""
    if isinstance(entry, dict):
        csr, proxy, site, public_key = entry.get("csr"), entry.get("proxy"), entry.get("intermediate"), entry.get("public_key_sha256")
    else:
        csr, proxy, site, public_key = entry, None, None, None
    if not csr:
        raise CsrRefused(f"csrs.{key}: no CSR given")
    return str(csr), proxy, site, public_key


def proxy_requests(csrs: dict, default_site: str) -> list[SignRequest]:
    """Requests keyed by proxy ID (the controller's own choice: no plan needed)."""
    out = []
    for proxy, entry in sorted(csrs.items()):
        csr, dummy, site, public_key = _entry(str(proxy), entry)
        out.append(SignRequest(str(proxy), str(proxy), csr, str(site or default_site), public_key=public_key))
    return out


def planned_requests(csrs: dict, plan: dict) -> list[SignRequest]:
    """Requests keyed by inventory host, each for the proxy and site the signing plan (made
    from the inventory before any host ran a task) gives it; CsrRefused naming the host when
    it is not in the plan or claims another proxy or site (a host's facts choose nothing)."""
    out = []
    for host, entry in sorted(csrs.items()):
        host = str(host)
        csr, proxy, site, public_key = _entry(host, entry)
        planned = plan.get(host)
        if not isinstance(planned, dict) or not planned.get("proxy") or not planned.get("spiffe_id"):
            raise HostRefused(host, "the signing plan (made from the inventory) gives it no identity")
        planned_site = str(planned.get("site") or "default")
        if (proxy is not None and str(proxy) != planned["proxy"]) or (site is not None and str(site) != planned_site):
            raise HostRefused(host, f"it claims proxy {proxy} at site {site}, but the inventory gives it proxy {planned['proxy']} "
                                    f"at site {planned_site} (a host's facts never choose its identity)")
        out.append(SignRequest(host, str(planned["proxy"]), csr, planned_site, str(planned["spiffe_id"]), public_key))
    return out


def check_request(mesh: Mesh, request: SignRequest) -> None:
    """CsrRefused when the plan's SPIFFE ID is no longer the mesh's for the proxy, or the host
    says it holds another key than the one its CSR is for."""
    if request.spiffe_id is not None and request.spiffe_id != proxy_spiffe_id(mesh, request.proxy):
        raise CsrRefused(f"the plan gives it {request.spiffe_id}, but the mesh config gives proxy {request.proxy} "
                         f"{proxy_spiffe_id(mesh, request.proxy)} (the mesh changed since the plan was made: run the playbook again)")
    if request.public_key is None:
        return
    try:
        in_csr = public_key_sha256(x509.load_pem_x509_csr(request.csr.encode()).public_key())
    except ValueError:
        return  # not a CSR at all: signing says so
    if in_csr != str(request.public_key):
        raise CsrRefused(f"the CSR is for the public key {in_csr[:16]}..., not the key the host reports holding ({str(request.public_key)[:16]}...)")
