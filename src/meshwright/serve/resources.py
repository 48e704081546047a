"""What the control plane serves one proxy: its compiled resources by xDS type, each with its
version (compile/incremental.py's content hash), encoded once per version as a protobuf Any.

Endpoints travel by EDS, routes by RDS, and, with workload identity, the secrets "default"
and "ROOTCA" by SDS. Their content still names PEM files in the proxy's certs directory on
its host (node metadata CERTS_DIR), which Envoy watches: certificates are files on the host
for now, written by Ansible (later by `meshwright agent`).
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Mapping

from google.protobuf import any_pb2, json_format

from meshwright.check.envoy_proto import message_class
from meshwright.compile.build import ProxyConfig
from meshwright.compile.envoy_values import CLUSTER, CLUSTER_LOAD_ASSIGNMENT, LISTENER, ROUTE_CONFIGURATION, TYPE_PREFIX
from meshwright.compile.incremental import STAT_NAME, CompiledEstate, digest, resource_name
from meshwright.compile.secrets import SECRET, workload_secrets
from meshwright.compile.telemetry import own_stat_tags, stat_names_per_proxy, with_stat_names

# The order of a push: what a resource points at goes before it (clusters before the
# endpoints and listeners that use them, listeners before their routes), as istiod does.
PUSH_ORDER = (CLUSTER, CLUSTER_LOAD_ASSIGNMENT, LISTENER, ROUTE_CONFIGURATION, SECRET)
# Types a proxy subscribes to as a whole (wildcard); the others it asks for by name.
WILDCARD_TYPES = frozenset((CLUSTER, LISTENER))
KIND_OF_TYPE = {CLUSTER: "clusters", CLUSTER_LOAD_ASSIGNMENT: "endpoints", LISTENER: "listeners", ROUTE_CONFIGURATION: "routes", SECRET: "secrets"}
TYPE_OF_KIND = {kind: type_url for type_url, kind in KIND_OF_TYPE.items()}


class Served:
    """One resource as served: its version and its content (never changed once built). A
    cluster that carries a proxy's stat name also names the class's cluster it copies
    (shared, without the stat name) and the stat name, so that its encoding is the shared
    one's bytes and the stat name's (Encoder.encode_bytes): proxies of a class share all
    but those few bytes, and its content is made only when asked for (status, proxy-config)."""

    __slots__ = ("version", "_content", "shared", "stat_name")

    def __init__(self, version: str, content: dict | None, shared: Served | None = None, stat_name: str = "") -> None:
        self.version, self._content, self.shared, self.stat_name = version, content, shared, stat_name

    @property
    def content(self) -> dict:
        if self._content is None:
            return {**self.shared.content, STAT_NAME: self.stat_name}
        return self._content


Snapshot = Mapping[str, dict[str, Served]]  # type URL -> resource name -> served


def proxy_config(estate: CompiledEstate, proxy_id: str) -> ProxyConfig:
    """The proxy's compiled config, as build.compile_proxy gives it, from the estate's groups
    (a class's shared config, with the proxy's stat names on top where they are its own)."""
    proxy = estate.proxies[proxy_id]
    group = estate.groups[estate.group_of[proxy_id]]
    if not group.is_class:
        return group.config
    shared = group.config
    return ProxyConfig(proxy, shared.listeners, shared.routes, with_stat_names(estate.mesh, proxy, shared.telemetry, shared.clusters),
                       shared.endpoints, shared.telemetry, stat_tags=own_stat_tags(estate.mesh, proxy, shared.telemetry))


class ProxySnapshot(Mapping):
    """Every resource of a proxy by type, with the estate's versions. What proxies of a group
    hold alike (endpoints, listeners, routes, clusters, secrets of one certs directory) is one
    table per estate that they all point at; clusters whose stat names are each proxy's
    (tagOverrides of its own labels) are built when asked for and not kept: a connected proxy
    costs the server almost nothing between pushes."""

    def __init__(self, estate: CompiledEstate, proxy_id: str, certs_dir: str | None) -> None:
        self.estate, self.proxy_id, self.certs_dir = estate, proxy_id, certs_dir
        self.group = estate.groups[estate.group_of[proxy_id]]

    def __getitem__(self, type_url: str) -> dict[str, Served]:
        if type_url == CLUSTER:
            return proxy_clusters(self.estate, self.proxy_id)
        if type_url not in TYPE_URLS:
            raise KeyError(type_url)
        return _shared_tables(self.estate, self.group.key, self.certs_dir, type_url)[type_url]

    def __iter__(self):
        return iter(TYPE_URLS)

    def __len__(self) -> int:
        return len(TYPE_URLS)

    def selected(self, type_url: str, names: frozenset[str] | None, version_of) -> tuple[dict[str, Served], str]:
        """The resources of a type the proxy asked for (names None: all) and version_of them.
        Of a type its group shares, worked out once per estate for the proxies that ask the
        same names (ads.py interns them: one frozenset for all); its clusters, each time."""
        if type_url == CLUSTER:
            table = self[CLUSTER]
            if names is None:
                return table, _table_version(self.estate, table, version_of)
            chosen = {name: table[name] for name in sorted(names) if name in table}
            return chosen, version_of(chosen)
        shared = _shared_tables(self.estate, self.group.key, self.certs_dir, type_url)
        key = ("selected", type_url, names)
        found = shared.get(key)
        if found is None:
            table = shared.get(type_url, {})
            chosen = table if names is None else {name: table[name] for name in sorted(names) if name in table}
            found = shared[key] = (chosen, version_of(chosen))
        return found


def _table_version(estate: CompiledEstate, table: dict[str, Served], version_of) -> str:
    """version_of a whole table of clusters, once per table a class shares (a reconnect storm
    asks it of every proxy: a hash over a thousand names and versions each time)."""
    shared = _shared(estate)
    key = ("version", id(table))
    found = shared.get(key)
    if found is None or found[0] is not table:
        found = (table, version_of(table))  # holds the table: its id stays its own
        with _SHARED_LOCK:
            shared[key] = found
    return found[1]


TYPE_URLS = (CLUSTER, CLUSTER_LOAD_ASSIGNMENT, LISTENER, ROUTE_CONFIGURATION, SECRET)


def proxy_snapshot(estate: CompiledEstate, proxy_id: str, certs_dir: str | None) -> ProxySnapshot:
    """Every resource of the proxy by type, with the estate's versions."""
    return ProxySnapshot(estate, proxy_id, certs_dir)


def proxy_clusters(estate: CompiledEstate, proxy_id: str) -> dict[str, Served]:
    """The proxy's clusters: a class's, the same Served for every proxy of it (their own labels
    are fixed tags of their bootstraps), or where stat names are per proxy (tagOverrides of a
    proxy's own labels) each naming the shared cluster it copies; a proxy's own."""
    group = estate.groups[estate.group_of[proxy_id]]
    if group.is_class and stat_names_per_proxy(group.config.telemetry):
        return _proxy_clusters_whole(estate, proxy_id, group)
    shared = _shared(estate)
    key = ("clusters", group.key)
    table = shared.get(key)
    if table is None:
        versions = group.versions["clusters"]
        table = {resource_name(r): Served(versions[resource_name(r)], r) for r in group.config.clusters}
        if group.is_class:
            with _SHARED_LOCK:
                table = shared.setdefault(key, table)
    return table


def _proxy_clusters_whole(estate: CompiledEstate, proxy_id: str, group) -> dict[str, Served]:
    versions = estate.versions(proxy_id)["clusters"]
    shared_versions, served = group.versions["clusters"], {}
    for cluster, shared in zip(proxy_config(estate, proxy_id).clusters, group.config.clusters):
        name = cluster["name"]
        if cluster is shared:
            served[name] = Served(versions[name], cluster)
        else:
            served[name] = Served(versions[name], cluster, Served(shared_versions[name], shared), cluster.get(STAT_NAME, ""))
    return served


_SHARED: dict[int, dict] = {}  # id(estate) -> (group key, certs dir) -> type URL -> name -> served
_SHARED_LOCK = threading.Lock()


def _shared(estate: CompiledEstate) -> dict:
    """What the estate's proxies share, kept as long as the estate is."""
    with _SHARED_LOCK:
        shared = _SHARED.get(id(estate))
        if shared is None:
            shared = _SHARED[id(estate)] = {}
            weakref.finalize(estate, _SHARED.pop, id(estate), None)  # gone with its estate
        return shared


def _shared_tables(estate: CompiledEstate, group_key: tuple, certs_dir: str | None, type_url: str) -> dict:
    """The tables type_url's resources are in (with the selections made of them): a group's
    endpoints, listeners and routes, shared by its proxies whatever their certs directories
    (an endpoint change would otherwise build them again for each proxy with a directory of its
    own); the secrets of a certs directory."""
    shared = _shared(estate)
    key = ("secrets", certs_dir) if type_url == SECRET else group_key
    tables = shared.get(key)
    if tables is None:
        tables = _secret_tables(estate, certs_dir) if type_url == SECRET else _group_tables(estate.groups[group_key])
        with _SHARED_LOCK:
            tables = shared.setdefault(key, tables)
    return tables


def _group_tables(group) -> dict[str, dict[str, Served]]:
    config, versions = group.config, group.versions
    tables = {}
    for kind in ("endpoints", "listeners", "routes"):
        table = versions[kind]
        tables[TYPE_OF_KIND[kind]] = {resource_name(r): Served(table[resource_name(r)], r) for r in getattr(config, kind)}
    return tables


def _secret_tables(estate: CompiledEstate, certs_dir: str | None) -> dict[str, dict[str, Served]]:
    secrets = workload_secrets(certs_dir) if estate.mesh.settings.identity_enabled and certs_dir else []
    return {SECRET: {secret["name"]: Served(digest(secret), secret) for secret in secrets}}


class Encoder:
    """Resources as serialized protobuf Any, each (type, version) encoded once: proxies of a
    class share most versions, and a cluster with a proxy's stat name is its class's
    cluster's bytes with the stat name's field after them (protobuf keeps the last value of
    a field: the bytes parse as the whole cluster)."""

    def __init__(self, limit: int = 1 << 17) -> None:
        self._cache: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()
        self._limit = limit
        # Virtual hosts by object (compile/virtual_hosts.py builds each once per mesh, and
        # classes' route configurations hold the same ones): (the object, its bytes).
        self._virtual_hosts: dict[int, tuple[dict, bytes]] = {}

    def encode_bytes(self, type_url: str, served: Served) -> bytes:
        """The serialized Any of served."""
        if served.shared is None:
            return _any(type_url, self._value(type_url, served))
        return _any(type_url, self._value(type_url, served.shared) + _field(CLUSTER_ALT_STAT_NAME, served.stat_name.encode()))

    def encode(self, type_url: str, served: Served) -> any_pb2.Any:
        return any_pb2.Any.FromString(self.encode_bytes(type_url, served))

    def _value(self, type_url: str, served: Served) -> bytes:
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

    def _parsed(self, type_url: str, served: Served) -> bytes:
        content = served.content
        if type_url == ROUTE_CONFIGURATION and type(content.get("virtual_hosts")) is list:  # pylint: disable=unidiomatic-typecheck
            return self._route_configuration(content)
        return _serialized(type_url, content)

    def _route_configuration(self, content: dict) -> bytes:
        """A route configuration's bytes with each virtual host's encoded once per object: an
        edit changes a virtual host or two of a thousand, and classes share them. Protobuf
        writes fields in the order of their numbers (name 1, virtual_hosts 2, the rest after),
        so the hosts' fields go between the name's and the rest's (the bytes are those of the
        whole message: tests/unit/test_serve_scale.py)."""
        rest = _serialized(ROUTE_CONFIGURATION, {**content, "virtual_hosts": []})
        name = _field(ROUTE_CONFIGURATION_NAME, content["name"].encode()) if content.get("name") else b""
        if not rest.startswith(name):
            return _serialized(ROUTE_CONFIGURATION, content)
        if len(self._virtual_hosts) >= self._limit:
            self._virtual_hosts.clear()
        hosts = b"".join([_field(ROUTE_CONFIGURATION_VIRTUAL_HOSTS, self._virtual_host(host)) for host in content["virtual_hosts"]])
        return name + hosts + rest[len(name):]

    def _virtual_host(self, host: dict) -> bytes:
        found = self._virtual_hosts.get(id(host))
        if found is None or found[0] is not host:
            found = self._virtual_hosts[id(host)] = (host, _serialized(VIRTUAL_HOST, host))  # holds it: its id stays its own
        return found[1]


def _serialized(type_url: str, content: dict) -> bytes:
    register_types(content)
    return json_format.ParseDict(content, message_class(type_url[len(TYPE_PREFIX):])()).SerializeToString(deterministic=True)


ROUTE_CONFIGURATION_NAME, ROUTE_CONFIGURATION_VIRTUAL_HOSTS = 1, 2  # envoy.config.route.v3.RouteConfiguration's fields
VIRTUAL_HOST = TYPE_PREFIX + "envoy.config.route.v3.VirtualHost"


CLUSTER_ALT_STAT_NAME = 28  # envoy.config.cluster.v3.Cluster.alt_stat_name
_ANY_TYPE_URL, _ANY_VALUE = 1, 2
_ANY_VALUE_TAG = bytes((_ANY_VALUE << 3 | 2,))


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _SMALL_VARINTS[value]
    if value < 0x4000:
        return bytes((value & 0x7F | 0x80, value >> 7))
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL_VARINTS = [bytes((value,)) for value in range(0x80)]


def _field(number: int, data: bytes) -> bytes:
    """A length-delimited protobuf field (string, bytes, message)."""
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _any(type_url: str, value: bytes) -> bytes:
    return _any_prefix(type_url) + _ANY_VALUE_TAG + _varint(len(value)) + value


@functools.lru_cache(maxsize=None)
def _any_prefix(type_url: str) -> bytes:
    """An Any's type URL field: one per type."""
    return _field(_ANY_TYPE_URL, type_url.encode())


def discovery_response_bytes(version: str, type_url: str, nonce: str, resources: bytes, control_plane: bytes) -> bytes:
    """A serialized DiscoveryResponse (envoy.service.discovery.v3) from its resources' fields
    (resource_fields): what a stream sends, built without a message object per resource."""
    return b"".join([_field(1, version.encode()), resources, _field(4, type_url.encode()), _field(5, nonce.encode()), _field(6, control_plane)])


class ResponseBodies:
    """The resources' fields of whole responses, each built once: a response's version is the
    hash of its resources' names and versions, so one (type, version) is one set of bytes,
    which every proxy of a class that asks alike is sent (with its own nonce). Clusters whose
    stat names are a proxy's own (tagOverrides of its labels) have versions of their own, so
    their responses never share a key with another proxy's."""

    def __init__(self, encoder: Encoder, limit: int = 1024, changes_limit: int = 256) -> None:
        self.encoder, self._limit, self._changes_limit = encoder, limit, changes_limit
        self._bodies: dict[tuple[str, str], bytes] = {}
        # (type, id(held), id(now)) -> (held, now, fields): the tables are kept with their
        # fields so their ids are not reused while the entry is there.
        self._changes: dict[tuple[str, int, int], tuple[Mapping, Mapping, bytes]] = {}

    def whole(self, type_url: str, version: str, resources: dict[str, Served]) -> bytes:
        """The fields of all of resources, whose response version is version."""
        key = (type_url, version)
        body = self._bodies.get(key)
        if body is None:
            body = self.fields(type_url, resources.values())
            if len(self._bodies) >= self._limit:
                self._bodies.clear()
            self._bodies[key] = body
        return body

    def changed(self, type_url: str, held: Mapping[str, Served], now: Mapping[str, Served]) -> bytes:
        """The fields of the resources of now that held does not have in that version: what a
        proxy that holds held is sent (state of the world, by name, as istiod's EDS pushes).
        The proxies of a class hold one table and move to the next one together: worked out
        once for all of them, not once per stream (a proxy that sees 1,000 services would
        otherwise cost two passes over 1,000 names per push)."""
        key = (type_url, id(held), id(now))
        found = self._changes.get(key)
        if found is None or found[0] is not held or found[1] is not now:
            sending = [served for name, served in now.items() if (before := held.get(name)) is None or before.version != served.version]
            found = (held, now, self.fields(type_url, sending))
            if len(self._changes) >= self._changes_limit:
                self._changes.clear()
            self._changes[key] = found
        return found[2]

    def fields(self, type_url: str, served) -> bytes:
        """The repeated resources field of a DiscoveryResponse holding served."""
        encode = self.encoder.encode_bytes
        return b"".join([_field(2, encode(type_url, one)) for one in served])


def register_types(value) -> None:
    """Import the proto modules of every typed_config inside value (json_format looks them up)."""
    if isinstance(value, dict):
        type_url = value.get("@type")
        if isinstance(type_url, str) and type_url.startswith(TYPE_PREFIX):
            message_class(type_url[len(TYPE_PREFIX):])
        for item in value.values():
            register_types(item)
    elif isinstance(value, list):
        for item in value:
            register_types(item)
