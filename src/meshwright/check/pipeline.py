"""validate_mesh: every check, in order, with all problems collected.

1. shape of every document; 2. duplicates and conflicts; 3. references and semantics, on
what is sound of each resource (shape checks prune what they reported); 4. every class of proxies compiled, and its resources
checked by Envoy's protos, for port clashes, and for consistency (every route's cluster exists).
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any, Callable

from meshwright.check.collectors import collector_problems
from meshwright.check.envoy_proto import TYPES, ResourceVerdicts
from meshwright.collector import cyclic_collector_paused
from meshwright.compile.build import ProxyConfig, shared_config
from meshwright.compile.envoy_values import HCM_FILTER
from meshwright.compile.envoyfilter import envoy_filters_for
from meshwright.compile.proxy import ADMIN_PORT, HEALTH_PORT, STATS_PORT, list_proxies
from meshwright.compile.proxy_class import proxy_classes
from meshwright.compile.scope import services_in_scope, sidecar_for
from meshwright.forked import available_workers, forked_map
from meshwright.mesh import Mesh
from meshwright.model.load import LoadResult
from meshwright.model.resource import Resource
from meshwright.problems import Problem, Problems
from meshwright.validate.references import check_references
from meshwright.validate.security_checks import check_one_authorizer_per_workload
from meshwright.validate.semantics import check_capture, check_conflicts, check_duplicates, check_listener_ports, check_semantics
from meshwright.validate.shape_check import check_shape, skip_kubernetes_objects
from meshwright.validate.telemetry import check_telemetry_conflicts


@cyclic_collector_paused()  # the checks make no reference cycles; the collector's passes would walk every loaded object
def validate_resources(loaded: LoadResult) -> tuple[Mesh | None, list[Problem]]:
    """Checks 1-3. Returns the mesh only when there is no error; its warnings then are in
    mesh.warnings (with errors, warnings come with them in the list)."""
    mesh, problems = _built_mesh(loaded)
    problems.extend(_mesh_problems(mesh))
    return _checked(mesh, problems)


def _built_mesh(loaded: LoadResult) -> tuple[Mesh, Problems]:
    """Check 1 (shapes) and duplicates, and the mesh of what is sound."""
    problems = Problems()
    problems.extend(loaded.problems)
    sound = _sound_shapes(skip_kubernetes_objects(loaded.resources, problems), problems)
    return Mesh.build(check_duplicates(sound, problems)), problems


@cyclic_collector_paused()
def _mesh_problems(mesh: Mesh) -> list[Problem]:
    """Checks 2-3 on the built mesh: conflicts, references and semantics."""
    problems = Problems()
    check_conflicts(mesh, problems)
    check_telemetry_conflicts(mesh, problems)
    check_listener_ports(mesh, problems)
    check_capture(mesh, problems)
    check_one_authorizer_per_workload(mesh, problems)
    for resource in mesh.resources:
        check_semantics(resource, problems)
        check_references(mesh, resource, problems)
    return problems.items


def _checked(mesh: Mesh, problems: Problems) -> tuple[Mesh | None, list[Problem]]:
    if problems:
        return None, problems.sorted()
    mesh.warnings = problems.sorted()
    return mesh, []


# Shape checks run in parts side by side (forked copies) from this many resources on: below
# it, a fork costs more than it saves.
SHAPES_PARALLEL_FROM = 20_000


def _sound_shapes(resources: list[Resource], problems: Problems) -> list[Resource]:
    """check_shape of every resource, in order: the sound ones, pruned (check 1)."""
    workers = available_workers() if len(resources) >= SHAPES_PARALLEL_FROM else 1
    size = max(1, -(-len(resources) // workers))
    parts = [resources[start:start + size] for start in range(0, len(resources), size)]
    sound = []
    for part, (found, outcomes) in zip(parts, forked_map(_shape_outcomes, parts)):
        problems.extend(found)
        sound += [_rebuilt(resource, outcome) for resource, outcome in zip(part, outcomes) if outcome is not None]
    return sound


# A resource check_shape keeps as written: its spec and metadata are the document's own objects.
_AS_WRITTEN = "as written"


def _shape_outcomes(resources: list[Resource]) -> tuple[list[Problem], list]:
    """check_shape's problems, and for each resource what it kept: None, _AS_WRITTEN, or the
    pruned (spec, metadata). Small to send back from a copy: most resources are as written."""
    problems = Problems()
    outcomes: list = []
    for resource in resources:
        checked = check_shape(resource, problems)
        if checked is None:
            outcomes.append(None)
        elif checked.spec is resource.document.get("spec") and checked.metadata is resource.document.get("metadata"):
            outcomes.append(_AS_WRITTEN)
        else:
            outcomes.append((checked.spec, checked.metadata))
    return problems.items, outcomes


def _rebuilt(resource: Resource, outcome) -> Resource:
    spec, metadata = (resource.document["spec"], resource.document["metadata"]) if outcome == _AS_WRITTEN else outcome
    return replace(resource, spec=spec, metadata=metadata)


def _routed_clusters(route_config: dict) -> list[tuple[str, str]]:
    """(virtual host name, cluster) of every cluster a route configuration sends traffic to."""
    pairs = []
    for host in route_config["virtual_hosts"]:
        for route in host["routes"]:
            action = route.get("route") or {}
            names = [action["cluster"]] if "cluster" in action else []
            names += [c["name"] for c in (action.get("weighted_clusters") or {}).get("clusters", [])]
            names += [m["cluster"] for m in action.get("request_mirror_policies") or []]
            pairs += [(host["name"], name) for name in names]
    return pairs


def check_proxy_config(config: ProxyConfig, verdicts: ResourceVerdicts | None = None) -> list[str]:
    """Problems of one compiled proxy, as messages naming the Envoy resource. Give the run's
    verdicts to parse a resource that other proxies share only once."""
    verdicts = verdicts or ResourceVerdicts()
    messages = []
    proxy = config.proxy
    for kind in ("listeners", "routes", "clusters", "endpoints"):
        for resource in getattr(config, kind):
            error = verdicts.check(TYPES[kind], resource)
            if error:
                name = resource.get("name") or resource.get("cluster_name")
                messages.append(f"{kind[:-1]} {name}: Envoy rejects it: {error}")
    for value in config.bootstrap_patches:
        error = verdicts.check(TYPES["bootstrap"], value)
        if error:
            messages.append(f"a BOOTSTRAP patch: Envoy rejects it: {error}")
    messages += [f"listener {listener}: filter {name} takes its config by extension config discovery (ECDS), which meshwright does not "
                 f"serve: add an EXTENSION_CONFIG patch named {name} (of a type its type_urls list) for this proxy, or give the filter "
                 "typed_config" for listener, name in discovered_filters(config.listeners)]
    bound: dict[int, str] = {proxy.port(ADMIN_PORT): "admin", proxy.port(HEALTH_PORT): "health", proxy.port(STATS_PORT): "stats"}
    handed: dict[tuple[str, int], str] = {}
    for listener in config.listeners:
        address = listener["address"]["socket_address"]
        port = address["port_value"]
        if listener.get("bind_to_port") is False:
            # Under capture, listeners that virtualOutbound hands connections to bind nothing:
            # TCP services may share a port at different VIPs, not at the same one.
            key = (address["address"], port)
            if key in handed:
                messages.append(f"{key[0]}:{port} clash: listeners {listener['name']} and {handed[key]} both take its connections")
            handed[key] = listener["name"]
            continue
        if port in bound:
            messages.append(f"port {port} clash: listener {listener['name']} and {bound[port]} both bind it")
        bound[port] = f"listener {listener['name']}"
    return messages


def discovered_filters(listeners: list[dict]) -> list[tuple[str, str]]:
    """(listener, filter) of the filters still waiting for extension config discovery: no
    EXTENSION_CONFIG gave them a config (compile/envoyfilter.py)."""
    found = []
    for listener in listeners:
        filters = list(listener.get("listener_filters") or [])
        for chain in listener["filter_chains"]:
            filters += chain["filters"]
            filters += [f for n in chain["filters"] if n["name"] == HCM_FILTER for f in n.get("typed_config", {}).get("http_filters") or []]
        found += [(listener["name"], f["name"]) for f in filters if "config_discovery" in f]
    return found


def missing_clusters(config: ProxyConfig) -> list[tuple[str, str]]:
    """(virtual host, cluster) of routes that send traffic to a cluster the proxy lacks."""
    clusters = {c["name"] for c in config.clusters}
    pairs = {pair for route_config in config.routes for pair in _routed_clusters(route_config)}
    return sorted(pair for pair in pairs if pair[1] not in clusters)


# What a caller of validate_mesh_with computes on each class's shared config, beside the
# checks, in the same forked parts: (the mesh, the config, the class's proxies) -> a result that pickles.
PerClass = Callable[[Mesh, ProxyConfig, list], Any]


@cyclic_collector_paused()  # as compiling: checks make trees, and the collector's passes would walk the whole estate
def validate_proxies(mesh: Mesh, workers: int | None = None) -> list[Problem]:
    """Check 4, once per class of proxies (compile/proxy_class.py), on the config its proxies
    share: they differ only in stat names, strings made of names validation checked. Each
    problem is reported for every proxy of the class. Problems point at the resource that defines the proxy, or, for a route to a host
    the proxy does not import, at its Sidecar's egress hosts. A big mesh's classes are
    checked in parts side by side, on as many cores as there are (workers: how many parts)."""
    return _validate_proxies(mesh, workers, None)[0]


def _validate_proxies(mesh: Mesh, workers: int | None, per_class: PerClass | None, keep: str | None = None) -> tuple[list[Problem], list]:
    classes = proxy_classes(mesh, list_proxies(mesh))
    parts = _check4_parts(mesh, classes, workers or _workers_for(mesh, classes), keep)
    return _joined(forked_map(lambda part: _classes_problems(mesh, part, per_class), parts))


def _check4_parts(mesh: Mesh, classes: list[list], workers: int, keep: str | None) -> list[list[list]]:
    parts = _balanced_parts(mesh, classes, workers)
    if keep is not None:  # the part that holds it is checked here (forked_map's first): its class stays compiled
        parts.sort(key=lambda part: not any(proxy.id == keep for proxies in part for proxy in proxies))
    return parts


def _joined(found: list[tuple[list[Problem], list]]) -> tuple[list[Problem], list]:
    """The parts' problems, sorted, and their per-class results."""
    return sorted(problem for problems, dummy in found for problem in problems), [result for dummy, results in found for result in results]


def _side_by_side(mesh: Mesh, per_class: PerClass | None, keep: str | None) -> tuple[list[Problem], tuple[list[Problem], list]] | None:
    """Checks 2-3 and check 4 at once, for a mesh whose check 4 runs in parts anyway: the
    checks of the mesh take one more forked copy instead of running alone before. Check 4
    then runs on a mesh that checks 2-3 may still refuse: its results (or its errors) count
    only if they do not. None when check 4 would not run in parts."""
    try:
        classes = proxy_classes(mesh, list_proxies(mesh))
    except Exception:  # pylint: disable=broad-except  # a mesh checks 2-3 refuse: they say why, before check 4
        return None
    workers = _workers_for(mesh, classes)
    if workers == 1:
        return None
    parts = _check4_parts(mesh, classes, workers, keep)
    tasks: list[Callable[[], Any]] = [functools.partial(_outcome, _classes_problems, mesh, part, per_class) for part in parts]
    tasks.append(functools.partial(_outcome, _mesh_problems, mesh))
    *check4, mesh_checks = forked_map(lambda task: task(), tasks)
    mesh_problems = _value(mesh_checks)
    if any(not problem.is_warning for problem in mesh_problems):
        return mesh_problems, ([], [])
    return mesh_problems, _joined([_value(outcome) for outcome in check4])


def _outcome(work: Callable, *args) -> tuple[bool, Any]:
    """(True, work's result) or (False, the error it raised), for the caller to decide on."""
    try:
        return True, work(*args)
    except Exception as error:  # pylint: disable=broad-except  # raised again by _value where it counts
        return False, error


def _value(outcome: tuple[bool, Any]) -> Any:
    done, value = outcome
    if not done:
        raise value
    return value


# Check 4 forks copies of the process (meshwright/forked.py) only when the classes see this
# many services in all: below it, a fork costs more than it saves.
PARALLEL_FROM = 5_000


def _class_cost(mesh: Mesh, proxies: list) -> int:
    """What compiling a class costs, about: the services its proxies see."""
    proxy = proxies[0]
    return len(services_in_scope(mesh, proxy)) if proxy.kind == "sidecar" else len(mesh.registry.sorted())


def _workers_for(mesh: Mesh, classes: list[list]) -> int:
    return available_workers() if sum(_class_cost(mesh, c) for c in classes) >= PARALLEL_FROM else 1


def _balanced_parts(mesh: Mesh, classes: list[list], workers: int) -> list[list[list]]:
    """The classes in parts of about equal cost: the costliest first, each to the part that
    costs least so far."""
    parts: list[list[list]] = [[] for dummy in range(max(1, min(workers, len(classes))))]
    costs = [0] * len(parts)
    for proxies in sorted(classes, key=lambda c: -_class_cost(mesh, c)):
        cheapest = costs.index(min(costs))
        parts[cheapest].append(proxies)
        costs[cheapest] += _class_cost(mesh, proxies)
    return parts


def _classes_problems(mesh: Mesh, classes: list[list], per_class: PerClass | None = None) -> tuple[list[Problem], list]:
    problems, results = [], []
    verdicts = ResourceVerdicts()
    for proxies in classes:
        config = shared_config(mesh, proxies[0])
        messages = check_proxy_config(config, verdicts)
        missing = missing_clusters(config)
        for proxy in proxies:
            problems += proxy_problems(mesh, replace(config, proxy=proxy), messages, missing)
        if per_class is not None:
            results.append(per_class(mesh, config, proxies))
    return problems, results


def proxy_problems(mesh: Mesh, config: ProxyConfig, messages: list[str], missing: list[tuple[str, str]]) -> list[Problem]:
    """The problems of one proxy, whose config check found messages and missing clusters."""
    proxy = config.proxy
    problems = collector_problems(mesh, config)
    if not messages and not missing:
        return problems
    source = mesh.find("WorkloadEntry", proxy.namespace, proxy.name) or mesh.find("Gateway", proxy.namespace, proxy.name)
    for message in messages:
        problems.append(Problem(source.source.file, source.source.line, source.ref, (), f"proxy {proxy.id}: {message}"))
    sidecar = sidecar_for(mesh, proxy) if proxy.kind == "sidecar" else None
    # A cluster the proxy would have, missing: an EnvoyFilter patching it removed or renamed it.
    filters = envoy_filters_for(mesh, proxy) if missing else []
    in_scope = {s.hostname for s in services_in_scope(mesh, proxy)} if filters and proxy.kind == "sidecar" else set()
    for virtual_host, cluster in missing:
        host = cluster.split("|")[-1]
        service = mesh.registry.get(host)
        if filters and (proxy.kind != "sidecar" or host in in_scope):
            first = filters[0]
            named = ", ".join(f.ref for f in filters)
            problems.append(Problem(first.source.file, first.source.line, first.ref, (), (
                f"proxy {proxy.id}: the routes of {virtual_host} send traffic to {cluster}, which the EnvoyFilters "
                f"patching this proxy ({named}) remove or rename: keep the cluster, or patch the routes too"
            )))
        elif sidecar is not None and sidecar.spec.get("egress") and service is not None:
            path = ("spec", "egress")
            problems.append(Problem(sidecar.source.file, sidecar.line_of(path), sidecar.ref, path, (
                f"proxy {proxy.id}: the routes of {virtual_host} send traffic to {host} ({cluster}), "
                f"which these egress hosts do not import: add \"{service.namespace}/{host}\" to them"
            )))
        else:
            problems.append(Problem(source.source.file, source.source.line, source.ref, (), f"proxy {proxy.id}: the routes of {virtual_host} send "
                                                                                            f"traffic to {cluster}, which this proxy does not have"))
    return problems


def validate_mesh(loaded: LoadResult, keep: str | None = None) -> tuple[Mesh | None, list[Problem]]:
    """keep: a proxy whose class check 4 compiles in this process, where its config then
    stays in the mesh's memos (a render of that one proxy does not compile it again)."""
    mesh, problems, dummy = validate_mesh_with(loaded, None, keep)
    return mesh, problems


def validate_mesh_with(loaded: LoadResult, per_class: PerClass | None, keep: str | None = None) -> tuple[Mesh | None, list[Problem], list]:
    """validate_mesh, and per_class's result for every class of proxies, computed where
    check 4 compiles the class (no class is compiled twice); no results with problems."""
    mesh, problems = _built_mesh(loaded)
    together = None if problems else _side_by_side(mesh, per_class, keep)
    problems.extend(together[0] if together else _mesh_problems(mesh))
    checked, listed = _checked(mesh, problems)
    if checked is None:
        return None, listed, []
    found, results = together[1] if together else _validate_proxies(checked, None, per_class, keep)
    return (None, sorted(found + checked.warnings), []) if found else (checked, [], results)
