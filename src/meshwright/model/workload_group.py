"""WorkloadGroup: the template of the WorkloadEntries of a group of VMs.

Istio makes a WorkloadEntry from its group's template when a VM's proxy registers itself
(auto-registration) and marks it with the annotation istio.io/autoRegistrationGroup. meshwright
has no auto-registration: the user writes the WorkloadEntry (or Ansible's inventory does) with
that annotation naming a WorkloadGroup of its namespace, and the group gives it what it leaves
out, as Istio's generated entries get it: the labels and annotations of the group's
spec.metadata, and the template's ports, serviceAccount, network, locality and weight. What the
entry sets itself wins (labels and annotations key by key).
"""

from __future__ import annotations

import dataclasses

from meshwright.model.resource import Resource

# Istio's annotation on the WorkloadEntries it makes from a group.
GROUP_ANNOTATION = "istio.io/autoRegistrationGroup"


def group_of(entry: Resource) -> str | None:
    """The name of the WorkloadGroup a WorkloadEntry belongs to, or None."""
    return entry.annotations.get(GROUP_ANNOTATION) or None


def _from_group(entry: Resource, group: Resource) -> Resource:
    group_metadata = group.spec.get("metadata") or {}
    spec = {**(group.spec.get("template") or {}), **entry.spec}
    labels = {**(group_metadata.get("labels") or {}), **(entry.spec.get("labels") or {})}
    if labels:
        spec["labels"] = labels
    annotations = {**(group_metadata.get("annotations") or {}), **entry.annotations}
    return dataclasses.replace(entry, spec=spec, metadata={**entry.metadata, "annotations": annotations})


def with_workload_groups(resources: list[Resource]) -> list[Resource]:
    """The resources with every WorkloadEntry that names a WorkloadGroup of its namespace
    completed from the group (entries naming no existing group are left as they are:
    validation reports them)."""
    groups = {(r.namespace, r.name): r for r in resources if r.kind == "WorkloadGroup"}
    if not groups:
        return resources
    out = []
    for resource in resources:
        group = groups.get((resource.namespace, group_of(resource))) if resource.kind == "WorkloadEntry" else None
        out.append(_from_group(resource, group) if group is not None else resource)
    return out
