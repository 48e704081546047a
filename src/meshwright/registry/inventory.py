"""Services from ServiceEntry and WorkloadEntry resources: how VMs join the mesh (Istio's VM model)."""

from __future__ import annotations

from meshwright.model.resource import Resource
from meshwright.model.selection import LabelIndex
from meshwright.registry.model import Endpoint, Registry, Service, ServicePort

# A workload that exists but must not receive traffic (a pod not ready or terminating, a task
# failing its health checks): its proxy still gets its config, no service lists it as an endpoint.
ENDPOINT_ANNOTATION, NOT_READY = "meshwright.io/endpoint", "not-ready"


def is_ready(workload: Resource) -> bool:
    return workload.annotations.get(ENDPOINT_ANNOTATION) != NOT_READY


def endpoint_from_spec(spec: dict, workload: str = "") -> Endpoint:
    return Endpoint(
        address=spec["address"],
        ports=tuple(sorted((spec.get("ports") or {}).items())),
        labels=tuple(sorted((spec.get("labels") or {}).items())),
        locality=spec.get("locality", ""),
        weight=spec.get("weight", 1),
        service_account=spec.get("serviceAccount", ""),
        workload=workload,
    )


def services_from_entries(service_entries: list[Resource], workloads: LabelIndex[Resource]) -> Registry:
    """One Service per ServiceEntry host; endpoints inline or selected among WorkloadEntries
    (workloads: indexed by label, in (namespace, name) order, the order of the endpoints)."""
    registry = Registry()
    for entry in sorted(service_entries, key=lambda r: (r.namespace, r.name)):
        spec = entry.spec
        ports = tuple(
            ServicePort(p["number"], p["name"], p.get("protocol", "TCP"), p.get("targetPort"))
            for p in spec["ports"]
        )
        if "workloadSelector" in spec:
            selector = spec["workloadSelector"]["labels"]
            # Istio's rule: a selector matches WorkloadEntries of its ServiceEntry's namespace.
            endpoints = tuple(endpoint_from_spec(w.spec, f"{w.name}.{w.namespace}") for w in workloads.select(entry.namespace, selector) if is_ready(w))
        else:
            endpoints = tuple(endpoint_from_spec(e) for e in spec.get("endpoints", []))
        resolution = spec.get("resolution", "NONE")
        for host in spec["hosts"]:
            registry.add(
                Service(
                    hostname=host,
                    namespace=entry.namespace,
                    ports=ports,
                    resolution=resolution,
                    location=spec.get("location", "MESH_EXTERNAL"),
                    endpoints=endpoints,
                    source=entry.ref,
                )
            )
    return registry
