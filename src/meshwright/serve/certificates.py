"""Certificates on demand: the control plane's CSR service (Istio's IstioCertificateService,
CreateCertificate(csr, validity) -> chain), for `meshwright agent` (docs/control-plane.md).

The control plane holds one intermediate (its key and chain, files given at start); never the
root's key. It signs a CSR only for the identity the caller is entitled to:
- renewal, on the mTLS port: the caller's client certificate proves a SPIFFE ID, which must be
  the one the mesh gives the proxy it names, and the one the CSR asks for;
- first join, on the join port (server TLS only: the caller has no certificate yet): a one-time
  join token bound to that proxy (join_tokens.py), and the CSR asks for the proxy's identity.
The CSR must be signed by its own key, an ECDSA P-256 or RSA >= 2048 key, ask for exactly one
URI SAN and nothing else (no CA, no other extension). The certificate has the profile of every
workload certificate (pki/workload.py sign_csr), with a short lifetime (24 h by default).

Messages are JSON over a gRPC generic handler (no generated stubs):
request {"proxy": "name.ns", "csr": PEM, "validity_seconds": N, "join_token": "..."},
response {"cert_chain": [leaf PEM, intermediate PEM, ...]} (never the root).

The agent cannot check a URI SAN through gRPC's TLS (it checks host names only), so the CSR
ports serve a certificate this control plane mints from its intermediate for the DNS name
CA_SERVER_NAME (and its SPIFFE ID); workload certificates cannot carry a DNS name (sign_csr
signs exactly one URI), so only a holder of a mesh CA key can present it.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
from concurrent import futures
from dataclasses import dataclass
from typing import Callable

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from meshwright.pki.ca import CLOCK_SKEW, Authority, AuthorityExpired, certificate_pem, private_key_pem
from meshwright.pki.workload import CsrRefused, csr_spiffe_id, sign_csr
from meshwright.serve.identity import certificate_spiffe_ids, peer_certificate, proxy_id_of_node
from meshwright.serve.join_tokens import JoinTokens, TokenRefused

LOG = logging.getLogger("meshwright.serve")
SERVICE = "meshwright.ca.v1.CertificateService"
METHOD = "CreateCertificate"
PATH = f"/{SERVICE}/{METHOD}"
# A proxy's xDS bootstrap, for a proxy that holds its certificate but not the mesh files (a
# Marathon task's sidecar): on the mTLS port only, for the proxy the client certificate proves.
BOOTSTRAP_METHOD = "GetBootstrap"
BOOTSTRAP_PATH = f"/{SERVICE}/{BOOTSTRAP_METHOD}"
CA_SERVER_NAME = "meshwright-control-plane.meshwright-system.svc"
DEFAULT_CERT_LIFETIME = datetime.timedelta(hours=24)
SERVING_LIFETIME = datetime.timedelta(hours=24)
MAX_REQUEST_BYTES = 64 * 1024


class ServiceAccountTokenRefused(Exception):
    """A pod's service-account token its cluster's API server does not vouch for, or one for
    another workload (serve/kubernetes.py reviews them)."""


class MarathonTaskRefused(Exception):
    """A first CSR for a Marathon task that Marathon does not vouch for (serve/marathon.py attests them)."""


class CsrServiceRefusal(Exception):
    """A request the CSR service does not sign: the gRPC status and the reason (logged, and sent back)."""

    def __init__(self, code: grpc.StatusCode, reason: str):
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True)
class SignRequest:
    proxy: str
    csr: bytes
    validity: datetime.timedelta | None
    join_token: str | None
    kubernetes_token: str | None = None  # a pod's projected service-account token
    marathon_task_id: str | None = None  # a Marathon task's $MESOS_TASK_ID (its sidecar's task)


def parse_request(payload: bytes) -> SignRequest:
    """The request's fields; CsrServiceRefusal(INVALID_ARGUMENT) naming what is wrong."""
    def invalid(reason: str) -> CsrServiceRefusal:
        return CsrServiceRefusal(grpc.StatusCode.INVALID_ARGUMENT, reason)

    if len(payload) > MAX_REQUEST_BYTES:
        raise invalid(f"request of {len(payload)} bytes, more than {MAX_REQUEST_BYTES}")
    try:
        body = json.loads(payload)
    except ValueError as error:
        raise invalid(f"request is not JSON: {error}") from None
    if not isinstance(body, dict):
        raise invalid("request must be a JSON object")
    proxy, csr, validity, token = body.get("proxy"), body.get("csr"), body.get("validity_seconds"), body.get("join_token")
    kubernetes_token = body.get("kubernetes_token")
    if not isinstance(proxy, str) or not proxy:
        raise invalid("request.proxy: give the proxy's id (name.namespace)")
    if not isinstance(csr, str) or not csr:
        raise invalid("request.csr: give the CSR (PEM)")
    if validity is not None and (not isinstance(validity, int) or isinstance(validity, bool) or validity <= 0):
        raise invalid(f"request.validity_seconds: {validity!r} is not a positive number of seconds")
    if token is not None and not isinstance(token, str):
        raise invalid("request.join_token: must be a string")
    if kubernetes_token is not None and not isinstance(kubernetes_token, str):
        raise invalid("request.kubernetes_token: must be a string")
    task_id = body.get("marathon_task_id")
    if task_id is not None and not isinstance(task_id, str):
        raise invalid("request.marathon_task_id: must be a string")
    return SignRequest(proxy_id_of_node(proxy), csr.encode(), datetime.timedelta(seconds=validity) if validity else None, token or None,
                       kubernetes_token or None, task_id or None)


def check_nothing_else_requested(csr_pem: bytes) -> None:
    """CsrRefused when the CSR asks for more than one URI SAN: to be a CA, or any other extension."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as error:
        raise CsrRefused(f"not a PEM certificate signing request: {error}") from None
    for extension in csr.extensions:
        if isinstance(extension.value, x509.BasicConstraints) and extension.value.ca:
            raise CsrRefused("the CSR asks to be a CA (basicConstraints CA:TRUE): workload certificates never are")
        if not isinstance(extension.value, x509.SubjectAlternativeName):
            raise CsrRefused(f"the CSR asks for the extension {extension.oid._name or extension.oid.dotted_string}: "
                             "a workload CSR asks for one URI SAN and nothing else")
    csr_spiffe_id(csr)  # exactly one SAN, a URI


class CertificateService:
    """Signs CSRs with the control plane's intermediate, for callers entitled to them.

    identity_of(proxy_id): the SPIFFE ID the mesh gives that proxy now, None when the mesh has
    no such proxy (the served mesh changes under edits)."""

    def __init__(self, issuer: Authority, identity_of: Callable[[str], str | None], tokens: JoinTokens | None,
                 lifetime: datetime.timedelta = DEFAULT_CERT_LIFETIME, on_refusal: Callable[[str], None] | None = None,
                 token_identity: Callable[[str, str], str] | None = None,
                 task_attestation: Callable[[str, str, str], None] | None = None):
        self.issuer, self.identity_of, self.tokens, self.lifetime = issuer, identity_of, tokens, lifetime
        self.on_refusal = on_refusal  # the status endpoint's list of refusals
        # token_identity(proxy_id, service-account token): the SPIFFE ID the token proves for
        # that proxy (its cluster's TokenReview); raises ServiceAccountTokenRefused.
        self.token_identity = token_identity
        # task_attestation(proxy_id, Marathon task id, caller's address): returns when Marathon
        # vouches that this task runs, is that proxy's and calls from its host; raises MarathonTaskRefused.
        self.task_attestation = task_attestation
        self.bootstrap_of: Callable[[str, list, str], dict] | None = None  # (proxy, xds addresses, certs dir) -> its bootstrap
        self.signed = 0
        self._expiries: dict[str, str] = {}  # proxy -> notAfter of the last certificate signed for it (for status)
        self._lock = threading.Lock()

    def create_certificate(self, request: SignRequest, peer_pem: bytes | None, now: datetime.datetime | None = None,
                           peer_address: str = "") -> list[str]:
        """The chain (leaf first, PEM strings); CsrServiceRefusal saying why it is not signed."""
        expected = self.identity_of(request.proxy)
        if expected is None:
            raise CsrServiceRefusal(grpc.StatusCode.PERMISSION_DENIED, f"unknown proxy {request.proxy}: the mesh config has no such WorkloadEntry or Gateway")
        if peer_pem is not None:
            self._check_renewal(request, peer_pem, expected)
        elif request.kubernetes_token is not None:
            return self._sign_for_pod(request, expected, now)
        elif request.marathon_task_id is not None:
            return self._sign_for_task(request, expected, now, peer_address)
        elif request.join_token is None:
            raise CsrServiceRefusal(grpc.StatusCode.UNAUTHENTICATED, f"proxy {request.proxy}: no client certificate and no join token "
                                    "(renew over mTLS with the current certificate, or join with a token from `meshwright join-token`)")
        elif self.tokens is None:
            raise CsrServiceRefusal(grpc.StatusCode.UNAUTHENTICATED, "this control plane takes no join tokens (start it with --join-tokens DIR)")
        try:
            if peer_pem is None:
                self.tokens.check(request.join_token, request.proxy)
            chain = self._sign(request, expected, now)
            if peer_pem is None:
                self.tokens.redeem(request.join_token, request.proxy)  # the rename only one caller wins
        except TokenRefused as error:
            raise CsrServiceRefusal(grpc.StatusCode.PERMISSION_DENIED, f"proxy {request.proxy}: {error}") from None
        return chain

    def _sign_for_pod(self, request: SignRequest, expected: str, now: datetime.datetime | None) -> list[str]:
        """A pod's first certificate: its service-account token, reviewed by its cluster's API
        server, must prove the identity the mesh gives the proxy."""
        if self.token_identity is None:
            raise CsrServiceRefusal(grpc.StatusCode.UNAUTHENTICATED,
                                    "this control plane watches no Kubernetes cluster (--kubeconfig): no service-account tokens")
        try:
            proven = self.token_identity(request.proxy, request.kubernetes_token)
        except ServiceAccountTokenRefused as error:
            raise CsrServiceRefusal(grpc.StatusCode.PERMISSION_DENIED, f"proxy {request.proxy}: {error}") from None
        if proven != expected:
            raise CsrServiceRefusal(grpc.StatusCode.PERMISSION_DENIED,
                                    f"proxy {request.proxy}, whose identity is {expected}: the service-account token proves {proven}")
        return self._sign(request, expected, now)

    def _sign_for_task(self, request: SignRequest, expected: str, now: datetime.datetime | None, peer_address: str) -> list[str]:
        """A Marathon task's first certificate: Marathon must say the task runs, belongs to the
        run spec that made the proxy, and runs where the call comes from. The identity is the
        one the mesh gives the proxy (from the app's labels): the task never chooses it."""
        if self.task_attestation is None:
            raise CsrServiceRefusal(grpc.StatusCode.UNAUTHENTICATED, "this control plane follows no Marathon (--marathon): no task ids")
        try:
            self.task_attestation(request.proxy, request.marathon_task_id, peer_address)
        except MarathonTaskRefused as error:
            raise CsrServiceRefusal(grpc.StatusCode.PERMISSION_DENIED, f"proxy {request.proxy}: {error}") from None
        return self._sign(request, expected, now)

    def _sign(self, request: SignRequest, expected: str, now: datetime.datetime | None) -> list[str]:
        """The chain (leaf first, PEM strings) for a CSR that asks for expected and nothing else."""
        try:
            check_nothing_else_requested(request.csr)
            chain = sign_csr(request.csr, expected, self.issuer, min(request.validity or self.lifetime, self.lifetime), now, allow_rsa=True)
        except CsrRefused as error:
            raise CsrServiceRefusal(grpc.StatusCode.PERMISSION_DENIED, f"proxy {request.proxy}: {error}") from None
        except AuthorityExpired as error:
            raise CsrServiceRefusal(grpc.StatusCode.FAILED_PRECONDITION, str(error)) from None
        certificates = x509.load_pem_x509_certificates(chain)
        with self._lock:
            self.signed += 1
            self._expiries[request.proxy] = certificates[0].not_valid_after_utc.isoformat()
        return [certificate_pem(c).decode() for c in certificates]

    def expiries(self) -> dict[str, str]:
        """Per proxy, when the last certificate this service signed for it expires (ISO 8601)."""
        with self._lock:
            return dict(self._expiries)

    def _check_renewal(self, request: SignRequest, peer_pem: bytes, expected: str) -> None:
        presented = certificate_spiffe_ids(peer_pem)
        if expected not in presented:
            raise CsrServiceRefusal(grpc.StatusCode.PERMISSION_DENIED,
                                    f"proxy {request.proxy}, whose identity is {expected}: the client certificate proves "
                                    f"{', '.join(presented) or 'no SPIFFE ID'}")

    def handle(self, payload: bytes, context: grpc.ServicerContext) -> bytes:
        """The gRPC method: JSON in, JSON out; a refusal is logged and sent as the call's status."""
        peer_pem = peer_certificate(context.auth_context())
        request = None
        try:
            request = parse_request(payload)
            chain = self.create_certificate(request, peer_pem, peer_address=peer_host(context.peer()))
        except CsrServiceRefusal as refusal:
            how = "mTLS" if peer_pem else first_join_kind(request)
            LOG.warning("refused CSR from %s (%s): %s", context.peer(), how, refusal)
            if self.on_refusal is not None:
                self.on_refusal(f"CSR from {context.peer()} ({how}): {refusal}")
            context.abort(refusal.code, str(refusal))
        how = "renewal" if peer_pem else first_join_kind(request)
        LOG.info("signed a certificate for proxy %s (%s) from %s, valid until %s", request.proxy, how,
                 context.peer(), x509.load_pem_x509_certificate(chain[0].encode()).not_valid_after_utc.isoformat())
        return json.dumps({"cert_chain": chain}).encode()

    def handle_bootstrap(self, payload: bytes, context: grpc.ServicerContext) -> bytes:
        """GetBootstrap: {"proxy", "xds": ["HOST:PORT", ...], "certs_dir"} -> the proxy's xDS
        bootstrap (JSON), for the proxy whose identity the client certificate proves."""
        peer_pem = peer_certificate(context.auth_context())
        try:
            proxy, xds, certs_dir = parse_bootstrap_request(payload)
            expected = self.identity_of(proxy)
            if expected is None:
                raise CsrServiceRefusal(grpc.StatusCode.NOT_FOUND, f"unknown proxy {proxy}: the mesh has no such WorkloadEntry or Gateway (yet)")
            if peer_pem is None:
                raise CsrServiceRefusal(grpc.StatusCode.UNAUTHENTICATED, f"proxy {proxy}: a bootstrap is served over mTLS only")
            self._check_renewal(SignRequest(proxy, b"", None, None), peer_pem, expected)
            if self.bootstrap_of is None:
                raise CsrServiceRefusal(grpc.StatusCode.UNIMPLEMENTED, "this control plane serves no bootstraps")
            return json.dumps(self.bootstrap_of(proxy, xds, certs_dir), sort_keys=True).encode()
        except CsrServiceRefusal as refusal:
            LOG.warning("refused a bootstrap to %s: %s", context.peer(), refusal)
            context.abort(refusal.code, str(refusal))


def parse_bootstrap_request(payload: bytes) -> tuple[str, list[tuple[str, int]], str]:
    def invalid(reason: str) -> CsrServiceRefusal:
        return CsrServiceRefusal(grpc.StatusCode.INVALID_ARGUMENT, reason)

    try:
        body = json.loads(payload) if len(payload) <= MAX_REQUEST_BYTES else None
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("proxy"), str) or not isinstance(body.get("certs_dir"), str):
        raise invalid('expected {"proxy": "name.ns", "xds": ["HOST:PORT", ...], "certs_dir": "/absolute/path"}')
    addresses = []
    for address in body.get("xds") or []:
        host, sep, port = str(address).rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise invalid(f"request.xds: {address!r} is not HOST:PORT")
        addresses.append((host.strip("[]"), int(port)))
    if not addresses or not body["certs_dir"].startswith("/"):
        raise invalid("request.xds: give the control plane's addresses; request.certs_dir: an absolute path")
    return proxy_id_of_node(body["proxy"]), addresses, body["certs_dir"]


def first_join_kind(request: SignRequest | None) -> str:
    """How a caller without a certificate proves itself (for log lines)."""
    if request is not None and request.kubernetes_token:
        return "service-account token"
    if request is not None and request.marathon_task_id:
        return "Marathon task"
    return "join token"


def peer_host(peer: str) -> str:
    """The address of a gRPC peer ("ipv4:127.0.0.1:5000", "ipv6:[::1]:5000")."""
    kind, dummy, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return ""
    return rest.rpartition(":")[0].strip("[]")


def serving_certificate(issuer: Authority, spiffe: str, now: datetime.datetime | None = None) -> tuple[bytes, bytes]:
    """(key, chain) PEM of the CSR ports' server certificate: CA_SERVER_NAME and the control
    plane's SPIFFE ID, from the intermediate, for server authentication only."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + SERVING_LIFETIME, issuer.expiry()))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=True, data_encipherment=False,
            key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(CA_SERVER_NAME), x509.UniformResourceIdentifier(spiffe)]), critical=True)
        .sign(issuer.key, hashes.SHA256())
    )
    return private_key_pem(key), b"".join(certificate_pem(c) for c in [leaf, *issuer.chain()])


class ServingCertificate:
    """The CSR ports' certificate, minted again two thirds into its life (gRPC asks at each handshake)."""

    def __init__(self, issuer: Authority, spiffe: str, roots: bytes):
        self.issuer, self.spiffe, self.roots = issuer, spiffe, roots
        self._lock = threading.Lock()
        self._renew_at = None
        self.configuration = self._mint()

    def _mint(self) -> grpc.ServerCertificateConfiguration:
        now = datetime.datetime.now(datetime.timezone.utc)
        key, chain = serving_certificate(self.issuer, self.spiffe, now)
        self._renew_at = now + SERVING_LIFETIME * 2 / 3
        return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=self.roots)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            if datetime.datetime.now(datetime.timezone.utc) < self._renew_at:
                return None
            self.configuration = self._mint()
            return self.configuration


class CountingExecutor(futures.ThreadPoolExecutor):
    """A thread pool that knows how many calls it holds (waiting or running): what gRPC
    counts against maximum_concurrent_rpcs, as gRPC gives each call to the pool."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.held = 0
        self._count_lock = threading.Lock()

    def submit(self, fn, /, *args, **kwargs):
        with self._count_lock:
            self.held += 1
        try:
            return super().submit(self._counted, fn, *args, **kwargs)
        except BaseException:
            self._done()
            raise

    def _counted(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        finally:
            self._done()

    def _done(self) -> None:
        with self._count_lock:
            self.held -= 1


class CsrAdmission(grpc.GenericRpcHandler):
    """The CSR method (and the bootstrap one beside it). gRPC refuses a call beyond max_calls at once itself
    (RESOURCE_EXHAUSTED, before any worker takes it), after asking this handler for the
    method: a call it will refuse is logged here and shown by status, so a flood leaves its
    lines while the calls admitted are signed."""

    def __init__(self, certificates: CertificateService, pool: CountingExecutor, max_calls: int) -> None:
        self.certificates, self.pool, self.max_calls = certificates, pool, max_calls

    def service(self, handler_call_details):
        if handler_call_details.method == f"/{SERVICE}/{BOOTSTRAP_METHOD}":
            return grpc.unary_unary_rpc_method_handler(self.certificates.handle_bootstrap)
        if handler_call_details.method != f"/{SERVICE}/{METHOD}":
            return None
        if self.pool.held >= self.max_calls:
            reason = f"{self.max_calls} CSR calls are in progress, the most this instance takes at once"
            LOG.warning("refused a CSR call: %s (answered RESOURCE_EXHAUSTED; the agent retries)", reason)
            if self.certificates.on_refusal is not None:
                self.certificates.on_refusal(f"CSR call: {reason}")
        return grpc.unary_unary_rpc_method_handler(self.certificates.handle)


def csr_server(service: CertificateService, serving: ServingCertificate, csr_listen: tuple[str, int] | None,
               join_listen: tuple[str, int] | None, workers: int = 8, max_calls: int | None = None) -> tuple[grpc.Server, int | None, int | None]:
    """The CSR service, started: on csr_listen with client certificates required (renewal), on
    join_listen with none asked (join tokens). The ports it listens on. More than max_calls
    calls at once (default 4 per worker) are refused (CsrAdmission)."""
    max_calls = max_calls or 4 * workers
    pool = CountingExecutor(max_workers=workers, thread_name_prefix="csr")
    server = grpc.server(pool, maximum_concurrent_rpcs=max_calls)
    server.add_generic_rpc_handlers((CsrAdmission(service, pool, max_calls),))
    ports = []
    for listen, require_client_auth in ((csr_listen, True), (join_listen, False)):
        if listen is None:
            ports.append(None)
            continue
        credentials = grpc.dynamic_ssl_server_credentials(serving.configuration, serving.fetch, require_client_authentication=require_client_auth)
        host, port = listen
        ports.append(server.add_secure_port(f"[{host}]:{port}" if ":" in host else f"{host}:{port}", credentials))
    server.start()
    return server, ports[0], ports[1]
