"""`meshwright serve`: the ADS gRPC server, the status endpoint and the watched mesh, wired.

The gRPC server listens with mTLS: its certificate from the mesh CA (the control plane's
SPIFFE ID, pki/spiffe.py), client certificates required and verified against the mesh's
roots. The plaintext mode is for development on one machine: it listens on loopback only
and checks no certificate (unknown node ids are still refused).
"""

from __future__ import annotations

import asyncio
import http.server
import ipaddress
import json
import logging
import datetime
import socket
import threading
from dataclasses import dataclass
from typing import Callable, Sequence

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import DecodeError

from meshwright.compile.xds_bootstrap import XdsServer
from meshwright.mesh import Mesh
from meshwright.pki.ca import Authority
from meshwright.pki.spiffe import control_plane_spiffe_id, spiffe_id
from meshwright.serve.bootstrap import xds_bootstrap
from meshwright.serve.certificates import (DEFAULT_CERT_LIFETIME, CertificateService, MarathonTaskRefused, ServiceAccountTokenRefused,
                                           ServingCertificate, csr_server)
from meshwright.serve.join_tokens import JoinTokens
from meshwright.serve.plane import ControlPlane
from meshwright.serve.registries import Registry, publisher
from meshwright.serve.source import MeshFolder
from meshwright.serve.status import StatusEndpoint

LOG = logging.getLogger("meshwright.serve")
# The bound on connected proxies of one instance. Streams are coroutines on one event loop
# (grpc.aio), a few kB each between pushes; what bounds them is the CPU a push takes.
DEFAULT_MAX_STREAMS = 4096
ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"


def server_options(max_streams: int) -> tuple:
    """A stream that arrives while the loop is busy (a reconnect storm) waits in gRPC's core
    until the loop takes it. gRPC's defaults cancel it after 30 s there, or turn it away
    beyond 1,000 waiting, and the proxy starts again from the back of the queue: every
    stream this instance may serve may wait, as long as a storm of them takes."""
    return (("grpc.server_max_unrequested_time_in_server", 600), ("grpc.server.max_pending_requests", max(max_streams, 1000)),
            ("grpc.server.max_pending_requests_hard_limit", max(2 * max_streams, 3000)))


@dataclass(frozen=True)
class ServerTls:
    """PEM bytes: the server's certificate chain and key, and the roots client certificates must chain to."""

    certificate_chain: bytes
    private_key: bytes
    client_roots: bytes


@dataclass(frozen=True)
class CsrSettings:
    """The CSR service (serve/certificates.py): the intermediate it signs with, where it
    listens (mTLS for renewals, server TLS for join tokens), the tokens directory, the lifetime."""

    issuer: Authority
    csr_listen: tuple[str, int]
    join_listen: tuple[str, int] | None = None
    tokens_dir: str | None = None
    lifetime: datetime.timedelta = DEFAULT_CERT_LIFETIME


class AdsService:
    """Both ADS methods, up to max_streams streams at once: one more is refused with
    RESOURCE_EXHAUSTED and a log line (Envoy retries it, maybe on another instance), and the
    others go on being served."""

    def __init__(self, plane: ControlPlane, max_streams: int = DEFAULT_MAX_STREAMS):
        self.plane, self.max_streams = plane, max_streams
        self._open = 0  # touched on the server's loop only

    # Async generator functions themselves: grpc.aio tells the kind of a handler by its function.
    async def StreamAggregatedResources(self, request_iterator, context):
        async for response in self._serve(request_iterator, context, delta=False):
            yield response

    async def DeltaAggregatedResources(self, request_iterator, context):
        async for response in self._serve(request_iterator, context, delta=True):
            yield response

    async def _serve(self, request_iterator, context, delta: bool):
        if self._open >= self.max_streams:
            reason = f"{self.max_streams} xDS streams are open, the most this instance serves (meshwright serve --max-streams)"
            LOG.warning("refused xDS stream from %s: %s", context.peer(), reason)
            self.plane.record_refusal(f"{context.peer()}: {reason}")
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, reason)
        self._open += 1
        try:
            async for response in self.plane.serve(request_iterator, context, delta=delta):
                yield response
        finally:
            self._open -= 1

    def handler(self) -> grpc.GenericRpcHandler:
        """The service's methods; responses the streams built as bytes are sent as they are."""
        request = parsed_or_refused(discovery_pb2.DiscoveryRequest)
        delta_request = parsed_or_refused(discovery_pb2.DeltaDiscoveryRequest)
        return grpc.method_handlers_generic_handler(ADS_SERVICE, {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self.StreamAggregatedResources, request_deserializer=request, response_serializer=_serialized),
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self.DeltaAggregatedResources, request_deserializer=delta_request, response_serializer=_serialized),
        })


def _serialized(response) -> bytes:
    return response if isinstance(response, bytes) else response.SerializeToString()


def parsed_or_refused(message_class):
    """A request deserializer that logs a request that is not a message_class (and gives None:
    gRPC then ends that stream with INTERNAL), rather than gRPC's traceback."""
    def parse(data: bytes):
        try:
            return message_class.FromString(data)
        except DecodeError as error:
            LOG.warning("refused a malformed xDS request (%d bytes, not a %s): %s", len(data), message_class.DESCRIPTOR.name, error)
            return None
    return parse


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class AioServer:
    """A grpc.aio server on an event loop of its own, in a thread of its own: the rest of
    `meshwright serve` (the watch, the registries, the status endpoint) runs in threads."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="xds", daemon=True)
        self._thread.start()
        self.server: grpc.aio.Server | None = None

    def run(self, coroutine, timeout: float | None = 30):
        """coroutine's result, run on the server's loop."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self, grace: float | None = None) -> "AioServer":
        """Stop serving (streams get grace seconds to end); wait() then ends the loop."""
        if self.server is not None:
            self.run(self.server.stop(grace), timeout=None if grace is None else grace + 10)
        return self

    def wait(self, timeout: float | None = None) -> bool:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        return not self._thread.is_alive()


def grpc_server(plane: ControlPlane, host: str, port: int, tls: ServerTls | None, max_streams: int = DEFAULT_MAX_STREAMS) -> tuple[AioServer, int]:
    """The ADS server, started; the port it listens on (port 0: one the system chose)."""
    if tls is None and not is_loopback(host):
        raise ValueError(f"plaintext xDS listens on loopback only, not {host} (give the control plane a certificate for anything else)")
    address = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    running = AioServer()

    async def started() -> int:
        server = running.server = grpc.aio.server(options=server_options(max_streams))
        server.add_generic_rpc_handlers((AdsService(plane, max_streams).handler(),))
        if tls is None:
            bound = server.add_insecure_port(address)
        else:
            credentials = grpc.ssl_server_credentials([(tls.private_key, tls.certificate_chain)], root_certificates=tls.client_roots,
                                                      require_client_auth=True)
            bound = server.add_secure_port(address, credentials)
        await server.start()
        return bound

    try:
        return running, running.run(started())
    except BaseException:
        running.wait(5)
        raise


def instance_name(host: str, port: int) -> str:
    """How status names this instance: the xDS address it listens on, the host's name for an
    address that is every interface (instances on several hosts all listen on 0.0.0.0)."""
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def status_server(endpoint: StatusEndpoint, host: str, port: int) -> http.server.ThreadingHTTPServer:
    """GET /status and /config?proxy=NAME (serve/status.py) as JSON, on loopback only, in a thread of its own."""
    if not is_loopback(host):
        raise ValueError(f"the status endpoint listens on loopback only, not {host}")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            code, answer = endpoint.answer(self.path)
            # Compact: json's C encoder (indent takes the Python one, 5x slower on 2,000 streams' status).
            body = json.dumps(answer, sort_keys=True, separators=(",", ":")).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="status", daemon=True).start()
    return server


def proxy_identity(plane: ControlPlane, proxy_id: str) -> str | None:
    """The SPIFFE ID the served mesh gives a proxy now; None when it has no such proxy."""
    estate = plane.estate
    proxy = estate.proxies.get(proxy_id)
    if proxy is None:
        return None
    return spiffe_id(estate.mesh.settings.trust_domain, proxy.namespace, proxy.service_account)


def pod_token_identity(plane: ControlPlane, reviewers: dict) -> Callable[[str, str], str]:
    """token_identity for the CSR service: the SPIFFE ID a pod's service-account token proves,
    reviewed by the API server of the cluster the proxy's WorkloadEntry came from; a token
    bound to another pod is refused."""

    def identity(proxy_id: str, token: str) -> str:
        name, dummy, namespace = proxy_id.rpartition(".")  # a namespace has no dot, a pod's name may
        mesh = plane.estate.mesh
        entry = mesh.find("WorkloadEntry", namespace, name)
        reviewer = reviewers.get(entry.source.file.split(":", 1)[0]) if entry is not None else None
        if reviewer is None:
            raise ServiceAccountTokenRefused("it is not a pod of a cluster this control plane watches: no service-account token proves it")
        reviewed = reviewer.review(token)
        if reviewed.pod is not None and (reviewed.namespace, reviewed.pod) != (namespace, name):
            raise ServiceAccountTokenRefused(f"the token is bound to the pod {reviewed.namespace}/{reviewed.pod}")
        return spiffe_id(mesh.settings.trust_domain, reviewed.namespace, reviewed.service_account)

    return identity


def task_attestation(plane: ControlPlane, attesters: dict) -> Callable[[str, str, str], None]:
    """task_attestation for the CSR service: the Marathon registry the proxy's WorkloadEntry
    came from attests the task (serve/marathon.py MarathonRegistry.attest_task)."""

    def attest(proxy_id: str, task_id: str, peer: str) -> None:
        name, dummy, namespace = proxy_id.rpartition(".")
        entry = plane.estate.mesh.find("WorkloadEntry", namespace, name)
        attester = attesters.get(entry.source.file.split(":", 1)[0]) if entry is not None else None
        if attester is None:
            raise MarathonTaskRefused("it is not a task of a Marathon this control plane follows")
        attester(proxy_id, task_id, peer)

    return attest


def bootstrap_of(plane: ControlPlane) -> Callable[[str, list, str], dict]:
    """A proxy's xDS bootstrap from the served mesh (for sidecars that have no mesh files)."""
    return lambda proxy_id, addresses, certs_dir: xds_bootstrap(plane.estate.mesh, proxy_id, XdsServer(tuple(addresses), certs_dir))


def start_csr_service(plane: ControlPlane, settings: CsrSettings, roots: bytes,
                      registries: Sequence[Registry] = ()) -> tuple[CertificateService, grpc.Server, int, int | None]:
    """The CSR service on its ports, signing for the proxies of the plane's current mesh; pods
    of the Kubernetes registries join with their service-account tokens."""
    tokens = JoinTokens(settings.tokens_dir) if settings.tokens_dir else None
    reviewers = {registry.name: registry.token_reviewer() for registry in registries if hasattr(registry, "token_reviewer")}
    attesters = {registry.name: registry.attest_task for registry in registries if hasattr(registry, "attest_task")}
    service = CertificateService(settings.issuer, lambda proxy_id: proxy_identity(plane, proxy_id), tokens, settings.lifetime,
                                 plane.record_refusal, pod_token_identity(plane, reviewers) if reviewers else None,
                                 task_attestation(plane, attesters) if attesters else None)
    service.bootstrap_of = bootstrap_of(plane)
    serving = ServingCertificate(settings.issuer, control_plane_spiffe_id(plane.estate.mesh.settings.trust_domain), roots)
    server, csr_port, join_port = csr_server(service, serving, settings.csr_listen,
                                             settings.join_listen if tokens or reviewers or attesters else None)
    return service, server, csr_port, join_port


class Running:
    """A started control plane: stop() ends the watch, the status endpoint and the gRPC servers."""

    def __init__(self, plane: ControlPlane, grpc_port: int, status_port: int | None, stoppers: list):
        self.plane, self.grpc_port, self.status_port, self._stoppers = plane, grpc_port, status_port, stoppers
        self.csr_port: int | None = None
        self.join_port: int | None = None
        self.certificates: CertificateService | None = None

    def stop(self) -> None:
        for stop in reversed(self._stoppers):
            stop()


def start(mesh: Mesh, paths: list[str], listen: tuple[str, int], tls: ServerTls | None,
          status_listen: tuple[str, int] | None = None, watch: bool = True, csr: CsrSettings | None = None,
          registries: Sequence[Registry] = (), max_streams: int = DEFAULT_MAX_STREAMS) -> Running:
    """Serve mesh (loaded and valid from paths) and watch paths for edits; with csr, the CSR
    service too (mTLS only); registries add their resources as they publish them."""
    if csr is not None and tls is None:
        raise ValueError("the CSR service needs mTLS (it verifies proxies' certificates against the mesh roots): not with plaintext xDS")
    plane = ControlPlane(mesh, require_identity=tls is not None)
    stoppers = []
    server, port = grpc_server(plane, *listen, tls, max_streams)
    stoppers.append(lambda: server.stop(grace=1).wait(5))
    status_port = None
    endpoint = StatusEndpoint(plane, instance_name(listen[0], port), registries=registries)
    if status_listen is not None:
        http_server = status_server(endpoint, *status_listen)
        status_port = http_server.server_address[1]
        stoppers.append(lambda: (http_server.shutdown(), http_server.server_close()))
    running = Running(plane, port, None, stoppers)
    if csr is not None:
        running.certificates, csr_grpc, running.csr_port, running.join_port = start_csr_service(plane, csr, tls.client_roots, registries)
        endpoint.certificates = running.certificates
        stoppers.append(lambda: csr_grpc.stop(grace=1).wait(5))
        LOG.info("signing workload certificates (%s) on %s:%d (renewal, mTLS)%s", csr.lifetime, csr.csr_listen[0], running.csr_port,
                 f" and {csr.join_listen[0]}:{running.join_port} (join tokens from {csr.tokens_dir})" if running.join_port else "")
    for registry in registries:
        registry.start(publisher(plane, registry.name))
        stoppers.append(registry.stop)
        LOG.info("registry %s started", registry.name)
    if watch:
        folder = MeshFolder(paths, plane.apply_loaded)
        folder.start()
        stoppers.append(folder.stop)
    LOG.info("serving %d proxies over ADS on %s:%d (%s)%s", len(plane.estate.proxies), listen[0], port,
             "mTLS" if tls else "plaintext, loopback only", f"; status on http://{status_listen[0]}:{status_port}/status" if status_listen else "")
    running.status_port = status_port
    return running
