"""Shape checks: apiVersion, kind, metadata and the spec against the Istio API schemas."""

from __future__ import annotations

import dataclasses

from meshwright.model.resource import Resource
from meshwright.problems import Problems
from meshwright.validate.istio_api import KINDS, document
from meshwright.validate.shape import INVALID, Enum


def check_shape(resource: Resource, problems: Problems) -> Resource | None:
    """Report shape problems of one resource. Returns it with invalid parts pruned, for the
    checks that follow, or None when too little of it is sound to check further."""

    def report(path, message):
        problems.add(resource, path, message)

    checked = document.check(resource.document, (), report)
    if resource.kind not in KINDS:
        if resource.kind:
            Enum(*sorted(KINDS)).check(resource.kind, ("kind",), lambda path, message: report(path, "unknown kind: " + message))
        return None
    versions, spec_schema = KINDS[resource.kind]
    if resource.api_version and resource.api_version not in versions:
        report(("apiVersion",), f"{resource.api_version!r} is not an apiVersion of {resource.kind}: expected one of {', '.join(versions)}")
    if checked is INVALID or not isinstance(resource.document.get("spec"), dict):
        return None
    spec = spec_schema.check(resource.document["spec"], ("spec",), report)
    if spec is INVALID:
        return None
    return dataclasses.replace(resource, spec=spec, metadata=checked["metadata"])
