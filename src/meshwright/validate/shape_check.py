"""Shape checks: apiVersion, kind, metadata and the spec against the Istio API schemas."""

from __future__ import annotations

import dataclasses
import functools
import re

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


# Kinds of Kubernetes' core group (apiVersion v1) that mesh config files carry beside Istio
# resources (Istio's samples put a Service, a ServiceAccount and a Deployment next to them).
CORE_KINDS = frozenset({
    "ConfigMap", "Endpoints", "LimitRange", "Namespace", "Node", "PersistentVolume", "PersistentVolumeClaim", "Pod",
    "PodTemplate", "ReplicationController", "ResourceQuota", "Secret", "Service", "ServiceAccount",
})
# Kubernetes' built-in groups without a dot in their name (the others are DNS names).
SHORT_GROUPS = frozenset({"apps", "batch", "autoscaling", "policy"})
GATEWAY_API_GROUP = "gateway.networking.k8s.io"
_VERSION = re.compile(r"v[1-9][0-9]*((alpha|beta)[1-9][0-9]*)?")


def _api_group(api_version: str) -> tuple[str, str] | None:
    """(group, version) of a Kubernetes apiVersion ("" for the core group), or None when it
    is not one."""
    group, dummy, version = api_version.rpartition("/")
    return (group, version) if _VERSION.fullmatch(version) else None


def is_kubernetes_object(resource: Resource) -> bool:
    """Whether a document is a Kubernetes object that is not mesh config (a Deployment, a
    Service...): never a kind meshwright reads, nor one of Istio's or meshwright's groups,
    whose unknown kinds stay errors."""
    return _is_kubernetes_kind(resource.api_version, resource.kind)


@functools.lru_cache(maxsize=1024)  # a control plane asks for every resource of every publish: a few distinct answers
def _is_kubernetes_kind(api_version: str, kind: str) -> bool:
    parsed = _api_group(api_version)
    if parsed is None or not kind or kind in KINDS:
        return False
    group = parsed[0]
    if group.endswith("istio.io") or group.endswith("meshwright.io") or group == GATEWAY_API_GROUP:
        return False
    if not group:
        return kind in CORE_KINDS
    return "." in group or group in SHORT_GROUPS


def skip_kubernetes_objects(resources: list[Resource], problems: Problems) -> list[Resource]:
    """The resources without the Kubernetes objects that files mix in with mesh config: each
    kind of them is noted once per file (a warning at its first object), not failed. Kinds
    that are mesh config meshwright does not read yet are refused here."""
    kept, skipped = [], {}
    for resource in resources:
        if _refused_kind(resource, problems):
            continue
        if is_kubernetes_object(resource):
            skipped.setdefault((resource.source.file, resource.kind), []).append(resource)
        else:
            kept.append(resource)
    for (dummy, kind), objects in skipped.items():
        others = f" (and {len(objects) - 1} more {kind} in this file)" if len(objects) > 1 else ""
        problems.warn(objects[0], ("kind",), f"{kind} ({objects[0].api_version}) is a Kubernetes object, not mesh config: skipped{others}")
    return kept


def _refused_kind(resource: Resource, problems: Problems) -> bool:
    """Reports documents that hold mesh config in a form meshwright does not read: a Kubernetes
    List (its items would be skipped unseen) and the Kubernetes Gateway API."""
    parsed = _api_group(resource.api_version)
    if parsed is None:
        return False
    if parsed[0] == "" and resource.kind == "List":
        problems.add(resource, ("kind",), "a List is not read: write each of its items as a document of its own, separated by ---")
        return True
    if parsed[0] == GATEWAY_API_GROUP:
        problems.add(resource, ("kind",), f"{resource.kind} of the Kubernetes Gateway API is not supported by meshwright yet "
                     "(route with an Istio Gateway and VirtualServices bound to it, networking.istio.io)")
        return True
    return False
