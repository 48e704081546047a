"""The Envoy bootstrap of a proxy that takes its config from `meshwright serve` over ADS
(docs/control-plane.md), beside compile/bootstrap.py's for file delivery, which it reuses:
the same node, admin, health and stats listeners; listeners and clusters from ADS, and a
static gRPC cluster to the control plane instances.

With mTLS (the default), the proxy dials the control plane with its workload certificate and
accepts only a server certificate with the control plane's SPIFFE ID from the mesh's roots.
The cluster reads both through file-based SDS, from the files `meshwright agent` writes in the
certs directory (compile/secrets.py certs_dir_secret_files), which name the PEM files there:
Envoy re-reads them when the agent renews, so a reconnect (an instance stopped, a failover)
presents the current certificate, not the one Envoy started with, which may have expired.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from meshwright.compile.bootstrap import compile_bootstrap
from meshwright.compile.clusters import static_cluster
from meshwright.compile.envoy_values import ADS, UPSTREAM_TLS, socket_address, subject_alt_name_matchers, typed
from meshwright.compile.proxy import Proxy
from meshwright.compile.secrets import DEFAULT_SECRET, ROOT_SECRET, certs_dir_secret_config
from meshwright.compile.telemetry import ProxyTelemetry
from meshwright.mesh import MeshSettings
from meshwright.pki.spiffe import control_plane_spiffe_id

XDS_CLUSTER = "xds-grpc"
# Node metadata naming the proxy's certs directory on its host: the control plane serves the
# secrets "default" and "ROOTCA" as SDS resources that read the PEM files there.
CERTS_DIR_METADATA = "CERTS_DIR"
# When its stream to an instance breaks (the instance stopped or died), Envoy opens a new one
# after this backoff, to the next instance of the cluster (round robin): Envoy's default starts
# at 500 ms and grows to 30 s, long for a proxy that holds config no one can update meanwhile.
RECONNECT = {"retry_back_off": {"base_interval": "0.1s", "max_interval": "2s"}}


@dataclass(frozen=True)
class XdsServer:
    """Where the proxy reaches the control plane: one address per instance."""

    addresses: tuple[tuple[str, int], ...]
    certs_dir: str | None  # the proxy's certs directory (mTLS); None: plaintext (loopback development only)
    delta: bool = False  # incremental xDS (DELTA_GRPC) instead of state of the world


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _xds_cluster(server: XdsServer, trust_domain: str) -> dict:
    """The gRPC cluster to the control plane: HTTP/2, every instance an endpoint."""
    first_host, first_port = server.addresses[0]
    cluster = static_cluster(XDS_CLUSTER, first_host, first_port, http2=True)
    cluster["load_assignment"]["endpoints"][0]["lb_endpoints"] = [
        {"endpoint": {"address": socket_address(host, port)}} for host, port in server.addresses]
    if not all(_is_ip(host) for host, dummy in server.addresses):
        cluster["type"] = "STRICT_DNS"
    if server.certs_dir is not None:
        cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": typed(UPSTREAM_TLS, common_tls_context={
            "tls_certificate_sds_secret_configs": [certs_dir_secret_config(DEFAULT_SECRET, server.certs_dir)],
            "combined_validation_context": {
                "default_validation_context": {"match_typed_subject_alt_names": subject_alt_name_matchers([control_plane_spiffe_id(trust_domain)])},
                "validation_context_sds_secret_config": certs_dir_secret_config(ROOT_SECRET, server.certs_dir),
            },
        })}
    return cluster


def compile_xds_bootstrap(proxy: Proxy, settings: MeshSettings, telemetry: ProxyTelemetry, server: XdsServer,
                          stat_tags: tuple[tuple[str, str], ...] = ()) -> dict:
    """The proxy's bootstrap for ADS from server (telemetry and stat_tags: the proxy's, as
    compile_proxy gives them)."""
    bootstrap = compile_bootstrap(proxy, settings, telemetry, {"lds": ADS, "cds": ADS}, stat_tags=stat_tags)
    bootstrap["dynamic_resources"]["ads_config"] = {
        "api_type": "DELTA_GRPC" if server.delta else "GRPC",
        "transport_api_version": "V3",
        "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER, "retry_policy": RECONNECT}}],
        "set_node_on_first_message_only": True,
    }
    bootstrap["static_resources"]["clusters"].append(_xds_cluster(server, settings.trust_domain))
    if server.certs_dir is not None:
        bootstrap["node"]["metadata"][CERTS_DIR_METADATA] = server.certs_dir
    return bootstrap
