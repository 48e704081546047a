"""apply: one change to a compiled estate (compile/incremental.py), validated first.

The library call the control plane makes when a resource is added, edited or removed: a
WorkloadEntry whose address, weight or locality changed takes the fast path (its services'
load assignments only); any other change validates and compiles the whole mesh again and
compares it class by class. A change that does not validate is refused with validation's
problems and the estate is left as it was.
"""

from __future__ import annotations

from meshwright.check.envoy_proto import TYPES, check_resource
from meshwright.check.pipeline import validate_mesh
from meshwright.compile.incremental import Changes, CompiledEstate, assignment_named, recompiled, with_workload_endpoints
from meshwright.model.load import LoadResult, resource_from_document
from meshwright.model.resource import Resource
from meshwright.problems import MeshConfigError, Problems
from meshwright.validate.references import check_references
from meshwright.validate.semantics import check_semantics
from meshwright.validate.shape_check import check_shape, is_kubernetes_object

__all__ = ["ChangeRefused", "apply", "apply_resource", "resource_from_document"]


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


def _endpoints_refused(changes: Changes, estate: CompiledEstate, resource: Resource) -> None:
    """Envoy's protos on the load assignments the fast path made (validation's check 4),
    each once: the proxies of a class share their diff."""
    seen_diffs: set[int] = set()
    checked: set[str] = set()
    problems = Problems()
    for proxy_id, kinds in changes.items():
        if id(kinds) in seen_diffs:
            continue
        seen_diffs.add(id(kinds))
        for name in kinds.get("endpoints", {}).keys() - checked:
            checked.add(name)
            error = check_resource(TYPES["endpoints"], assignment_named(estate, proxy_id, name))
            if error:
                problems.add(resource, ("spec", "address"), f"proxy {proxy_id}: endpoint {name}: Envoy rejects it: {error}")
    if problems:
        raise ChangeRefused(problems.sorted())


def apply(estate: CompiledEstate, document: dict, removed: bool = False, source: str = "<change>") -> tuple[CompiledEstate, Changes]:
    """The estate after one change, and what changed: {proxy id: {kind: {name: new version,
    or None when the proxy no longer has it}}}, only what changed. document: the resource
    added or edited, or, with removed, the one taken away (its kind and metadata suffice).
    Raises ChangeRefused (problems naming source, the resource and the field) when the
    change does not validate; estate itself is never changed."""
    return apply_resource(estate, resource_from_document(document, source), removed)


def apply_resource(estate: CompiledEstate, resource: Resource, removed: bool = False) -> tuple[CompiledEstate, Changes]:
    """apply for a resource as the loader made it: problems name its file and lines (the
    control plane's watched folder, serve/source.py)."""
    if is_kubernetes_object(resource):
        return estate, {}  # a Deployment, a Service...: not mesh config, as validation skips it
    if not removed:
        resource = _checked(estate, resource)
        fast = with_workload_endpoints(estate, resource)
        if fast is not None:
            _endpoints_refused(fast[1], fast[0], resource)
            return fast
    others = [r for r in estate.mesh.resources if r.key != resource.key]
    if removed and len(others) == len(estate.mesh.resources):
        raise ChangeRefused([_not_there(resource)])
    mesh, problems = validate_mesh(LoadResult(others if removed else others + [resource]))
    if mesh is None:
        raise ChangeRefused(problems)
    return recompiled(estate, mesh)


def _not_there(resource: Resource):
    problems = Problems()
    problems.add(resource, ("metadata", "name"), f"there is no {resource.ref} to remove")
    return problems.sorted()[0]
