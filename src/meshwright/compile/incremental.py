"""The compiled estate and its incremental recompile: what changed, for which proxies.

A CompiledEstate holds a mesh, its proxies and the version of every Envoy resource of every
proxy (docs/architecture.md, "Incremental recompile"). A version is the SHA-256 of the
resource's deterministic JSON, so equal resources have equal versions whoever compiled them.
Proxies of one class (compile/proxy_class.py) share their listeners, routes, endpoints and
clusters: each shared resource is hashed once per estate. Where tagOverrides put a proxy's
own labels into its clusters' stat names (telemetry.stat_names_per_proxy), a proxy's cluster
version joins the shared cluster's digest with its own stat name (resource_version does the
same for a cluster as compile_proxy returns it).

Two ways to a new estate:
- with_workload_endpoints: a WorkloadEntry whose address, weight or locality changed and
  nothing else. The services selecting it get the new endpoint, only their load assignments
  are recompiled (once per DestinationRule/locality/gateway variant in use) and reported, as
  changed endpoints, for the proxies whose class sees those services;
- recompiled: any other change, from a new mesh; proxies are compared class by class.
Both report {proxy id: {kind: {name: new version, or None when removed}}}, changes only.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import operator
from collections.abc import Mapping
from dataclasses import dataclass

from meshwright.collector import cyclic_collector_paused
from meshwright.compile.build import ClassConfig, class_config, compile_proxy, proxy_service_clusters
from meshwright.compile.clusters import INLINE_ENDPOINT_RESOLUTIONS
from meshwright.compile.proxy import Proxy, list_proxies, workload_proxy
from meshwright.compile.proxy_class import class_key
from meshwright.compile.telemetry import services_served, stat_names_per_proxy, with_class_stat_names, with_stat_names
from meshwright.mesh import Mesh, applies_to_sidecars, host_patterns, index_by_host, resolve_host
from meshwright.model.resource import Resource
from meshwright.model.selection import LabelIndex, SelectorIndex, labels_match, namespace_of
from meshwright.model.workload_group import GROUP_ANNOTATION
from meshwright.registry.inventory import ENDPOINT_ANNOTATION, has_sidecar, selected_endpoints
from meshwright.registry.model import Registry, Service

KINDS = ("listeners", "routes", "clusters", "endpoints")
STAT_NAME = "alt_stat_name"
# The WorkloadEntry fields that change only its endpoint in the services selecting it (and
# the locality, its own proxy's class): anything else takes the full recompile.
ENDPOINT_FIELDS = frozenset(("address", "weight", "locality"))  # and its readiness (ENDPOINT_ANNOTATION)
# What compile modules memoize on a mesh (Mesh.memo) that no endpoint's address, weight or
# locality decides, besides the services' clusters and the classes' configs, which the fast
# path replaces for the services it changes. Anything else is left to be computed again.
ENDPOINT_INDEPENDENT_MEMOS = frozenset((
    "selectors",  # the policies' and ServiceEntries' selectors (WorkloadEntries select nothing)
    "selected-label-keys", "sidecars-by-namespace", "workload-service-ports", "inbound-ports",
    "peer-authentication", "authorization-policies", "telemetry", "service-addresses", "incremental",
    "service-ports-by-workload",  # main's index of workload_service_ports (ports only)
    "outbound-virtual-host", "rules-depend-on-namespace", "rule-selector-keys", "large-direct-response",
))

# Of those, the ones that index every workload: computed again when a workload comes or goes.
WORKLOAD_SET_MEMOS = frozenset(("service-ports-by-workload", "incremental"))

Versions = dict[str, dict[str, str]]  # kind -> resource name -> version
Changes = dict[str, dict[str, dict[str, str | None]]]  # proxy id -> kind -> name -> version or None


def merged_changes(first: Changes, then: Changes) -> Changes:
    """The changes of two steps as one: then's versions win (new dicts; the steps' own dicts,
    shared between the proxies of a class, are left as they are)."""
    out = {proxy_id: dict(kinds) for proxy_id, kinds in first.items()}
    for proxy_id, kinds in then.items():
        mine = out.setdefault(proxy_id, {})
        for kind, names in kinds.items():
            mine[kind] = {**mine.get(kind, {}), **names}
    return out


def digest(resource: dict) -> str:
    return hashlib.sha256(json.dumps(resource, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _with_stat_name(shared_digest: str, stat_name: str) -> str:
    return hashlib.sha256(f"{shared_digest}\n{stat_name}".encode()).hexdigest()


def resource_name(resource: dict) -> str:
    return resource["name"] if "name" in resource else resource["cluster_name"]


def resource_version(resource: dict) -> str:
    """The version of one Envoy resource: the SHA-256 of its JSON; a cluster with a stat
    name joins the digest of the rest with its stat name (what proxies of a class share)."""
    if STAT_NAME not in resource:
        return digest(resource)
    return _with_stat_name(digest({k: v for k, v in resource.items() if k != STAT_NAME}), resource[STAT_NAME])


def config_versions(config) -> Versions:
    """Versions of every resource of a compiled config (a ProxyConfig or ClassConfig)."""
    return {kind: {resource_name(r): resource_version(r) for r in getattr(config, kind)} for kind in KINDS}


class _SharedDigests:
    """Versions of resources that many classes hold (the services' clusters are shared
    objects): each object hashed once, and classes that hold the same objects of a kind get
    one dict of their versions. Holds the objects, so that ids stay theirs."""

    def __init__(self) -> None:
        self.seen: dict[int, tuple[dict, str]] = {}
        self.tables: dict[tuple, dict[str, str]] = {}

    def version(self, resource: dict) -> str:
        known = self.seen.get(id(resource))
        if known is None:
            known = self.seen[id(resource)] = (resource, resource_version(resource))
        return known[1]

    def versions(self, config) -> Versions:
        return {kind: self.table(getattr(config, kind)) for kind in KINDS}

    def table(self, resources: list[dict]) -> dict[str, str]:
        identity = tuple(map(id, resources))
        if identity not in self.tables:
            self.tables[identity] = {resource_name(r): self.version(r) for r in resources}
        return self.tables[identity]


@dataclass(frozen=True)
class Group:
    """Proxies that share one compiled config: a class, or one proxy without a class
    (EnvoyFilters patch it), whose config then holds its stat names already."""

    key: tuple  # ("class", class key) or ("own", proxy id)
    config: object  # ClassConfig for a class, the proxy's ProxyConfig otherwise
    versions: Versions
    members: tuple[str, ...]  # proxy ids, in estate order

    @property
    def is_class(self) -> bool:
        return self.key[0] == "class"


@dataclass(frozen=True)
class CompiledEstate:
    """A mesh compiled for every proxy, with the version of each resource. Never changed:
    with_workload_endpoints and recompiled return new estates."""

    mesh: Mesh
    proxies: dict[str, Proxy]  # by id, in list_proxies order
    group_of: dict[str, tuple]  # proxy id -> group key
    groups: dict[tuple, Group]
    # Service hostname -> keys of the groups whose endpoints include its clusters.
    groups_seeing: dict[str, tuple[tuple, ...]]

    def versions(self, proxy_id: str) -> Versions:
        """Every resource of a proxy and its version, as resource_version gives them for
        compile_proxy's output."""
        group = self.groups[self.group_of[proxy_id]]
        if not group.is_class or not stat_names_per_proxy(group.config.telemetry):
            return group.versions
        clusters = _proxy_cluster_versions(self.mesh, self.proxies[proxy_id], group, group.config.clusters)
        return {**group.versions, "clusters": clusters}


def _proxy_cluster_versions(mesh: Mesh, proxy: Proxy, group: Group, clusters: list[dict]) -> dict[str, str]:
    """The versions of some of a class's clusters as this proxy has them (its stat names)."""
    shared = group.versions["clusters"]
    named = with_stat_names(mesh, proxy, group.config.telemetry, clusters)
    if named is clusters:  # the class's stat names are the proxy's
        return {cluster["name"]: shared[cluster["name"]] for cluster in clusters}
    out = {}
    for cluster in named:
        name = cluster["name"]
        out[name] = _with_stat_name(shared[name], cluster[STAT_NAME]) if STAT_NAME in cluster else shared[name]
    return out


def _group_key(mesh: Mesh, proxy: Proxy) -> tuple:
    key = class_key(mesh, proxy)
    return ("class", key) if key is not None else ("own", proxy.id)


def _group_config(mesh: Mesh, proxy: Proxy, key: tuple):
    return class_config(mesh, proxy, key[1]) if key[0] == "class" else compile_proxy(mesh, proxy)


def _host_of(cluster_name: str) -> str:
    return cluster_name.rsplit("|", 1)[-1]


def _groups_seeing(groups: dict[tuple, Group]) -> dict[str, tuple[tuple, ...]]:
    seeing: dict[str, list[tuple]] = {}
    for key, group in groups.items():
        for host in dict.fromkeys(_host_of(name) for name in group.versions["endpoints"]):
            seeing.setdefault(host, []).append(key)
    return {host: tuple(keys) for host, keys in seeing.items()}


def compile_estate(mesh: Mesh) -> CompiledEstate:
    """Every proxy of a (validated) mesh compiled, class by class, with its versions."""
    with cyclic_collector_paused():
        shared = _SharedDigests()
        proxies = {proxy.id: proxy for proxy in list_proxies(mesh)}
        group_of: dict[str, tuple] = {}
        members: dict[tuple, list[str]] = {}
        configs: dict[tuple, object] = {}
        for proxy in proxies.values():
            key = _group_key(mesh, proxy)
            if key not in configs:
                configs[key] = _group_config(mesh, proxy, key)
            group_of[proxy.id] = key
            members.setdefault(key, []).append(proxy.id)
        groups = {key: Group(key, config, shared.versions(config), tuple(members[key])) for key, config in configs.items()}
        _workload_index(mesh), _entry_selectors(mesh)  # what the fast path looks up, ready before the first change
        return CompiledEstate(mesh, proxies, group_of, groups, _groups_seeing(groups))


def _kind_diff(old: dict[str, str], new: dict[str, str]) -> dict[str, str | None]:
    if old is new or old == new:
        return {}
    diff: dict[str, str | None] = {name: version for name, version in new.items() if old.get(name) != version}
    diff.update((name, None) for name in old if name not in new)
    return diff


def versions_diff(old: Versions, new: Versions) -> dict[str, dict[str, str | None]]:
    """{kind: {name: new version or None}} of what differs, kinds without change left out."""
    diff = {kind: _kind_diff(old.get(kind, {}), new.get(kind, {})) for kind in KINDS}
    return {kind: names for kind, names in diff.items() if names}


def _stat_identity(mesh: Mesh, proxy: Proxy, group: Group) -> tuple:
    """What a proxy's stat names are made of besides its class's (compile/telemetry.py
    with_stat_names): nothing, or where they are per proxy its name, labels and the services
    it serves."""
    telemetry = group.config.telemetry
    if not stat_names_per_proxy(telemetry):
        return (telemetry.metrics, False)
    return (telemetry.metrics, True, proxy.name, proxy.namespace, proxy.labels, tuple(services_served(mesh, proxy)))


def estate_changes(old: CompiledEstate, new: CompiledEstate) -> Changes:
    """What changed for each proxy between two estates: compared class by class (a class's
    diff is computed once for all its proxies); a proxy that changed class or stat names, or
    has none, resource by resource."""
    changes: Changes = {}
    class_diffs: dict[tuple, dict] = {}
    for proxy_id, proxy in new.proxies.items():
        old_key, new_key = old.group_of.get(proxy_id), new.group_of[proxy_id]
        if old_key is None:
            diff = versions_diff({}, new.versions(proxy_id))
        else:
            old_group, new_group = old.groups[old_key], new.groups[new_key]
            if old_group.versions is new_group.versions and old.proxies[proxy_id] == proxy:
                continue
            same_stats = old_group.is_class and new_group.is_class and \
                _stat_identity(old.mesh, old.proxies[proxy_id], old_group) == _stat_identity(new.mesh, proxy, new_group)
            if same_stats:
                pair = (old_key, new_key)
                if pair not in class_diffs:
                    class_diffs[pair] = _class_diff(old_group, new_group)
                diff = _for_proxy(new.mesh, proxy, new_group, *class_diffs[pair])
            else:
                diff = versions_diff(old.versions(proxy_id), new.versions(proxy_id))
        if diff:
            changes[proxy_id] = diff
    for proxy_id in old.proxies.keys() - new.proxies.keys():
        changes[proxy_id] = {kind: dict.fromkeys(names) for kind, names in old.versions(proxy_id).items() if names}
    return dict(sorted(changes.items()))


def _class_diff(old: Group, new: Group) -> tuple[dict, list[dict]]:
    """The diff of two classes' shared versions, and new's clusters among it."""
    diff = versions_diff(old.versions, new.versions)
    changed = diff.get("clusters", {})
    return diff, [cluster for cluster in new.config.clusters if cluster["name"] in changed]


def _for_proxy(mesh: Mesh, proxy: Proxy, group: Group, class_diff: dict, clusters: list[dict]) -> dict:
    """A class's diff as one proxy of it sees it: changed clusters carry its stat names."""
    if "clusters" not in class_diff:
        return class_diff
    versions = _proxy_cluster_versions(mesh, proxy, group, clusters)
    return {**class_diff, "clusters": {name: versions.get(name) for name in class_diff["clusters"]}}


def recompiled(estate: CompiledEstate, mesh: Mesh) -> tuple[CompiledEstate, Changes]:
    """The estate of a new (validated) mesh, and what changed for each proxy."""
    new = compile_estate(mesh)
    return new, estate_changes(estate, new)


# The fast paths: WorkloadEntries that come, go, or change only their endpoint (address,
# weight, locality, readiness), as pods and tasks do by the second. The services selecting
# them get their new endpoints; only their load assignments are compiled again (once per
# DestinationRule/locality/gateway variant in use), for the proxies whose class sees them; a
# proxy that comes joins a class that exists, one that goes leaves its class.

def endpoint_only_change(old: Resource, new: Resource) -> bool:
    """Whether a WorkloadEntry's new version differs only in ENDPOINT_FIELDS."""

    def rest(resource: Resource) -> dict:
        return {k: v for k, v in resource.spec.items() if k not in ENDPOINT_FIELDS}

    def metadata(resource: Resource) -> dict:
        annotations = {k: v for k, v in resource.annotations.items() if k != ENDPOINT_ANNOTATION}
        return {**resource.metadata, "annotations": annotations}

    # An entry of a WorkloadGroup may take its locality and weight from the group (Mesh.build).
    return (old.kind == new.kind == "WorkloadEntry" and old.api_version == new.api_version and GROUP_ANNOTATION not in new.annotations and
            metadata(old) == metadata(new) and rest(old) == rest(new))


def _workload_index(mesh: Mesh) -> dict[tuple[str, str], Resource]:
    """(namespace, name) -> the mesh's WorkloadEntry of that name. A fast path's mesh gets its
    index from the one before (_mesh_with_workloads): made again, it would cost a pass over
    every workload per change."""
    return mesh.memo(("incremental", "workload index"), lambda: {(w.namespace, w.name): w for w in mesh.of_kind("WorkloadEntry")})


def known_workload(mesh: Mesh, namespace: str, name: str) -> Resource | None:
    """The mesh's WorkloadEntry of that name, or None (by the fast paths' index)."""
    return _workload_index(mesh).get((namespace, name))


def entries_selecting(mesh: Mesh, workload: Resource) -> list[Resource]:
    """The ServiceEntries whose workloadSelector picks the workload (in its namespace)."""
    return _entry_selectors(mesh).selecting(workload.namespace, workload.spec.get("labels") or {})


def _entry_selectors(mesh: Mesh) -> SelectorIndex[Resource]:
    return mesh.memo(("selectors", "ServiceEntry workloadSelector"), lambda: SelectorIndex(
        [entry for entry in mesh.of_kind("ServiceEntry") if "workloadSelector" in entry.spec],
        namespace_of, lambda entry: entry.spec["workloadSelector"]["labels"]))


def _gateway_selects(mesh: Mesh, workload: Resource) -> bool:
    labels = workload.spec.get("labels") or {}
    return any(labels_match(gateway.spec["selector"], labels) for gateway in mesh.of_kind("Gateway") if gateway.spec.get("selector"))


def with_workload_endpoints(estate: CompiledEstate, workload: Resource) -> tuple[CompiledEstate, Changes] | None:
    """The estate with a WorkloadEntry's new address, weight, locality or readiness (workload:
    its new version, validated), and the changes: the load assignments of the services
    selecting it, for the proxies that see them. None when the change is not that (another
    field changed, a service resolves by DNS, a cluster would change): recompile instead."""
    if (workload.namespace, workload.name) not in _workload_index(estate.mesh):
        return None
    return with_workloads_changed(estate, [workload], [])


def with_workload_added(estate: CompiledEstate, workload: Resource) -> tuple[CompiledEstate, Changes] | None:
    """The estate with a new WorkloadEntry (validated), and the changes: the new proxy's
    resources, and the load assignments of the services selecting it for the proxies that
    see them. None when it is not that simple (its proxy would be a gateway, start a class or
    be patched alone, a service resolves by DNS, a cluster would change): recompile instead."""
    if (workload.namespace, workload.name) in _workload_index(estate.mesh):
        return None
    return with_workloads_changed(estate, [workload], [])


def with_workload_removed(estate: CompiledEstate, workload: Resource) -> tuple[CompiledEstate, Changes] | None:
    """The estate without a WorkloadEntry (workload: its kind and metadata suffice), and the
    changes: every resource of its proxy removed, and the load assignments of the services
    that selected it. None when it is not that simple: recompile instead."""
    return with_workloads_changed(estate, [], [workload])


def with_workloads_changed(estate: CompiledEstate, edited: list[Resource], removed: list[Resource]) -> tuple[CompiledEstate, Changes] | None:
    """All at once: WorkloadEntries added or changed in their endpoint only (edited, validated)
    and removed (their kind and metadata suffice). None when one of them is not that simple:
    recompile instead."""
    mesh = estate.mesh
    index = _workload_index(mesh)
    keys = [(w.namespace, w.name) for w in edited + removed]
    if len(set(keys)) != len(keys) or any(w.kind != "WorkloadEntry" for w in edited + removed):
        return None
    gone, came, pairs = [], [], []
    for workload in removed:
        known = index.get((workload.namespace, workload.name))
        proxy = estate.proxies.get(f"{workload.name}.{workload.namespace}")
        if known is None or GROUP_ANNOTATION in known.annotations:
            return None
        if has_sidecar(known) and (proxy is None or proxy.kind != "sidecar"):
            return None
        gone.append(known)
    for workload in edited:
        known = index.get((workload.namespace, workload.name))
        if known is None:
            if GROUP_ANNOTATION in workload.annotations or (has_sidecar(workload) and _gateway_selects(mesh, workload)):
                return None
            came.append(workload)
        elif endpoint_only_change(known, workload):
            pairs.append((known, workload))
        else:
            return None
    with cyclic_collector_paused():
        return _workloads_update(estate, gone, came, pairs)


def _workloads_update(estate: CompiledEstate, gone: list[Resource], came: list[Resource],
                      pairs: list[tuple[Resource, Resource]]) -> tuple[CompiledEstate, Changes] | None:
    mesh = estate.mesh
    by_label = mesh.workloads_by_label
    for old in gone:
        by_label = by_label.removed(old)
    for old, new in pairs:
        by_label = by_label.replaced(old, new)
    for new in came:
        by_label = by_label.added(new, _workload_order)
    entries = {id(entry): entry for workload in gone + came + [new for dummy, new in pairs] for entry in entries_selecting(mesh, workload)}
    services = [dataclasses.replace(mesh.registry.services[host], endpoints=selected_endpoints(entry, by_label))
                for entry in entries.values() for host in entry.spec["hosts"]]
    if any(service.resolution in INLINE_ENDPOINT_RESOLUTIONS for service in services):
        return None
    new_mesh = _mesh_with_workloads(mesh, gone, came, pairs, by_label, services)
    # Workloads without a sidecar are endpoints only: no proxy comes, goes or moves with them.
    gone, came = [w for w in gone if has_sidecar(w)], [w for w in came if has_sidecar(w)]
    proxies, moved = dict(estate.proxies), []
    for old, new in filter(lambda pair: has_sidecar(pair[1]), pairs):
        proxy_id = f"{new.name}.{new.namespace}"
        before = proxies[proxy_id]
        # Only its address and locality can differ (its labels did not change, so neither
        # did its kind); a new locality is another class.
        proxies[proxy_id] = dataclasses.replace(before, address=new.spec["address"], locality=new.spec.get("locality", ""))
        if proxies[proxy_id].locality != before.locality:
            moved.append(proxy_id)
    group_of, groups = dict(estate.group_of), dict(estate.groups)
    for old in gone:
        proxy_id = f"{old.name}.{old.namespace}"
        del proxies[proxy_id]
        key = group_of.pop(proxy_id)
        groups[key] = dataclasses.replace(groups[key], members=tuple(p for p in groups[key].members if p != proxy_id))
        if not groups[key].members:
            del groups[key]
    joined: dict[tuple, list[Proxy]] = {}
    for new in came:
        proxy = workload_proxy(new)
        key = _group_key(new_mesh, proxy)
        if key[0] != "class" or key not in groups:
            return None  # a class of its own: compiled and checked whole
        group_of[proxy.id] = key
        joined.setdefault(key, []).append(proxy)
    if came:
        proxies = _with_proxies(proxies, [proxy for members in joined.values() for proxy in members])
        for key, members in joined.items():
            groups[key] = dataclasses.replace(groups[key], members=_in_order(groups[key].members, members, proxies))
    new_mesh.derived["proxies"] = {(): list(proxies.values())}  # list_proxies' answer, known
    between = CompiledEstate(new_mesh, proxies, group_of, groups, _seeing_updated(estate, groups))
    updated = _endpoint_update(between, estate.proxies, services, moved)
    if updated is None:
        return None
    result, changes = updated
    changes = dict(changes)
    for new in came:
        proxy_id = f"{new.name}.{new.namespace}"
        changes[proxy_id] = ArrivedProxy(result, proxy_id)
    for old in gone:  # every resource it had, gone: their names are its group's (no version to compute)
        proxy_id = f"{old.name}.{old.namespace}"
        changes[proxy_id] = {kind: dict.fromkeys(names) for kind, names in estate.groups[estate.group_of[proxy_id]].versions.items() if names}
    return result, dict(sorted(changes.items()))


class ArrivedProxy(Mapping):
    """The changes of a proxy that came: every resource it has, {kind: {name: version}},
    worked out when first asked. Its clusters' versions take its stat names, milliseconds per
    proxy that sees many services; a control plane asks only for proxies that are connected,
    and one that just came is not yet."""

    def __init__(self, estate: CompiledEstate, proxy_id: str):
        self._estate, self._proxy_id = estate, proxy_id
        self._diff: dict | None = None

    def _changes(self) -> dict:
        if self._diff is None:
            self._diff = versions_diff({}, self._estate.versions(self._proxy_id))
        return self._diff

    def __getitem__(self, kind: str) -> dict:
        return self._changes()[kind]

    def __iter__(self):
        return iter(self._changes())

    def __len__(self) -> int:
        return len(self._changes())


def _proxy_order(proxy: Proxy) -> tuple[str, str]:
    return (proxy.namespace, proxy.name)


def _with_proxies(proxies: dict[str, Proxy], added: list[Proxy]) -> dict[str, Proxy]:
    """proxies (in list_proxies order: namespace, then name) with added filed in that order
    (by bisection: the order of a few of them is read, not of all)."""
    items = list(proxies.items())
    for proxy in added:
        items.insert(bisect.bisect(items, _proxy_order(proxy), key=lambda item: _proxy_order(item[1])), (proxy.id, proxy))
    return dict(items)


def _in_order(members: tuple[str, ...], added: list[Proxy], proxies: dict[str, Proxy]) -> tuple[str, ...]:
    """A group's members with added ones filed in estate order."""
    out = list(members)
    for proxy in added:
        out.insert(bisect.bisect(out, _proxy_order(proxy), key=lambda member: _proxy_order(proxies[member])), proxy.id)
    return tuple(out)


def _mesh_with_workloads(mesh: Mesh, gone: list[Resource], came: list[Resource], pairs: list[tuple[Resource, Resource]],
                         by_label: LabelIndex[Resource], services: list[Service]) -> Mesh:
    """The mesh with WorkloadEntries removed, added and replaced, and the services selecting
    them updated; of what is memoized on it, only what does not read their endpoints (nor,
    when workloads come or go, the set of workloads) is kept."""
    workloads, resources = list(mesh.of_kind("WorkloadEntry")), list(mesh.resources)
    for old, new in pairs:
        workloads[bisect.bisect_left(workloads, _workload_order(old), key=_workload_order)] = new
        resources[bisect.bisect_left(resources, old.key, key=lambda r: r.key)] = new  # Mesh.build sorts them so
    for old in gone:
        del workloads[bisect.bisect_left(workloads, _workload_order(old), key=_workload_order)]
        del resources[bisect.bisect_left(resources, old.key, key=lambda r: r.key)]
    for new in came:
        workloads.insert(bisect.bisect(workloads, _workload_order(new), key=_workload_order), new)
        resources.insert(bisect.bisect(resources, new.key, key=lambda r: r.key), new)
    registry = Registry(dict(mesh.registry.services))
    for service in services:
        registry.add(service)
    # Tables of answers no endpoint decides are shared: what either mesh adds to them holds
    # for both. The services' clusters are copied without those of the changed services; the
    # classes' configs copied, to be replaced for the classes that see them.
    stale_hosts = {service.hostname for service in services}
    derived = {kind: table for kind, table in mesh.derived.items() if kind in ENDPOINT_INDEPENDENT_MEMOS}
    if gone or came:
        derived = _without_workload_set_answers(derived, gone + came)
    derived["service-clusters"] = {key: value for key, value in mesh.derived.get("service-clusters", {}).items() if key[0] not in stale_hosts}
    derived["proxy-class"] = dict(mesh.derived.get("proxy-class", {}))
    derived["incremental"] = {("workload index",): _index_after(_workload_index(mesh), gone, came, pairs)}
    return dataclasses.replace(mesh, resources=resources, registry=registry, by_kind={**mesh.by_kind, "WorkloadEntry": workloads},
                               workloads_by_label=by_label, derived=derived)


def _index_after(index: dict[tuple[str, str], Resource], gone: list[Resource], came: list[Resource],
                 pairs: list[tuple[Resource, Resource]]) -> dict[tuple[str, str], Resource]:
    """_workload_index of the mesh with these workloads gone, come and replaced."""
    index = dict(index)
    for old in gone:
        del index[(old.namespace, old.name)]
    for new in came + [new for dummy, new in pairs]:
        index[(new.namespace, new.name)] = new
    return index


def _workload_order(workload: Resource) -> tuple[str, str]:
    return (workload.namespace, workload.name)


def _without_workload_set_answers(derived: dict[str, dict], workloads: list[Resource]) -> dict[str, dict]:
    """derived without the answers that index every workload (computed again when asked)
    and without those about these (a workload removed and added again may differ)."""
    ids = {f"{w.name}.{w.namespace}" for w in workloads}
    out = {kind: table for kind, table in derived.items() if kind not in WORKLOAD_SET_MEMOS}
    if "telemetry" in out:
        out["telemetry"] = {key: value for key, value in out["telemetry"].items() if key != ("services by workload",)}
    if "inbound-ports" in out:
        out["inbound-ports"] = {key: value for key, value in out["inbound-ports"].items() if key[-1] not in ids}
    return out


def _assignment_index(endpoints: list[dict], name: str) -> int:
    """Where a cluster's load assignment is in a config's endpoints (sorted by cluster name)."""
    index = bisect.bisect_left(endpoints, name, key=lambda r: r["cluster_name"])
    if index == len(endpoints) or endpoints[index]["cluster_name"] != name:
        raise LookupError(name)
    return index


def assignment_named(estate: CompiledEstate, proxy_id: str, name: str) -> dict:
    """A proxy's load assignment of one cluster (LookupError when it has none)."""
    endpoints = estate.groups[estate.group_of[proxy_id]].config.endpoints
    return endpoints[_assignment_index(endpoints, name)]


def _replaced_assignments(config: ClassConfig, assignments: list[dict]) -> list[dict]:
    """The class's endpoints with some assignments replaced."""
    endpoints = list(config.endpoints)
    for assignment in assignments:
        endpoints[_assignment_index(endpoints, assignment["cluster_name"])] = assignment
    return endpoints


def _endpoint_update(estate: CompiledEstate, before: dict[str, Proxy], services: list[Service], moved: list[str]) -> tuple[CompiledEstate, Changes] | None:
    """estate (its workloads changed, its classes' endpoints not yet) with the load
    assignments of services compiled again for the classes that see them, and the proxies
    that moved to another locality (moved) regrouped; before: the proxies as they were."""
    mesh = estate.mesh
    groups = dict(estate.groups)
    changes: Changes = {}
    # Classes that held the same load assignments (the same variants of every service) share
    # their endpoints and versions: each such set is updated once.
    updates: dict[int, tuple[list[dict], dict[str, str], dict] | None] = {}
    for key in dict.fromkeys(key for service in services for key in estate.groups_seeing.get(service.hostname, ())):
        group = estate.groups[key]
        if not group.is_class:
            moved.append(key[1])  # a proxy of its own: compiled again below
            continue
        shared = group.versions["endpoints"]
        if id(shared) not in updates:
            seen = [service for service in services if key in estate.groups_seeing.get(service.hostname, ())]
            # Any proxy of the class compiles it, as it was in it: a changed proxy may be leaving it.
            first = group.members[0]
            updates[id(shared)] = _class_endpoints(mesh, before.get(first) or estate.proxies[first], group, seen)
        if updates[id(shared)] is None:
            return None
        endpoints, versions, diff = updates[id(shared)]
        config = dataclasses.replace(group.config, endpoints=endpoints)
        groups[key] = Group(key, config, {**group.versions, "endpoints": versions}, group.members)
        mesh.derived["proxy-class"][(key[1],)] = config
        changes.update(dict.fromkeys(group.members, diff) if diff["endpoints"] else ())
    new = _regrouped(dataclasses.replace(estate, groups=groups), moved)
    for proxy_id in moved:
        diff = versions_diff(estate.versions(proxy_id), new.versions(proxy_id))
        changes[proxy_id] = diff
        if not diff:
            del changes[proxy_id]
    return new, changes


def _class_endpoints(mesh: Mesh, proxy: Proxy, group: Group, services: list[Service]) -> tuple[list[dict], dict[str, str], dict] | None:
    """The class's endpoints with the load assignments of the services (those it sees)
    compiled again, their versions, and the diff {"endpoints": {name: version}}; None when a
    cluster would change too."""
    assignments = []
    for service in services:
        clusters, service_assignments = proxy_service_clusters(mesh, proxy, service)
        named = with_class_stat_names(mesh, group.config.telemetry, clusters)  # as the class holds them
        if any(resource_version(cluster) != group.versions["clusters"].get(cluster["name"]) for cluster in named):
            return None
        assignments += service_assignments
    try:
        endpoints = _replaced_assignments(group.config, assignments)
    except LookupError:
        return None
    old = group.versions["endpoints"]
    diff = {name: version for name, version in ((resource_name(a), digest(a)) for a in assignments) if old[name] != version}
    return endpoints, {**old, **diff} if diff else old, {"endpoints": diff}


def _regrouped(new: CompiledEstate, proxy_ids: list[str]) -> CompiledEstate:
    """new with these proxies' groups found again (a proxy's class may have changed) and
    the configs of proxies without a class compiled again on new's mesh."""
    if not proxy_ids:
        return new
    group_of, groups = dict(new.group_of), dict(new.groups)
    for proxy_id in proxy_ids:
        proxy = new.proxies[proxy_id]
        old_key, key = group_of[proxy_id], _group_key(new.mesh, proxy)
        if key == old_key and key[0] == "class":
            continue
        if old_key != key:
            left = tuple(p for p in groups[old_key].members if p != proxy_id)
            groups[old_key] = dataclasses.replace(groups[old_key], members=left)
        if key in groups and key[0] == "class":
            members = set(groups[key].members) | {proxy_id}
            groups[key] = dataclasses.replace(groups[key], members=tuple(p for p in new.proxies if p in members))
        else:
            config = _group_config(new.mesh, proxy, key)
            groups[key] = Group(key, config, _SharedDigests().versions(config), (proxy_id,))
        group_of[proxy_id] = key
    groups = {key: group for key, group in groups.items() if group.members}
    return dataclasses.replace(new, group_of=group_of, groups=groups, groups_seeing=_seeing_updated(new, groups))


def _seeing_updated(old: CompiledEstate, groups: dict[tuple, Group]) -> dict[str, tuple[tuple, ...]]:
    """groups_seeing for groups: old's, with the groups that are new or changed config
    looked at again."""
    dropped = {key for key in old.groups if key not in groups or groups[key].config is not old.groups[key].config}
    added = {key: group for key, group in groups.items() if key in dropped or key not in old.groups}
    if not dropped and not added:
        return old.groups_seeing
    seeing = {host: [key for key in keys if key not in dropped] for host, keys in old.groups_seeing.items()}
    for host, keys in _groups_seeing(added).items():
        seeing.setdefault(host, []).extend(keys)
    return {host: tuple(keys) for host, keys in seeing.items() if keys}


# A VirtualService whose http routes alone changed (its hosts, gateways, exportTo, tcp and tls
# routes and the label keys its sourceLabels name as they were; no delegation either way): the
# most common edit of a live mesh. Only the classes that route its hosts (or serve its
# gateways) are compiled again, on a mesh that keeps every memo the edit leaves valid (the
# services' clusters and load assignments above all); the other classes keep their configs.

# Memos that read VirtualServices: dropped (whole, or for the edited one's hosts) on such an edit.
VIRTUAL_SERVICE_MEMOS = frozenset(("large-direct-response", "delegates-named"))


def routes_only_edit(old: Resource, new: Resource) -> bool:
    """Whether new differs from old (a VirtualService) only in http routes that neither
    delegate nor change which proxies' labels they read."""

    def rest(resource: Resource) -> dict:
        return {k: v for k, v in resource.spec.items() if k != "http"}

    def plain(resource: Resource) -> bool:
        return bool(resource.spec.get("hosts")) and not any("delegate" in http for http in resource.spec.get("http") or [])

    return (old.kind == new.kind == "VirtualService" and old.key == new.key and old.api_version == new.api_version and
            old.metadata == new.metadata and rest(old) == rest(new) and plain(old) and plain(new) and
            _source_label_keys(old) == _source_label_keys(new))


def _source_label_keys(virtual_service: Resource) -> frozenset[str]:
    return frozenset(key for http in virtual_service.spec.get("http") or [] for match in http.get("match") or []
                     for key in match.get("sourceLabels") or {})


def with_virtual_service_routes(estate: CompiledEstate, old: Resource, new: Resource) -> tuple[CompiledEstate, Changes] | None:
    """The estate with a VirtualService's new http routes (new: validated; routes_only_edit
    of old), and what changed for each proxy; None when the edit is not that."""
    if not routes_only_edit(old, new):
        return None
    mesh = estate.mesh
    hosts = _routed_hostnames(mesh, new)
    affected = [key for key, group in estate.groups.items() if _group_routes_any(mesh, group, new, hosts)]
    new_mesh = _mesh_with_virtual_service(mesh, old, new, hosts, affected)
    groups = dict(estate.groups)
    for key in affected:
        group = groups[key]
        config = _group_config(new_mesh, estate.proxies[group.members[0]], key)
        groups[key] = Group(key, config, _versions_reusing(group, config), group.members)
    new_mesh.derived["proxies"] = {(): list(estate.proxies.values())}  # list_proxies' answer, known
    new = CompiledEstate(new_mesh, estate.proxies, estate.group_of, groups, _seeing_updated(estate, groups))
    return new, estate_changes(estate, new)


def _routed_hostnames(mesh: Mesh, virtual_service: Resource) -> frozenset[str]:
    """The mesh's services that the VirtualService's hosts name (exactly or by wildcard)."""
    patterns = {resolve_host(host, virtual_service.namespace) for host in virtual_service.spec["hosts"]}
    return frozenset(service.hostname for service in mesh.registry.sorted()
                     if any(pattern in patterns for pattern in host_patterns(service.hostname)))


def _group_routes_any(mesh: Mesh, group: Group, virtual_service: Resource, hosts: frozenset[str]) -> bool:
    """Whether a group's config may hold routes of the VirtualService: it has a virtual host of
    one of its hosts, or is a gateway the VirtualService may bind, or has its own config."""
    if not group.is_class:
        return True
    proxy_kind = group.key[1][0]
    if proxy_kind == "gateway":
        return not applies_to_sidecars(virtual_service) or bool(set(virtual_service.spec.get("gateways") or ()) - {"mesh"})
    return any(host["name"].rpartition(":")[0] in hosts for routes in group.config.routes for host in routes["virtual_hosts"])


def _mesh_with_virtual_service(mesh: Mesh, old: Resource, new: Resource, hosts: frozenset[str], affected: list[tuple]) -> Mesh:
    """The mesh with old replaced by new; of its memos, those the edit leaves valid."""
    resources = [new if r is old else r for r in mesh.resources]
    edited = [new if vs.key == new.key else vs for vs in mesh.of_kind("VirtualService")]
    derived = {kind: table for kind, table in mesh.derived.items() if kind not in VIRTUAL_SERVICE_MEMOS}
    derived["outbound-virtual-host"] = {key: host for key, host in mesh.derived.get("outbound-virtual-host", {}).items() if key[0] not in hosts}
    derived["by-key"] = {key: index for key, index in mesh.derived.get("by-key", {}).items() if key != ("VirtualService",)}
    stale = {key[1] for key in affected if key[0] == "class"}
    derived["proxy-class"] = {key: config for key, config in mesh.derived.get("proxy-class", {}).items() if key[0] not in stale}
    by_host = index_by_host([vs for vs in edited if applies_to_sidecars(vs)], lambda vs: vs.spec["hosts"])
    return dataclasses.replace(mesh, resources=resources, by_kind={**mesh.by_kind, "VirtualService": edited},
                               sidecar_virtual_services_by_host=by_host, derived=derived)


def _versions_reusing(old: Group, config) -> Versions:
    """The versions of a group's new config: a kind whose list is the old one's keeps its
    table, and a resource equal to the old one of its name (most often the same object) its
    version: only what the edit changed is hashed."""
    versions: Versions = {}
    for kind in KINDS:
        before, after = getattr(old.config, kind), getattr(config, kind)
        if before is after or (len(before) == len(after) and all(map(operator.is_, before, after))):
            versions[kind] = old.versions[kind]
            continue
        old_versions, by_name = old.versions[kind], {resource_name(r): r for r in before}
        table = {}
        for resource in after:
            name = resource_name(resource)
            was = by_name.get(name)
            table[name] = old_versions[name] if was is resource or (was is not None and was == resource) else resource_version(resource)
        versions[kind] = old_versions if table == old_versions else table
    return versions
