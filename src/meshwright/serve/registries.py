"""Registries: sources of mesh resources besides the mesh files (Kubernetes, Marathon).

The contract between a registry and the control plane:
- A registry has a `name` ("kubernetes/cluster-1", "marathon/prod"), `start(publish)` and
  `stop()`. Whenever its view changes it calls publish(resources) with the FULL list of the
  mesh resources it contributes now, in the shape the YAML loader makes: typically a ServiceEntry per service and a WorkloadEntry per pod or
  task; Kubernetes also the Istio resources it reads from the cluster.
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
from typing import Callable, Protocol

from meshwright.model.resource import Resource

LOG = logging.getLogger("meshwright.serve")

# The source name of the watched mesh files among the plane's sources.
FILES = "files"

Publish = Callable[[list[Resource]], None]


class Registry(Protocol):
    name: str

    def start(self, publish: Publish) -> None:
        """Begin watching; call publish with the whole current view after every change."""

    def stop(self) -> None:
        """Stop watching (publish is not called after it returns)."""


def publisher(plane, name: str) -> Publish:
    """What a registry calls: the plane applies its view; a rejected one is logged."""

    def publish(resources: list[Resource]) -> None:
        problems = plane.apply_source(name, resources)
        for problem in problems:
            LOG.error("%s", problem)
        if problems:
            LOG.error("%s: change rejected (%d problem%s); proxies keep its last good resources",
                      name, len(problems), "" if len(problems) == 1 else "s")

    return publish
