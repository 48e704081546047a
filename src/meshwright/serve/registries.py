"""Registries: sources of mesh resources besides the mesh files (Kubernetes, Marathon).

The contract between a registry and the control plane:
- A registry has a `name` ("kubernetes/cluster-1", "marathon/prod"), `start(publish)` and
  `stop()`. Whenever its view changes it calls publish: with the FULL list of the mesh
  resources it contributes now (its first view, a relist), or with ViewChanges, only what
  changed since its last publish (a pod or task that came, went or moved): at thousands of
  workloads a whole view costs the registry and the plane milliseconds per resource held,
  whatever changed. Resources are in the shape the YAML loader makes: typically a
  ServiceEntry per service and a WorkloadEntry per pod or task; Kubernetes also the Istio
  resources it reads from the cluster.
- Each resource's source names the registry and the object it came from (registry/published.py
  registry_resource), so problems say where a bad resource came from.
- A workload that must not receive traffic (a pod not ready, a task failing its health
  checks) carries the annotation registry/inventory.py ENDPOINT_ANNOTATION: NOT_READY. It stays
  a proxy and gets its config; no service lists it as an endpoint.
- The plane (ControlPlane.apply_source) merges every source, the files among them, and applies
  what changed incrementally. A publish that makes the mesh invalid is rejected as a bad file
  edit is: logged, shown in `meshwright status`, and the plane keeps that registry's last good
  resources (its next publish is tried again).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Mapping, Protocol, Union

from meshwright.model.resource import Resource

LOG = logging.getLogger("meshwright.serve")

# The source name of the watched mesh files among the plane's sources.
FILES = "files"


@dataclass(frozen=True)
class ViewChanges:
    """What changed in a registry's view since its last publish: by resource key (Resource.key),
    the resource as it is now, or None when it left the view."""

    changes: Mapping[tuple, Resource | None]

    def then(self, later: "ViewChanges") -> "ViewChanges":
        """These changes and later ones as one (the later win)."""
        return ViewChanges({**self.changes, **later.changes})


Update = Union[list[Resource], ViewChanges]  # what a registry publishes: its whole view, or what changed
Publish = Callable[[Update], None]


def view_after(view: Mapping[tuple, Resource], update: Update, in_place: bool = False) -> dict[tuple, Resource]:
    """A registry's view (resources by key) after one of its publishes: a whole list replaces
    it; changes edit a copy (in_place: view itself, a dict)."""
    if not isinstance(update, ViewChanges):
        return {resource.key: resource for resource in update}
    after = view if in_place else dict(view)
    for key, resource in update.changes.items():
        if resource is None:
            after.pop(key, None)
        else:
            after[key] = resource
    return after


def combined(first: Update, then: Update) -> Update:
    """Two publishes of a registry as one: a whole view and what changed after it is a whole view."""
    if not isinstance(then, ViewChanges):
        return then
    if isinstance(first, ViewChanges):
        return first.then(then)
    return list(view_after({resource.key: resource for resource in first}, then).values())


class Registry(Protocol):
    name: str

    def start(self, publish: Publish) -> None:
        """Begin watching; call publish with the whole current view first, then with the whole
        view or with ViewChanges after every change."""

    def stop(self) -> None:
        """Stop watching (publish is not called after it returns)."""


def publisher(plane, name: str) -> Publish:
    """What a registry calls: the plane applies its view; a rejected one is logged."""

    def publish(update: Update) -> None:
        problems = plane.apply_source(name, update)
        for problem in problems:
            LOG.error("%s", problem)
        if problems:
            LOG.error("%s: change rejected (%d problem%s); proxies keep its last good resources",
                      name, len(problems), "" if len(problems) == 1 else "s")

    return publish
