"""What the control plane serves one proxy: its compiled resources by xDS type, each with its
version (compile/incremental.py's content hash), encoded once per version as a protobuf Any.

Endpoints travel by EDS, routes by RDS, and, with workload identity, the secrets "default"
and "ROOTCA" by SDS. Their content still names PEM files in the proxy's certs directory on
its host (node metadata CERTS_DIR), which Envoy watches: certificates are files on the host
for now, written by Ansible (later by `meshwright agent`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from google.protobuf import any_pb2, json_format

from meshwright.check.envoy_proto import message_class
from meshwright.compile.build import ProxyConfig
from meshwright.compile.envoy_values import CLUSTER, CLUSTER_LOAD_ASSIGNMENT, LISTENER, ROUTE_CONFIGURATION, TYPE_PREFIX
from meshwright.compile.incremental import CompiledEstate, digest, resource_name
from meshwright.compile.secrets import SECRET, workload_secrets
from meshwright.compile.telemetry import with_stat_names

# The order of a push: what a resource points at goes before it (clusters before the
# endpoints and listeners that use them, listeners before their routes), as istiod does.
PUSH_ORDER = (CLUSTER, CLUSTER_LOAD_ASSIGNMENT, LISTENER, ROUTE_CONFIGURATION, SECRET)
# Types a proxy subscribes to as a whole (wildcard); the others it asks for by name.
WILDCARD_TYPES = frozenset((CLUSTER, LISTENER))
KIND_OF_TYPE = {CLUSTER: "clusters", CLUSTER_LOAD_ASSIGNMENT: "endpoints", LISTENER: "listeners", ROUTE_CONFIGURATION: "routes", SECRET: "secrets"}
TYPE_OF_KIND = {kind: type_url for type_url, kind in KIND_OF_TYPE.items()}


@dataclass(frozen=True)
class Served:
    """One resource as served: its version and its content (never changed once built)."""

    version: str
    content: dict


Snapshot = dict[str, dict[str, Served]]  # type URL -> resource name -> served


def proxy_config(estate: CompiledEstate, proxy_id: str) -> ProxyConfig:
    """The proxy's compiled config, as build.compile_proxy gives it, from the estate's groups
    (a class's shared config with the proxy's stat names on top)."""
    proxy = estate.proxies[proxy_id]
    group = estate.groups[estate.group_of[proxy_id]]
    if not group.is_class:
        return group.config
    shared = group.config
    return ProxyConfig(proxy, shared.listeners, shared.routes, with_stat_names(estate.mesh, proxy, shared.telemetry, shared.clusters),
                       shared.endpoints, shared.telemetry)


def proxy_snapshot(estate: CompiledEstate, proxy_id: str, certs_dir: str | None) -> Snapshot:
    """Every resource of the proxy by type, with the estate's versions."""
    config = proxy_config(estate, proxy_id)
    versions = estate.versions(proxy_id)
    snapshot: Snapshot = {}
    for kind in ("clusters", "endpoints", "listeners", "routes"):
        table = versions[kind]
        snapshot[TYPE_OF_KIND[kind]] = {resource_name(r): Served(table[resource_name(r)], r) for r in getattr(config, kind)}
    secrets = workload_secrets(certs_dir) if estate.mesh.settings.identity_enabled and certs_dir else []
    snapshot[SECRET] = {secret["name"]: Served(digest(secret), secret) for secret in secrets}
    return snapshot


class Encoder:
    """Resources as protobuf Any, each (type, version) encoded once: proxies of a class share
    most versions, and a push re-sends what did not change only in state of the world."""

    def __init__(self, limit: int = 1 << 16) -> None:
        self._cache: dict[tuple[str, str], any_pb2.Any] = {}
        self._lock = threading.Lock()
        self._limit = limit

    def encode(self, type_url: str, served: Served) -> any_pb2.Any:
        key = (type_url, served.version)
        found = self._cache.get(key)
        if found is None:
            # One at a time: json_format takes an Any's "@type" out of the dict while it parses it
            # (and puts it back), so two streams parsing one shared resource at once fail.
            with self._lock:
                found = self._cache.get(key) or self._parsed(type_url, served)
                if len(self._cache) >= self._limit:
                    self._cache.clear()
                self._cache[key] = found
        return found

    @staticmethod
    def _parsed(type_url: str, served: Served) -> any_pb2.Any:
        _register_types(served.content)
        message = json_format.ParseDict(served.content, message_class(type_url[len(TYPE_PREFIX):])())
        found = any_pb2.Any()
        found.Pack(message)
        return found


def _register_types(value) -> None:
    """Import the proto modules of every typed_config inside value (json_format looks them up)."""
    if isinstance(value, dict):
        type_url = value.get("@type")
        if isinstance(type_url, str) and type_url.startswith(TYPE_PREFIX):
            message_class(type_url[len(TYPE_PREFIX):])
        for item in value.values():
            _register_types(item)
    elif isinstance(value, list):
        for item in value:
            _register_types(item)
