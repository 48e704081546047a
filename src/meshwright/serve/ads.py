"""ADS streams: Envoy's Aggregated Discovery Service, state of the world and delta, v3.

One Stream per connected proxy, a coroutine on the server's event loop (grpc.aio: one thread
for every stream). Its requests are read by a task of their own into a queue that also
receives the plane's "the mesh changed" notices (from other threads, handed to the loop);
the stream's coroutine takes both from the queue in order and is the only one that touches
the stream's state, so nonces, ACKs and pushes need no lock.

The protocol as Envoy speaks it (envoy/api/xds_protocol):
- a request without a response nonce subscribes to a type; clusters and listeners as a
  whole (wildcard), endpoints, routes and secrets by name;
- a request with the nonce of the last response of its type ACKs it, or NACKs it with an
  error_detail: Envoy keeps its last good config, and so does the stream's record of what
  the proxy holds; the error is kept for status and logged;
- a request with an older nonce answers a response that was superseded: ignored.
A response's version is the hash of its resources' versions (content hashes): the same
resources always get the same version, whoever compiled them.

A push goes in PUSH_ORDER, and listeners and routes wait while the proxy has not answered
new clusters: it then asks for their endpoints, and only then is told of listeners and
routes that may send traffic to them.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from meshwright.compile.envoy_values import CLUSTER, LISTENER, ROUTE_CONFIGURATION
from meshwright.serve.resources import KIND_OF_TYPE, PUSH_ORDER, WILDCARD_TYPES, Encoder, ResponseBodies, Served, Snapshot, discovery_response_bytes

LOG = logging.getLogger("meshwright.serve")
SYNCED, STALE, NACK = "SYNCED", "STALE", "NACK"
CONTROL_PLANE = base_pb2.ControlPlane(identifier="meshwright")
CONTROL_PLANE_BYTES = CONTROL_PLANE.SerializeToString()
_CLOSED, _UPDATE = object(), object()


@dataclass
class Watch:
    """One type on one stream: what the proxy asked for, was sent, and answered."""

    names: frozenset[str] | None  # None: every resource of the type (wildcard)
    sent: dict[str, str] = field(default_factory=dict)  # delta: name -> version the proxy holds (as far as we know)
    previous: dict[str, str] = field(default_factory=dict)  # delta: what it held before the last response
    # State of the world, types asked for by name: the table of resources last sent, as the
    # plane's tables hold them (the proxies of a class hold one table), and the one before.
    held: Mapping[str, Served] = field(default_factory=dict)
    held_before: Mapping[str, Served] = field(default_factory=dict)
    version: str = ""  # of the last response
    nonce: str = ""
    acked: str = ""  # the last version the proxy accepted
    rejected: str = ""  # the last version it rejected
    error: str = ""  # Envoy's message when it rejected it
    sent_at: float = 0.0  # time.monotonic() of the last response
    ack_seconds: float | None = None  # from the last response to its ACK

    @property
    def state(self) -> str:
        if self.version and self.acked == self.version:
            return SYNCED
        return NACK if self.version and self.rejected == self.version else STALE


def version_of(resources: dict[str, Served]) -> str:
    """A response's version: the hash of its resources' names and versions."""
    sha = hashlib.sha256()
    for name in sorted(resources):
        sha.update(f"{name}\0{resources[name].version}\n".encode())
    return sha.hexdigest()[:16]


class Stream:
    """One proxy's ADS stream. plane gives the current snapshot of the proxy (snapshot_for)
    and the shared encoder."""

    def __init__(self, plane, proxy_id: str, node_id: str, peer: str, delta: bool, certs_dir: str | None):
        self.plane, self.proxy_id, self.node_id, self.peer, self.delta = plane, proxy_id, node_id, peer, delta
        self.certs_dir = certs_dir
        self.encoder: Encoder = plane.encoder
        self.watches: dict[str, Watch] = {}
        self.connected_at = time.time()
        self._loop = asyncio.get_running_loop()  # made by the stream's coroutine, on the server's loop
        self._queue: asyncio.Queue = asyncio.Queue()
        self._nonces = itertools.count(1)
        self._snapshot: tuple[object, Snapshot] | None = None
        self._waiting: set[str] = set()  # types held back until the proxy answers its clusters

    # The plane's side (any thread).

    def notify(self, kinds=None) -> None:
        """The mesh changed: the stream pushes what differs for its proxy. kinds: the kinds of
        resources that changed for it (None: any may have); a proxy's clusters, which carry
        its own stat names, are built again only when clusters changed."""
        self._put((_UPDATE, None if kinds is None else frozenset(kinds)))

    def close(self) -> None:
        self._put(_CLOSED)

    def _put(self, item) -> None:
        """Into the stream's queue, from any thread (asyncio.Queue is the loop's alone)."""
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: the server stopped, the stream with it
            pass

    def status(self) -> dict:
        return {
            "proxy": self.proxy_id, "node": self.node_id, "peer": self.peer, "delta": self.delta, "connected_at": self.connected_at,
            "types": {KIND_OF_TYPE.get(type_url, type_url): {
                "state": watch.state, "version": watch.version, "acked": watch.acked, "error": watch.error,
                "ack_seconds": watch.ack_seconds,
            } for type_url, watch in sorted(self.watches.items(), key=lambda item: _order(item[0]))},
        }

    # The stream's side (its coroutine on the server's loop).

    async def run(self, first, requests):
        """The responses of the stream, first being its first request (already read)."""
        reader = asyncio.ensure_future(self._read(requests))
        try:
            item = first
            while item is not _CLOSED:
                if isinstance(item, tuple) and item[0] is _UPDATE:
                    responses = self._push(item[1])
                else:
                    responses = self._on_delta(item) if self.delta else self._on_request(item)
                for response in responses + self._released():
                    yield response
                item = await self._queue.get()
        finally:
            reader.cancel()

    async def _read(self, requests) -> None:
        try:
            async for request in requests:
                if request is None:  # not a request (server.parsed_or_refused logged it): the stream ends
                    break
                self._queue.put_nowait(request)
        except asyncio.CancelledError:
            raise
        except Exception:  # the stream ended (cancelled, reset): nothing more to read
            pass
        self._queue.put_nowait(_CLOSED)

    def _current(self) -> Snapshot:
        estate = self.plane.estate
        if self._snapshot is None or self._snapshot[0] is not estate:
            self._snapshot = (estate, self.plane.snapshot_for(estate, self.proxy_id, self.certs_dir))
        return self._snapshot[1]

    def _selected(self, type_url: str, names: frozenset[str] | None) -> tuple[dict[str, Served], str]:
        """The resources of the type the proxy asked for, and their response's version."""
        return self._current().selected(type_url, names, version_of)

    def _push(self, kinds: frozenset | None) -> list:
        if self.proxy_id not in self.plane.estate.proxies:
            LOG.warning("proxy %s is no longer in the mesh config: closing its stream", self.proxy_id)
            self._queue.put_nowait(_CLOSED)
            return []
        responses = []
        for type_url in sorted(self.watches, key=_order):
            if type_url == CLUSTER and kinds is not None and "clusters" not in kinds:
                continue  # its clusters did not change: not built again to find that out
            if type_url in WAIT_FOR_CLUSTERS and self._clusters_unanswered():
                self._waiting.add(type_url)
            else:
                responses += self._respond(type_url, force=False)
        return responses

    def _respond(self, type_url: str, force: bool) -> list:
        return self._delta_response(type_url, force) if self.delta else self._response(type_url, force)

    def _clusters_unanswered(self) -> bool:
        watch = self.watches.get(CLUSTER)
        return watch is not None and bool(watch.version) and watch.version not in (watch.acked, watch.rejected)

    def _released(self) -> list:
        """The held-back types' responses, once the proxy answered its clusters."""
        if not self._waiting or self._clusters_unanswered():
            return []
        waiting, self._waiting = sorted(self._waiting, key=_order), set()
        return [response for type_url in waiting for response in self._respond(type_url, force=False)]

    def _answered(self, type_url: str, watch: Watch, request) -> None:
        """An ACK or NACK of the watch's last response."""
        if request.HasField("error_detail") and request.error_detail.message:
            watch.rejected, watch.error = watch.version, request.error_detail.message
            watch.sent, watch.held = watch.previous, watch.held_before  # Envoy keeps what it had
            if not self.delta and request.version_info:
                watch.acked = request.version_info  # state of the world: the version it keeps
            LOG.warning("proxy %s rejected %s version %s (it keeps its last good config): %s",
                        self.proxy_id, KIND_OF_TYPE.get(type_url, type_url), watch.version, watch.error)
            return
        watch.acked, watch.error = watch.version, ""
        watch.ack_seconds = time.monotonic() - watch.sent_at

    # State of the world.

    def _on_request(self, request) -> list:
        type_url = request.type_url
        names = _names(type_url, request.resource_names)
        watch = self.watches.get(type_url)
        if request.response_nonce and watch is not None:
            if request.response_nonce != watch.nonce:
                return []  # answers a superseded response
            self._answered(type_url, watch, request)
            if names == watch.names:
                return []
            watch.names = names
            return self._response(type_url, force=True)
        self.watches[type_url] = watch = Watch(names)
        watch.acked = request.version_info  # a reconnecting proxy holds that version
        return self._response(type_url, force=True)

    def _response(self, type_url: str, force: bool) -> list:
        """A state-of-the-world response, as bytes (the server sends them as they are): all
        of a wildcard type's resources; of a type asked for by name, what changed since the
        last response (xDS lets those grow incrementally, as istiod's EDS pushes do), or all
        the names asked for when the subscription is new or changed (force)."""
        watch = self.watches[type_url]
        resources, version = self._selected(type_url, watch.names)
        if version == watch.version and not force:
            return []
        bodies: ResponseBodies = self.plane.bodies
        if type_url in WILDCARD_TYPES or force:
            body = bodies.whole(type_url, version, resources)
        else:
            body = bodies.changed(type_url, watch.held, resources)
        nonce = str(next(self._nonces))
        response = discovery_response_bytes(version, type_url, nonce, body, CONTROL_PLANE_BYTES)
        watch.version, watch.nonce, watch.sent_at = version, nonce, time.monotonic()
        # What the proxy holds, by name: the table (the next response sends what differs; the
        # proxies of a class share it), not kept for clusters, which a stream would otherwise
        # keep one table of per proxy (they carry its stat names).
        watch.held_before, watch.held = watch.held, ({} if type_url == CLUSTER else resources)
        return [response]

    # Delta (incremental).

    def _on_delta(self, request) -> list:
        type_url = request.type_url
        subscribe, unsubscribe = set(request.resource_names_subscribe), set(request.resource_names_unsubscribe)
        watch = self.watches.get(type_url)
        first = watch is None
        if first:
            wildcard = type_url in WILDCARD_TYPES and (not subscribe or "*" in subscribe)
            self.watches[type_url] = watch = Watch(None if wildcard else frozenset())
            watch.sent = dict(request.initial_resource_versions)
        elif request.response_nonce == watch.nonce:
            self._answered(type_url, watch, request)
        if watch.names is not None:
            watch.names = _NAMES.interned(frozenset((watch.names | subscribe) - {"*"} - unsubscribe))
        for name in unsubscribe:
            watch.sent.pop(name, None)
        if not (first or subscribe):
            return []  # an answer, or names dropped: nothing to send (a NACKed resource waits for the next change)
        return self._delta_response(type_url, force=True)

    def _delta_response(self, type_url: str, force: bool) -> list:
        watch = self.watches[type_url]
        resources, version = self._selected(type_url, watch.names)
        changed = {name: served for name, served in resources.items() if watch.sent.get(name) != served.version}
        removed = sorted(name for name in watch.sent if name not in resources)
        if not changed and not removed and not force:
            if watch.version != version_of(resources):  # a NACKed change was reverted: the proxy holds what is current
                watch.version = watch.acked = version_of(resources)
                watch.error = ""
            return []
        nonce = str(next(self._nonces))
        response = discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=version, type_url=type_url, nonce=nonce, control_plane=CONTROL_PLANE,
            removed_resources=removed,
            resources=[discovery_pb2.Resource(name=name, version=served.version, resource=self.encoder.encode(type_url, served))
                       for name, served in changed.items()])
        watch.previous = dict(watch.sent)
        watch.sent.update((name, served.version) for name, served in changed.items())
        for name in removed:
            del watch.sent[name]
        watch.version, watch.nonce, watch.sent_at = response.system_version_info, nonce, time.monotonic()
        return [response]


WAIT_FOR_CLUSTERS = frozenset((LISTENER, ROUTE_CONFIGURATION))


class InternedNames:
    """One frozenset for every stream that asks for the same names (the proxies of a class
    ask alike): the streams share it, and resources.py's selections are keyed by it."""

    def __init__(self, limit: int = 256) -> None:
        self._names: dict[frozenset, frozenset] = {}
        self._lock = threading.Lock()
        self._limit = limit

    def interned(self, names: frozenset[str]) -> frozenset[str]:
        with self._lock:
            if len(self._names) >= self._limit:
                self._names.clear()
            return self._names.setdefault(names, names)


_NAMES = InternedNames()


def _names(type_url: str, names) -> frozenset[str] | None:
    names = frozenset(names)
    if type_url in WILDCARD_TYPES and (not names or "*" in names):
        return None
    return _NAMES.interned(names - {"*"})


def _order(type_url: str) -> int:
    return PUSH_ORDER.index(type_url) if type_url in PUSH_ORDER else len(PUSH_ORDER)
