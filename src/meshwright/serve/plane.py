"""The control plane's state: the compiled estate being served, the proxies' streams, and
the step from one valid mesh to the next (compile/incremental.py).

An edit that only moves one WorkloadEntry (address, weight, locality) takes the endpoint
fast path: only the load assignments of the services selecting it are compiled again, and
only the proxies that see those services are told; they find that only endpoints changed
and send EDS alone. A VirtualService whose http routes alone changed takes the routes path
(check/incremental.py): only the classes that route its hosts are compiled again and told.
Any other edit recompiles the estate, and the proxies whose resources changed are told.
"""

from __future__ import annotations

import logging
import threading
import time

import grpc

from meshwright.check.incremental import ChangeRefused, apply_resources
from meshwright.check.pipeline import validate_mesh
from meshwright.collector import cyclic_collector_paused
from meshwright.compile.incremental import Changes, CompiledEstate, compile_estate, recompiled, with_workload_endpoints
from meshwright.compile.xds_bootstrap import CERTS_DIR_METADATA
from meshwright.mesh import Mesh
from meshwright.model.load import LoadResult
from meshwright.model.resource import Resource
from meshwright.serve.ads import Stream
from meshwright.serve.identity import Refused, admitted_proxy, peer_certificate
from meshwright.serve.registries import FILES, Update, ViewChanges, combined, view_after
from meshwright.serve.resources import Encoder, ResponseBodies, Snapshot, proxy_snapshot
from meshwright.serve.status import node_info
from meshwright.validate.shape_check import is_kubernetes_object

LOG = logging.getLogger("meshwright.serve")


def _resource_identity(resource) -> tuple:
    return (resource.api_version, resource.kind, resource.namespace, resource.name, repr(resource.metadata), repr(resource.spec))


def moved_workload(old: Mesh, new: Mesh):
    """The one WorkloadEntry of new that differs from old, when it is the only difference."""
    before = {r.key: _resource_identity(r) for r in old.resources}
    after = {r.key: r for r in new.resources}
    if before.keys() != after.keys():
        return None
    changed = [resource for key, resource in after.items() if before[key] != _resource_identity(resource)]
    return changed[0] if len(changed) == 1 and changed[0].kind == "WorkloadEntry" else None


def source_changes(before: list[Resource], after: list[Resource]) -> tuple[list[Resource], list[Resource]]:
    """(added or edited, removed) mesh resources of a source's new list against its last
    applied one. A resource whose place in its file moved counts as edited: problems name its
    lines as they are now. A registry that publishes the same objects again costs little."""
    old = {r.key: r for r in before if not is_kubernetes_object(r)}
    new = {r.key: r for r in after if not is_kubernetes_object(r)}
    edited = [r for key, r in new.items() if key not in old or (old[key] is not r and _loaded_identity(old[key]) != _loaded_identity(r))]
    return edited, [r for key, r in old.items() if key not in new]


def view_changes(before: dict[tuple, Resource], update: ViewChanges) -> tuple[list[Resource], list[Resource]]:
    """(added or edited, removed) mesh resources of a registry's changes against its last
    applied view: the work is the changes', not the view's."""
    edited, removed = [], []
    for key, resource in update.changes.items():
        old = before.get(key)
        if resource is None:
            if old is not None and not is_kubernetes_object(old):
                removed.append(old)
        elif not is_kubernetes_object(resource) and (old is None or (old is not resource and _loaded_identity(old) != _loaded_identity(resource))):
            edited.append(resource)
    return edited, removed


def _has_duplicates(resources: list[Resource]) -> bool:
    keys = [r.key for r in resources if not is_kubernetes_object(r)]
    return len(set(keys)) != len(keys)


def _loaded_identity(resource: Resource) -> tuple:
    return (resource.api_version, resource.metadata, resource.spec, resource.source)


def _described(edited: list[Resource], removed: list[Resource]) -> str:
    if len(edited) + len(removed) == 1:
        return f"one resource, {(edited or removed)[0].ref}"
    kinds = ", ".join(sorted({r.kind for r in edited + removed}))
    return f"{len(edited)} added or changed, {len(removed)} removed ({kinds})"


def next_estate(estate: CompiledEstate, mesh: Mesh) -> tuple[CompiledEstate, Changes, str]:
    """The estate of a new valid mesh, what changed per proxy, and which path was taken."""
    workload = moved_workload(estate.mesh, mesh)
    if workload is not None:
        fast = with_workload_endpoints(estate, workload)
        if fast is not None:
            return (*fast, "endpoints")
    return (*recompiled(estate, mesh), "recompiled")


class ControlPlane:
    """What `meshwright serve` serves. require_identity: streams must prove their proxy's
    SPIFFE ID with a client certificate (off only in the plaintext loopback mode)."""

    def __init__(self, mesh: Mesh, require_identity: bool = True):
        self.require_identity = require_identity
        self.encoder = Encoder()
        self.bodies = ResponseBodies(self.encoder)  # used on the server's loop only
        self.estate = compile_estate(mesh)
        self.generation = 1  # valid meshes served so far
        self.applied_at = time.time()
        self.rejection: dict | None = None  # the last rejected edit: when, and its problems
        self.refusals: list[str] = []  # the last refused streams' reasons (newest last)
        self._streams: set[Stream] = set()
        self._lock = threading.Lock()
        # What each source (the files, each registry) contributes to the mesh, as last applied, by key.
        self._sources: dict[str, dict[tuple, Resource]] = {FILES: {r.key: r for r in mesh.resources}}
        self._refused: dict[str, ViewChanges] = {}  # a registry's changes refused, tried again with its next ones
        self._apply_lock = threading.Lock()
        # The publishes of each source not yet applied: publishes that arrive while a change is
        # applied are taken together (registries.combined), the newest of each source at once.
        self._pending: dict[str, Update] = {}
        self._pending_lock = threading.Lock()

    # Sources.

    def apply(self, mesh: Mesh) -> Changes:
        """Serve a new valid mesh: proxies whose resources changed get them pushed."""
        started = time.monotonic()
        estate, changes, path = next_estate(self.estate, mesh)
        self._serve(estate, changes, path, started)
        return changes

    def _serve(self, estate: CompiledEstate, changes: Changes, path: str, started: float) -> None:
        with self._lock:
            self.estate = estate
            self.generation += 1
            self.applied_at = time.time()
            self.rejection = None
            streams = [s for s in self._streams if s.proxy_id in changes]
        for stream in streams:
            stream.notify(changes[stream.proxy_id])  # the kinds that changed for its proxy
        LOG.info("mesh generation %d (%s in %.3fs): %d proxies changed, %d connected ones notified",
                 self.generation, path, time.monotonic() - started, len(changes), len(streams))

    def apply_loaded(self, loaded: LoadResult) -> list:
        """Serve the mesh files as loaded again after an edit; the problems of a bad edit
        (nothing changes then)."""
        if loaded.problems:
            return self.reject(sorted(loaded.problems), FILES)
        return self.apply_source(FILES, loaded.resources)

    @cyclic_collector_paused()  # a change builds trees without cycles: a collector pass would walk the whole estate
    def apply_source(self, name: str, update: Update) -> list:
        """Serve the mesh with one source's resources replaced or changed: the files as loaded
        again, or a registry's publish (serve/registries.py: its whole view, or ViewChanges).
        The problems of a bad change; the source's last good resources stay served then, and
        refused changes are tried again with its next ones (as a whole view would hold them)."""
        with self._pending_lock:
            pending = self._pending.get(name)
            update = update if isinstance(update, ViewChanges) else list(update)
            self._pending[name] = update if pending is None else combined(pending, update)
        with self._apply_lock:  # one change at a time, whichever source it comes from
            with self._pending_lock:
                update = self._pending.pop(name, None)
            if update is None:
                return []  # a later publish of this source, applied while this one waited, held it all
            if name in self._refused:
                update = combined(self._refused.pop(name), update)
            problems = self._apply_merged(name, update)
            if not problems:
                self._sources[name] = view_after(self._sources.get(name, {}), update, in_place=True)  # read under _apply_lock alone
            elif isinstance(update, ViewChanges):
                self._refused[name] = update
            return problems

    def _apply_merged(self, name: str, update: Update) -> list:
        """Changed WorkloadEntries (however many), or a few changed resources of any kind,
        take the incremental paths (check/incremental.py apply_resources: WorkloadEntries that
        come, go or move, in one step, validating those entries, the checks that read them and
        their load assignments alone); the rest, or a resource another source holds too, is
        validated and compiled whole with every source, as `meshwright validate` does."""
        held = self._sources.get(name, {})
        if isinstance(update, ViewChanges):
            edited, removed = view_changes(held, update)
        else:
            edited, removed = source_changes(list(held.values()), update)
        if not edited and not removed:
            LOG.info("%s changed, the mesh did not: nothing to push", name)
            return []
        started = time.monotonic()
        resources = update if not isinstance(update, ViewChanges) else None
        # A duplicate (two documents of one kind and name), or a resource another source holds
        # too, goes to validation, which names it.
        if not (resources is not None and _has_duplicates(resources)) and not self._held_elsewhere(name, edited):
            try:
                applied = apply_resources(self.estate, edited, removed)
            except ChangeRefused as refused:
                return self.reject(refused.problems, name)
            if applied is not None:
                self._serve(*applied, f"{name}: {_described(edited, removed)}", started)
                return []
        if resources is None:
            resources = list(view_after(held, update).values())
        merged = [r for source, view in self._sources.items() if source != name for r in view.values()] + resources
        mesh, problems = validate_mesh(LoadResult(merged))
        if problems:
            return self.reject(problems, name)
        estate, changes, path = next_estate(self.estate, mesh)
        self._serve(estate, changes, f"{name}: {path}", started)
        return []

    def _held_elsewhere(self, name: str, edited: list[Resource]) -> bool:
        """Whether another source holds a resource of the same kind, namespace and name as
        one this source adds."""
        return any(r.key in view for source, view in self._sources.items() if source != name for r in edited)

    def reject(self, problems, source: str = FILES) -> list:
        self.rejection = {"at": time.time(), "source": source, "problems": [str(p) for p in problems]}
        return list(problems)

    # Streams.

    def snapshot_for(self, estate: CompiledEstate, proxy_id: str, certs_dir: str | None) -> Snapshot:
        return proxy_snapshot(estate, proxy_id, certs_dir)

    async def serve(self, requests, context, delta: bool):
        """One ADS stream (the async generator grpc.aio sends responses from)."""
        first = await anext(aiter(requests), None)
        if first is None:
            return
        node = first.node
        peer, peer_pem = context.peer(), peer_certificate(context.auth_context())
        try:
            proxy_id = admitted_proxy(self.estate, node.id, peer_pem, self.require_identity)
        except Refused as refused:
            LOG.warning("refused xDS stream from %s: %s", peer, refused)
            self.record_refusal(f"{peer}: {refused}")
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(refused))
        certs_dir = node.metadata.fields[CERTS_DIR_METADATA].string_value if CERTS_DIR_METADATA in node.metadata.fields else None
        stream = Stream(self, proxy_id, node.id, peer, delta, certs_dir)
        stream.node_info = node_info(node, peer_pem)  # for status: Envoy's version, its certificate's expiry
        with self._lock:
            self._streams.add(stream)
        LOG.info("proxy %s connected from %s (%s)", proxy_id, peer, "delta" if delta else "state of the world")
        try:
            async for response in stream.run(first, requests):
                yield response
        finally:
            with self._lock:
                self._streams.discard(stream)
            LOG.info("proxy %s disconnected", proxy_id)

    def record_refusal(self, text: str) -> None:
        """Keep a refused stream's or CSR's reason for `meshwright status` (the last 20)."""
        with self._lock:  # xDS streams and CSR calls refuse from threads of their own
            self.refusals = [*self.refusals[-19:], text]

    def streams(self) -> list[Stream]:
        with self._lock:
            return sorted(self._streams, key=lambda s: (s.proxy_id, s.connected_at))

    def status(self) -> dict:
        """What `meshwright status` shows: every proxy of the mesh, connected or not."""
        connected: dict[str, list[dict]] = {}
        for stream in self.streams():
            connected.setdefault(stream.proxy_id, []).append({**stream.status(), **stream.node_info})
        proxies = [{"proxy": proxy_id, "streams": connected.get(proxy_id, [])} for proxy_id in self.estate.proxies]
        return {"generation": self.generation, "applied_at": self.applied_at, "rejection": self.rejection,
                "refusals": list(self.refusals), "proxies": proxies}
