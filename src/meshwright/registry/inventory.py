"""Services from ServiceEntry and WorkloadEntry resources: how VMs join the mesh (Istio's VM model)."""

from __future__ import annotations

from meshwright.model.resource import Resource
from meshwright.model.selection import LabelIndex
from meshwright.registry.model import Endpoint, Registry, Service, ServicePort

# A workload that exists but must not receive traffic (a pod not ready or terminating, a task
# failing its health checks): its proxy still gets its config, no service lists it as an endpoint.
ENDPOINT_ANNOTATION, NOT_READY = "meshwright.io/endpoint", "not-ready"
# A workload with no proxy beside it (a pod without an injected sidecar): an endpoint of the
# services selecting it and nothing else, as Istio's uninjected pods: no proxy is made for it
# and auto mTLS reaches it in plaintext (its endpoint is not tagged tlsMode=istio).
SIDECAR_ANNOTATION, NO_SIDECAR = "meshwright.io/sidecar", "false"


def is_ready(workload: Resource) -> bool:
    return workload.annotations.get(ENDPOINT_ANNOTATION) != NOT_READY


def has_sidecar(workload: Resource) -> bool:
    return workload.annotations.get(SIDECAR_ANNOTATION) != NO_SIDECAR


def endpoint_from_spec(spec: dict, workload: str = "", ready: bool = True) -> Endpoint:
    return Endpoint(
        address=spec["address"],
        ports=tuple(sorted((spec.get("ports") or {}).items())),
        labels=tuple(sorted((spec.get("labels") or {}).items())),
        locality=spec.get("locality", ""),
        weight=spec.get("weight", 1),
        service_account=spec.get("serviceAccount", ""),
        workload=workload,
        ready=ready,
    )


def workload_endpoint(workload: Resource) -> Endpoint:
    """The endpoint a WorkloadEntry gives the services that select it; one without a sidecar
    names no proxy (so nothing treats it as a proxy's, auto mTLS included)."""
    proxy = f"{workload.name}.{workload.namespace}" if has_sidecar(workload) else ""
    return endpoint_from_spec(workload.spec, proxy, is_ready(workload))


def selected_endpoints(entry: Resource, workloads: LabelIndex[Resource]) -> tuple[Endpoint, ...]:
    """A ServiceEntry's endpoints: the WorkloadEntries its workloadSelector picks in its
    namespace (Istio's rule), in (namespace, name) order."""
    return tuple(workload_endpoint(w) for w in workloads.select(entry.namespace, entry.spec["workloadSelector"]["labels"]))


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
            endpoints = selected_endpoints(entry, workloads)
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
