"""apply: one change to a compiled estate (compile/incremental.py), validated first.

The library call the control plane makes when a resource is added, edited or removed: a
WorkloadEntry whose address, weight or locality changed takes the fast path (its services'
load assignments only); a VirtualService whose http routes alone changed is checked alone and
compiled again only for the classes that route its hosts, whose changed resources alone are
checked (check 4); any other change validates and compiles the whole mesh again and
compares it class by class. A change that does not validate is refused with validation's
problems and the estate is left as it was.
"""

from __future__ import annotations

from dataclasses import replace

from meshwright.collector import cyclic_collector_paused
from meshwright.check.envoy_proto import TYPES, ResourceVerdicts
from meshwright.check.pipeline import check_proxy_config, missing_clusters, proxy_problems, validate_mesh
from meshwright.compile.build import ProxyConfig
from meshwright.compile.incremental import (KINDS, Changes, CompiledEstate, assignment_named, entries_selecting, known_workload, merged_changes,
                                            recompiled, resource_name, with_virtual_service_routes, with_workloads_changed)
from meshwright.model.load import LoadResult, resource_from_document
from meshwright.model.resource import Resource
from meshwright.problems import MeshConfigError, Problems
from meshwright.registry.inventory import has_sidecar
from meshwright.validate.references import check_references
from meshwright.validate.security_checks import check_one_authorizer_per_workload, check_security
from meshwright.validate.semantics import check_capture, check_listener_ports, check_semantics
from meshwright.validate.telemetry import check_telemetry_conflicts
from meshwright.validate.shape_check import check_shape, is_kubernetes_object

# Kinds whose checks read the workloads they select (a workload that comes or goes may break them).
POLICY_KINDS = ("PeerAuthentication", "AuthorizationPolicy", "RequestAuthentication")
OTHER_SELECTING_KINDS = ("Sidecar", "Telemetry", "EnvoyFilter")

# Envoy's verdicts on load assignments by shape, kept from change to change: a service's
# assignments mostly differ in addresses, which do not decide a verdict.
_VERDICTS = ResourceVerdicts(limit=1 << 12)

__all__ = ["ChangeRefused", "apply", "apply_resource", "apply_resources", "resource_from_document"]


class ChangeRefused(MeshConfigError):
    """A change that does not validate; .problems lists why (the estate is unchanged)."""


def _checked(estate: CompiledEstate, resource: Resource) -> Resource:
    """The resource as validation leaves it (checks 1 and 3, the ones about it alone);
    ChangeRefused with its problems."""
    problems = Problems()
    checked = check_shape(resource, problems)
    if checked is not None:
        check_semantics(checked, problems)
        check_references(estate.mesh, checked, problems)
    if problems or checked is None:
        raise ChangeRefused(problems.sorted())
    return checked


def _endpoints_refused(changes: Changes, estate: CompiledEstate, resource: Resource, skip: set[str]) -> None:
    """Envoy's protos on the load assignments the fast path made (validation's check 4),
    each once: the proxies of a class share their diff. skip: proxies that came or went (one
    that came joined a class whose resources were checked; the changed ones its class's
    other members have too). resource: what a problem is reported on."""
    distinct = _distinct_changes(changes, skip)
    checked: set[str] = set()
    problems = Problems()
    for proxy_id, kinds in distinct.values():
        for name in [name for name, version in kinds.get("endpoints", {}).items() if version is not None and name not in checked]:
            checked.add(name)
            error = _VERDICTS.check(TYPES["endpoints"], assignment_named(estate, proxy_id, name))
            if error:
                problems.add(resource, ("spec", "address"), f"proxy {proxy_id}: endpoint {name}: Envoy rejects it: {error}")
    if problems:
        raise ChangeRefused(problems.sorted())


def _distinct_changes(changes: Changes, skip: set[str]) -> dict[int, tuple[str, dict]]:
    """id -> (a proxy, its changes) for each distinct changes object of proxies not in skip:
    the members of a class share one. Made in C (a copy, zip, map) over thousands of proxies."""
    kept = dict(changes)
    for proxy_id in skip:
        kept.pop(proxy_id, None)
    return dict(zip(map(id, kept.values()), kept.items()))


def _workload_set_refused(estate: CompiledEstate, came: list[Resource], gone: list[Resource]) -> None:
    """Validation's checks that read every proxy or the workloads a resource selects, for the
    workloads that came into the mesh (as it holds them) or left it (as it held them); their
    own resources were checked alone before: the checks of each proxy on their proxies; the
    policies' (whether they are enforced on those that came); those of the other resources
    that select workloads."""
    mesh, problems = estate.mesh, Problems()
    came_proxies = [workload for workload in came if has_sidecar(workload)]  # the others are endpoints only
    if came_proxies:
        proxies = [estate.proxies[f"{workload.name}.{workload.namespace}"] for workload in came_proxies]
        check_capture(mesh, problems, proxies)
        check_listener_ports(mesh, problems, proxies)
        check_telemetry_conflicts(mesh, problems, proxies)
        check_one_authorizer_per_workload(mesh, problems, proxies)
    for kind in POLICY_KINDS:
        for policy in mesh.of_kind(kind):
            check_security(mesh, policy, problems, came_proxies)
    for kind in OTHER_SELECTING_KINDS:
        for selecting in mesh.of_kind(kind):
            check_references(mesh, selecting, problems)
    entries = {id(entry): entry for workload in came + gone for entry in entries_selecting(mesh, workload)}
    for entry in entries.values():
        check_references(mesh, entry, problems)
    if problems:
        raise ChangeRefused(problems.sorted())


def _fast_path(estate: CompiledEstate, edited: list[Resource], removed: list[Resource]) -> tuple[CompiledEstate, Changes] | None:
    """with_workloads_changed, validated (edited: checked alone already); None when the
    changes are not all WorkloadEntries that come, go or change their endpoint only."""
    fast = with_workloads_changed(estate, edited, removed)
    if fast is None:
        return None
    came = [w for w in edited if known_workload(estate.mesh, w.namespace, w.name) is None]
    gone = [known_workload(estate.mesh, w.namespace, w.name) for w in removed]
    _endpoints_refused(fast[1], fast[0], (edited + removed)[0], {f"{w.name}.{w.namespace}" for w in came + gone})
    if came or gone:
        _workload_set_refused(fast[0], came, gone)
    return fast


def _routes_path(estate: CompiledEstate, virtual_service: Resource) -> tuple[CompiledEstate, Changes] | None:
    """with_virtual_service_routes, validated (virtual_service: checked alone already, and its
    hosts, the only thing validation's checks across resources read of it, are as they were);
    None when the edit is not one of its http routes alone."""
    old = estate.mesh.find("VirtualService", virtual_service.namespace, virtual_service.name)
    fast = None if old is None else with_virtual_service_routes(estate, old, virtual_service)
    if fast is not None:
        _classes_refused(estate, fast[0])
    return fast


def _classes_refused(before: CompiledEstate, after: CompiledEstate) -> None:
    """Check 4 on the groups compiled again, as validation makes it, on their resources that
    changed (the others passed it before): Envoy's protos, their routes' clusters, and their
    listeners' ports when listeners changed."""
    problems = []
    for key, group in after.groups.items():
        old = before.groups.get(key)
        if old is group:
            continue
        config, proxy = group.config, after.proxies[group.members[0]]
        changed = {kind: _changed(getattr(config, kind), group.versions[kind], old.versions[kind] if old else {}) for kind in KINDS}
        listeners = config.listeners if changed["listeners"] else []
        routes = [_changed_part(route, old.config.routes if old else []) for route in changed["routes"]]
        messages = check_proxy_config(ProxyConfig(proxy, listeners, routes, changed["clusters"], changed["endpoints"], config.telemetry), _VERDICTS)
        if messages and routes != changed["routes"]:  # the whole route configurations, for validation's very messages
            whole_routes = ProxyConfig(proxy, listeners, changed["routes"], changed["clusters"], changed["endpoints"], config.telemetry)
            messages = check_proxy_config(whole_routes, _VERDICTS)
        # The routes that changed, against the clusters; all of them when the clusters changed too.
        routed = changed["routes"] if old is not None and group.versions["clusters"] is old.versions["clusters"] else config.routes
        missing = missing_clusters(ProxyConfig(proxy, routes=routed, clusters=config.clusters))
        if not messages and not missing:
            continue
        whole = ProxyConfig(proxy, config.listeners, config.routes, config.clusters, config.endpoints, config.telemetry)
        for member in group.members:
            problems += proxy_problems(after.mesh, replace(whole, proxy=after.proxies[member]), messages, missing)
    if problems:
        raise ChangeRefused(sorted(problems))


def _changed(resources: list[dict], versions: dict[str, str], old: dict[str, str]) -> list[dict]:
    """The resources whose version is not the old one of their name."""
    if versions is old:
        return []
    names = {name for name, version in versions.items() if old.get(name) != version}
    return [r for r in resources if resource_name(r) in names] if names else []


def _changed_part(route: dict, old_routes: list[dict]) -> dict:
    """A route configuration with only its virtual hosts that are not the old one's: Envoy's
    protos accept it when they accept the whole (the rest they accepted before)."""
    old = next((r for r in old_routes if r["name"] == route["name"]), None)
    if old is None:
        return route
    kept = {id(host) for host in old["virtual_hosts"]}
    by_name = {host["name"]: host for host in old["virtual_hosts"]}
    hosts = [host for host in route["virtual_hosts"] if id(host) not in kept and by_name.get(host["name"]) != host]
    return {**route, "virtual_hosts": hosts}


def apply(estate: CompiledEstate, document: dict, removed: bool = False, source: str = "<change>") -> tuple[CompiledEstate, Changes]:
    """The estate after one change, and what changed: {proxy id: {kind: {name: new version,
    or None when the proxy no longer has it}}}, only what changed. document: the resource
    added or edited, or, with removed, the one taken away (its kind and metadata suffice).
    Raises ChangeRefused (problems naming source, the resource and the field) when the
    change does not validate; estate itself is never changed."""
    return apply_resource(estate, resource_from_document(document, source), removed)


@cyclic_collector_paused()  # a change builds trees without cycles: a collector pass would walk the estate
def apply_resource(estate: CompiledEstate, resource: Resource, removed: bool = False) -> tuple[CompiledEstate, Changes]:
    """apply for a resource as the loader made it: problems name its file and lines (the
    control plane's watched folder, serve/source.py)."""
    if is_kubernetes_object(resource):
        return estate, {}  # a Deployment, a Service...: not mesh config, as validation skips it
    if not removed:
        resource = _checked(estate, resource)
    fast = _fast_path(estate, [] if removed else [resource], [resource] if removed else [])
    if fast is None and not removed and resource.kind == "VirtualService":
        fast = _routes_path(estate, resource)
    if fast is not None:
        return fast
    others = [r for r in estate.mesh.resources if r.key != resource.key]
    if removed and len(others) == len(estate.mesh.resources):
        raise ChangeRefused([_not_there(resource)])
    mesh, problems = validate_mesh(LoadResult(others if removed else others + [resource]))
    if mesh is None:
        raise ChangeRefused(problems)
    return recompiled(estate, mesh)


# More changes than this that the fast path cannot take in one step are not applied one by
# one: validating and compiling the whole mesh once costs less.
ONE_BY_ONE_LIMIT = 64


@cyclic_collector_paused()
def apply_resources(estate: CompiledEstate, edited: list[Resource], removed: list[Resource]) -> tuple[CompiledEstate, Changes] | None:
    """Several changes at once, as a registry publishes them (resources as the loader makes
    them): WorkloadEntries that come, go or change their endpoint only, in one step on the
    fast path, however many; otherwise, up to ONE_BY_ONE_LIMIT changes one by one
    (apply_resource, removals first: a renamed workload may keep its address), and None for
    more, or when a step of several is refused (validate the mesh whole instead: the result
    may be sound though a state on the way is not). ChangeRefused for a single bad change;
    estate is never changed."""
    edited = [r for r in edited if not is_kubernetes_object(r)]
    removed = [r for r in removed if not is_kubernetes_object(r)]
    if edited + removed and all(r.kind == "WorkloadEntry" for r in edited + removed):
        fast = _fast_path(estate, [_checked(estate, r) for r in edited], removed)
        if fast is not None:
            return fast
    if len(edited) + len(removed) > ONE_BY_ONE_LIMIT:
        return None
    changes: Changes = {}
    steps = [(r, True) for r in removed] + [(r, False) for r in edited]
    for resource, gone in steps:
        try:
            estate, step = apply_resource(estate, resource, removed=gone)
        except ChangeRefused:
            if len(steps) > 1:  # one at a time may pass through a state the whole change never holds
                return None  # (a DestinationRule removed before the VirtualService using it): validate the result whole
            raise
        changes = merged_changes(changes, step)
    return estate, changes


def _not_there(resource: Resource):
    problems = Problems()
    problems.add(resource, ("metadata", "name"), f"there is no {resource.ref} to remove")
    return problems.sorted()[0]
