#!/usr/bin/env python3
"""Lightweight ADS clients for bench/controlplane.py: many proxies' state-of-the-world ADS
streams in one process (grpc.aio), each speaking as Envoy does, so that one machine can hold
thousands of them.

As Envoy: a stream subscribes to clusters (wildcard); once they come, to the endpoints of
the EDS clusters by name and then to listeners (wildcard); once those come, to the routes
their HTTP connection managers name (RDS) and the secrets clusters and listeners name (SDS).
Every response is ACKed with its version and nonce, and a subscription's names change when
clusters or listeners do. Unlike Envoy it never NACKs and keeps no config: what it ACKs is
what bench/controlplane.py compares with real Envoys of the same proxies (the server's
status gives the versions both ACKed; versions are content hashes).

Responses are read as bytes: version, type and nonce come from a scan of the message's top
fields; the names a cluster or listener set asks for are parsed once per (type, version),
which proxies of a class share, so a client costs little per stream.

    python bench/ads_clients.py HOST:PORT CERTS_DIR < proxy ids (one line, space-separated;
    PROXY=DIR gives that proxy a certs directory of its own, as its twin Envoy has),
    then commands on stdin: "storm" (every stream closed and opened again at once), "quit".
Stdout: "A PROXY KIND VERSION TIME" per ACK sent (TIME: time.time()), "C PROXY" on connect,
"E PROXY MESSAGE" when a stream ended with an error (it is opened again a second later, as
Envoy does).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format, struct_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from meshwright.check.envoy_proto import message_class  # noqa: E402
from meshwright.compile.envoy_values import CLUSTER, CLUSTER_LOAD_ASSIGNMENT, LISTENER, ROUTE_CONFIGURATION, TYPE_PREFIX  # noqa: E402
from meshwright.compile.secrets import SECRET  # noqa: E402
from meshwright.compile.xds_bootstrap import CERTS_DIR_METADATA  # noqa: E402

METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
KIND = {CLUSTER: "clusters", CLUSTER_LOAD_ASSIGNMENT: "endpoints", LISTENER: "listeners", ROUTE_CONFIGURATION: "routes", SECRET: "secrets"}
_NAMES: dict[tuple[str, str], tuple[tuple[str, ...], tuple[str, ...]]] = {}  # (type, version) -> (names asked next, secrets)


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def top_fields(data: bytes) -> dict[int, bytes]:
    """A DiscoveryResponse's string fields (1 version, 4 type URL, 5 nonce), resources skipped."""
    fields, at = {}, 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 2:
            size, at = _varint(data, at)
            if number in (1, 4, 5):
                fields[number] = data[at:at + size]
            at += size
        elif wire == 0:
            _, at = _varint(data, at)
        else:
            raise ValueError(f"unexpected wire type {wire} in a DiscoveryResponse")
    return fields


def _walk(value, found: dict) -> None:
    """Collects the names resources point at: EDS clusters' endpoints, RDS route configs, SDS secrets."""
    if isinstance(value, dict):
        if value.get("type") == "EDS" and "name" in value:
            found["eds"].append(value.get("eds_cluster_config", {}).get("service_name", value["name"]))
        if "route_config_name" in value:
            found["rds"].append(value["route_config_name"])
        for key, item in value.items():
            if key in ("sds_secret_config", "validation_context_sds_secret_config") and isinstance(item, dict):
                found["sds"].append(item["name"])
            elif key == "tls_certificate_sds_secret_configs":
                found["sds"] += [config["name"] for config in item]
            _walk(item, found)
    elif isinstance(value, list):
        for item in value:
            _walk(item, found)


def _register(value) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "@type" and isinstance(item, str) and item.startswith(TYPE_PREFIX):
                message_class(item[len(TYPE_PREFIX):])
            _register(item)
    elif isinstance(value, list):
        for item in value:
            _register(item)


def names_asked(type_url: str, version: str, data: bytes) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What a cluster or listener set asks for next (endpoints or routes) and the secrets it names."""
    key = (type_url, version)
    if key not in _NAMES:
        found = {"eds": [], "rds": [], "sds": []}
        for resource_type, value in resources_of(data):
            for kind, names in _resource_names(resource_type, value).items():
                found[kind] += names
        asked = found["eds"] if type_url == CLUSTER else found["rds"]
        _NAMES[key] = (tuple(sorted(set(asked))), tuple(sorted(set(found["sds"]))))
        if len(_NAMES) > 20_000:
            _NAMES.clear()
    return _NAMES[key]


_RESOURCE_NAMES: dict[bytes, dict[str, list[str]]] = {}  # a resource's bytes (less its stat name) -> the names it points at


def _resource_names(type_url: str, value: bytes) -> dict[str, list[str]]:
    """The names one resource points at, parsed once per content: a cluster's stat name (each
    proxy's own) is left out of the key, so the proxies of a class parse each cluster once."""
    key = without_field(value, CLUSTER_ALT_STAT_NAME) if type_url == CLUSTER else value
    found = _RESOURCE_NAMES.get(key)
    if found is None:
        message = message_class(type_url[len(TYPE_PREFIX):])()
        message.ParseFromString(value)
        found = {"eds": [], "rds": [], "sds": []}
        _walk(_as_dict(message), found)
        _RESOURCE_NAMES[key] = found
    return found


CLUSTER_ALT_STAT_NAME = 28


def _fields(data: bytes):
    """(field number, start, end of the whole field, start of its payload) of a message's top fields."""
    at = 0
    while at < len(data):
        start = at
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        payload = at
        if wire == 2:
            size, payload = _varint(data, at)
            at = payload + size
        elif wire == 0:
            _, at = _varint(data, at)
        elif wire == 1:
            at += 8
        elif wire == 5:
            at += 4
        else:
            raise ValueError(f"unexpected wire type {wire}")
        yield number, start, at, payload


def without_field(data: bytes, number: int) -> bytes:
    kept = [data[start:end] for field, start, end, _ in _fields(data) if field != number]
    return b"".join(kept)


def resources_of(data: bytes):
    """(type URL, value bytes) of each Any in a DiscoveryResponse's resources."""
    for number, _, end, payload in _fields(data):
        if number != 2:
            continue
        any_bytes = data[payload:end]
        type_url = value = b""
        for field, _, field_end, field_payload in _fields(any_bytes):
            if field == 1:
                type_url = any_bytes[field_payload:field_end]
            elif field == 2:
                value = any_bytes[field_payload:field_end]
        yield type_url.decode(), value


def _as_dict(message) -> dict:
    for _ in range(20):  # typed configs inside name types whose modules load on demand
        try:
            return json_format.MessageToDict(message, preserving_proto_field_name=True)
        except TypeError as error:
            name = str(error).rsplit(" ", 1)[-1].strip("'\".")
            message_class(name[len(TYPE_PREFIX):] if name.startswith(TYPE_PREFIX) else name)
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


class ProxyStream:
    """One proxy's ADS stream, as Envoy drives it."""

    def __init__(self, channel: grpc.aio.Channel, proxy_id: str, certs_dir: str, out) -> None:
        proxy_id, _, own_certs_dir = proxy_id.partition("=")  # PROXY=CERTS_DIR: that proxy's own certs directory
        certs_dir = own_certs_dir or certs_dir
        self.channel, self.proxy_id, self.certs_dir, self.out = channel, proxy_id, certs_dir, out
        self.names: dict[str, tuple[str, ...]] = {}  # type -> names subscribed (wildcard: ())
        self.versions: dict[str, str] = {}
        self.secrets: dict[str, tuple[str, ...]] = {}  # from clusters and from listeners
        self.queue: asyncio.Queue = asyncio.Queue()

    def _request(self, type_url: str, version: str = "", nonce: str = "", first: bool = False):
        request = discovery_pb2.DiscoveryRequest(type_url=type_url, version_info=version, response_nonce=nonce,
                                                 resource_names=self.names.get(type_url, ()))
        if first:
            request.node.id = f"bench~127.0.0.1~{self.proxy_id}~cluster.local"  # Envoy's shape; "bench" tells it from an Envoy
            request.node.metadata.fields[CERTS_DIR_METADATA].CopyFrom(struct_pb2.Value(string_value=self.certs_dir))
        return request

    def _subscribe(self, type_url: str, names: tuple[str, ...]) -> None:
        if self.names.get(type_url) != names and (names or type_url in self.names):
            self.names[type_url] = names
            self.queue.put_nowait(self._request(type_url, self.versions.get(type_url, "")))

    async def _requests(self):
        while True:
            request = await self.queue.get()
            if request is None:
                return
            yield request

    async def run(self) -> None:
        self.names = {CLUSTER: ()}
        self.queue.put_nowait(self._request(CLUSTER, first=True))
        call = self.channel.stream_stream(METHOD, request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                                          response_deserializer=None)(self._requests())
        connected = False
        try:
            async for data in call:
                if not connected:
                    self.out(f"C {self.proxy_id}")
                    connected = True
                self._on_response(data)
        finally:
            self.queue.put_nowait(None)

    def _on_response(self, data: bytes) -> None:
        fields = top_fields(data)
        version, type_url, nonce = (fields.get(n, b"").decode() for n in (1, 4, 5))
        if type_url in (CLUSTER, LISTENER):
            asked, secrets = names_asked(type_url, version, data)
            self.secrets[type_url] = secrets
            self._subscribe(CLUSTER_LOAD_ASSIGNMENT if type_url == CLUSTER else ROUTE_CONFIGURATION, asked)
            self._subscribe(SECRET, tuple(sorted(set(self.secrets.get(CLUSTER, ()) + self.secrets.get(LISTENER, ())))))
        self.versions[type_url] = version
        self.queue.put_nowait(self._request(type_url, version, nonce))
        self.out(f"A {self.proxy_id} {KIND.get(type_url, type_url)} {version} {time.time():.6f}")
        if type_url == CLUSTER_LOAD_ASSIGNMENT and LISTENER not in self.names:
            self.names[LISTENER] = ()  # Envoy asks for listeners once its clusters are warm
            self.queue.put_nowait(self._request(LISTENER))


class Clients:
    def __init__(self, target: str, certs_dir: str, proxies: list[str]) -> None:
        self.target, self.certs_dir, self.proxies = target, certs_dir, proxies
        self.lines: list[str] = []
        self.tasks: list[asyncio.Task] = []

    def out(self, line: str) -> None:
        self.lines.append(line)

    async def flush(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            if self.lines:
                sys.stdout.write("\n".join(self.lines) + "\n")
                sys.stdout.flush()
                self.lines.clear()

    async def stream(self, channel, proxy_id: str) -> None:
        """The proxy's stream, opened again after an error as Envoy does (after a second)."""
        while True:
            try:
                await ProxyStream(channel, proxy_id, self.certs_dir, self.out).run()
                return
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as error:
                if asyncio.current_task().cancelling():  # closed by this client (a storm, the end): not an error
                    raise asyncio.CancelledError from None
                self.out(f"E {proxy_id} {error.code().name}: {(error.details() or '').replace(chr(10), ' ')}")
            except Exception as error:  # a bug of this client: said, not hidden
                self.out(f"E {proxy_id} {type(error).__name__}: {error}")
            await asyncio.sleep(1.0)

    def connect(self, channels: list) -> None:
        self.tasks = [asyncio.ensure_future(self.stream(channels[i % len(channels)], proxy)) for i, proxy in enumerate(self.proxies)]

    async def main(self) -> None:
        # A few connections, many streams each (HTTP/2 multiplexes them, as Envoys behind one NAT would not,
        # but the server's cost per stream is the same); options: no limit on message size.
        options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
        channels = [grpc.aio.insecure_channel(self.target, options=options + [("grpc.channel_id", i)]) for i in range(8)]
        flusher = asyncio.ensure_future(self.flush())
        self.connect(channels)
        loop = asyncio.get_running_loop()
        while True:
            command = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if command == "storm":
                for task in self.tasks:
                    task.cancel()
                await asyncio.gather(*self.tasks, return_exceptions=True)
                self.connect(channels)
            elif command in ("quit", ""):
                break
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        flusher.cancel()
        self.out("Q")
        sys.stdout.write("\n".join(self.lines) + "\n")
        sys.stdout.flush()
        for channel in channels:
            await channel.close()


def main() -> int:
    target, certs_dir = sys.argv[1], sys.argv[2]
    proxies = sys.stdin.readline().split()
    _register({})
    asyncio.run(Clients(target, certs_dir, proxies).main())
    return 0


if __name__ == "__main__":
    sys.exit(main())
