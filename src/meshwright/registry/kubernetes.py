"""Kubernetes objects as mesh resources: the translation the Kubernetes registry publishes
(serve/kubernetes.py watches the cluster; this module only translates, from the objects'
JSON as the API server sends them).

- A Service with a selector becomes a ServiceEntry `name.ns.svc.cluster.local` (MESH_INTERNAL,
  STATIC) whose workloadSelector is the Service's selector: it selects pods and VMs'
  WorkloadEntries alike, as Istio's Services do.
- A pod with an IP becomes a WorkloadEntry (its labels, service account, IP). An injected pod
  (label `security.istio.io/tlsMode: istio`, as the injector sets it and as Istio tells its
  sidecars' endpoints) is a proxy of the mesh; any other carries `meshwright.io/sidecar:
  "false"`: an endpoint only, reached in plaintext by auto mTLS, no proxy to compile. One
  that must not receive traffic (terminating, or not ready as its EndpointSlices or, where
  none lists it, its Ready condition say) carries `meshwright.io/endpoint: not-ready`.
- The Istio resources read from the cluster's CRDs are published as they are.

Protocols follow Istio's explicit protocol selection: a port's appProtocol, else its name's
prefix (`http`, `http-web`, `grpc`...); anything else is TCP (meshwright does not sniff).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshwright.model.resource import Resource
from meshwright.model.selection import SelectorIndex
from meshwright.registry.inventory import ENDPOINT_ANNOTATION, NO_SIDECAR, NOT_READY, SIDECAR_ANNOTATION
from meshwright.registry.published import origin, registry_resource

CLUSTER_DOMAIN = "svc.cluster.local"
NETWORKING = "networking.istio.io/v1"
# Istio's protocol names by port name prefix or appProtocol (lower case), as meshwright names them.
_PROTOCOLS = {"http": "HTTP", "http2": "HTTP2", "grpc": "GRPC", "grpc-web": "HTTP", "h2c": "HTTP2", "tcp": "TCP",
              "https": "HTTPS", "tls": "TLS", "kubernetes.io/h2c": "HTTP2"}
# Pod metadata that says nothing to the mesh and changes on every restart (Deployment's hash).
_IGNORED_LABELS = frozenset({"pod-template-hash", "controller-revision-hash"})
# An injected pod (deliver/kube_inject.py STATUS_ANNOTATION) captures with iptables: its proxy's
# listeners are the capture ones (compile/capture.py), as compile/proxy.py reads the annotation.
INJECTED_ANNOTATION, INTERCEPTION_ANNOTATION = "sidecar.istio.io/status", "sidecar.istio.io/interceptionMode"
# The label the injector gives a pod with a sidecar (deliver/kube_inject.py), Istio's.
TLS_MODE_LABEL, TLS_MODE_ISTIO = "security.istio.io/tlsMode", "istio"


@dataclass
class ClusterView:
    """What a registry knows of one cluster: objects by (namespace, name), as JSON dicts.
    istio: Istio resources by (kind, namespace, name)."""

    services: dict[tuple[str, str], dict] = field(default_factory=dict)
    pods: dict[tuple[str, str], dict] = field(default_factory=dict)
    endpoint_slices: dict[tuple[str, str], dict] = field(default_factory=dict)
    istio: dict[tuple[str, str, str], dict] = field(default_factory=dict)


def port_protocol(port: dict) -> str:
    """Istio's protocol selection: appProtocol, else the name's prefix before '-', else TCP."""
    app_protocol = (port.get("appProtocol") or "").lower()
    if app_protocol in _PROTOCOLS:
        return _PROTOCOLS[app_protocol]
    name = (port.get("name") or "").lower()
    if name == "grpc-web" or name.startswith("grpc-web-"):
        return "HTTP"
    return _PROTOCOLS.get(name.split("-", 1)[0], "TCP")


def service_port_name(port: dict) -> str:
    """A Service port's name (Kubernetes lets the only port of a Service go without one)."""
    return port.get("name") or f"port-{port['port']}"


def _meshed_service(service: dict) -> bool:
    spec = service.get("spec") or {}
    return bool(spec.get("selector")) and spec.get("type") != "ExternalName" and bool(spec.get("ports"))


def service_entry(registry: str, service: dict) -> Resource:
    metadata, spec = service["metadata"], service["spec"]
    ports = []
    for port in spec["ports"]:
        if port.get("protocol", "TCP") != "TCP":
            continue  # UDP and SCTP: Envoy's sidecar listeners are TCP
        entry = {"number": port["port"], "name": service_port_name(port), "protocol": port_protocol(port)}
        if isinstance(port.get("targetPort"), int):
            entry["targetPort"] = port["targetPort"]
        ports.append(entry)
    document = {"apiVersion": NETWORKING, "kind": "ServiceEntry",
                "metadata": {"name": metadata["name"], "namespace": metadata["namespace"]},
                "spec": {"hosts": [f"{metadata['name']}.{metadata['namespace']}.{CLUSTER_DOMAIN}"], "ports": ports,
                         "location": "MESH_INTERNAL", "resolution": "STATIC", "workloadSelector": {"labels": dict(spec["selector"])}}}
    return registry_resource(registry, document, origin(registry, "Service", metadata["namespace"], metadata["name"]))


def named_target_ports(pod: dict, services: list[dict]) -> dict[str, int]:
    """{service port name: container port} for the ports of services selecting pod whose
    targetPort names a container port (the WorkloadEntry's ports, Istio's rule)."""
    container_ports = {p["name"]: p["containerPort"] for c in pod["spec"].get("containers", []) for p in c.get("ports") or [] if p.get("name")}
    ports = {}
    for service in services:
        for port in service["spec"]["ports"]:
            target = port.get("targetPort")
            if isinstance(target, str) and target in container_ports:
                ports[service_port_name(port)] = container_ports[target]
    return ports


def endpoint_readiness(slices: list[dict]) -> dict[tuple[str, str], bool]:
    """Per pod (namespace, name) the EndpointSlices list: ready when any listing is ready
    and none terminating (Kubernetes: an unset `ready` means ready)."""
    readiness: dict[tuple[str, str], bool] = {}
    for endpoint_slice in slices:
        for endpoint in endpoint_slice.get("endpoints") or []:
            target = endpoint.get("targetRef") or {}
            if target.get("kind") != "Pod":
                continue
            key = (target.get("namespace") or endpoint_slice["metadata"]["namespace"], target["name"])
            conditions = endpoint.get("conditions") or {}
            ready = conditions.get("ready", True) is not False and not conditions.get("terminating", False)
            readiness[key] = readiness.get(key, False) or ready
    return readiness


def pod_is_ready(pod: dict, listed: bool | None) -> bool:
    """Not terminating, and ready as its EndpointSlices say (listed), else as its Ready condition says."""
    if pod["metadata"].get("deletionTimestamp"):
        return False
    if listed is not None:
        return listed
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def workload_entry(registry: str, pod: dict, ready: bool, services: list[dict]) -> Resource:
    metadata = pod["metadata"]
    labels = {key: value for key, value in (metadata.get("labels") or {}).items() if key not in _IGNORED_LABELS}
    spec = {"address": pod["status"]["podIP"], "labels": labels, "serviceAccount": pod["spec"].get("serviceAccountName") or "default"}
    ports = named_target_ports(pod, services)
    if ports:
        spec["ports"] = ports
    entry_metadata = {"name": metadata["name"], "namespace": metadata["namespace"]}
    annotations = {}
    if not ready:
        annotations[ENDPOINT_ANNOTATION] = NOT_READY
    if (metadata.get("labels") or {}).get(TLS_MODE_LABEL) != TLS_MODE_ISTIO:
        annotations[SIDECAR_ANNOTATION] = NO_SIDECAR  # no sidecar: an endpoint, not a proxy
    elif INJECTED_ANNOTATION in (metadata.get("annotations") or {}):
        annotations[INTERCEPTION_ANNOTATION] = "REDIRECT"  # its init container set up iptables capture
    if annotations:
        entry_metadata["annotations"] = annotations
    document = {"apiVersion": NETWORKING, "kind": "WorkloadEntry", "metadata": entry_metadata, "spec": spec}
    return registry_resource(registry, document, origin(registry, "Pod", metadata["namespace"], metadata["name"]))


def istio_resource(registry: str, document: dict) -> Resource:
    """An Istio resource read from the cluster, without what the API server adds."""
    metadata = document.get("metadata") or {}
    kept = {key: metadata[key] for key in ("name", "namespace", "labels", "annotations") if key in metadata}
    annotations = {key: value for key, value in (kept.get("annotations") or {}).items() if key != "kubectl.kubernetes.io/last-applied-configuration"}
    if annotations:
        kept["annotations"] = annotations
    else:
        kept.pop("annotations", None)
    clean = {"apiVersion": document.get("apiVersion"), "kind": document.get("kind"), "metadata": kept, "spec": document.get("spec")}
    return registry_resource(registry, clean, origin(registry, str(document.get("kind")), str(kept.get("namespace", "")), str(kept.get("name", ""))))


def _cached(cache: dict | None, used: set, key: tuple, obj: dict, make):
    """make() once per version of obj: a publish translates only what changed since the last
    (the registry keeps the cache; an object without a resourceVersion is never cached)."""
    version = obj["metadata"].get("resourceVersion")
    if cache is None or version is None:
        return make()
    key = (*key, version)
    used.add(key)
    if key not in cache:
        cache[key] = make()
    return cache[key]


def meshed_services(view: ClusterView) -> tuple[list[dict], SelectorIndex]:
    """The Services that become mesh services (with a selector), in a stable order, and the
    index of which select a pod."""
    services = [view.services[key] for key in sorted(view.services) if _meshed_service(view.services[key])]
    return services, SelectorIndex(services, lambda s: s["metadata"]["namespace"], lambda s: s["spec"]["selector"])


def has_workload(pod: dict) -> bool:
    """Whether a pod is a workload: it has an address and has not finished."""
    status = pod.get("status") or {}
    return bool(status.get("podIP")) and status.get("phase") not in ("Succeeded", "Failed")


def pod_workload(registry: str, key: tuple[str, str], pod: dict, selecting: SelectorIndex, listed: bool | None,
                 cache: dict | None = None, used: set | None = None) -> Resource | None:
    """A pod's WorkloadEntry (None when it is no workload); listed: its readiness as the
    EndpointSlices listing it say (endpoint_readiness), None when none does."""
    if not has_workload(pod):
        return None
    services_of_pod = selecting.selecting(key[0], pod["metadata"].get("labels") or {})
    ready = pod_is_ready(pod, listed)
    cache_key = ("Pod", *key, ready, tuple(sorted(named_target_ports(pod, services_of_pod).items())))
    return _cached(cache, set() if used is None else used, cache_key, pod, lambda: workload_entry(registry, pod, ready, services_of_pod))


def mesh_resources(registry: str, view: ClusterView, cache: dict | None = None) -> list[Resource]:
    """Everything the cluster contributes to the mesh, in a stable order. cache: resources
    made by earlier calls, by object and version; left holding only those of this call."""
    used: set = set()
    services, selecting = meshed_services(view)
    readiness = endpoint_readiness([view.endpoint_slices[key] for key in sorted(view.endpoint_slices)])
    resources = [_cached(cache, used, ("Service", s["metadata"]["namespace"], s["metadata"]["name"]), s, lambda s=s: service_entry(registry, s))
                 for s in services]
    for key in sorted(view.pods):
        workload = pod_workload(registry, key, view.pods[key], selecting, readiness.get(key), cache, used)
        if workload is not None:
            resources.append(workload)
    resources += [_cached(cache, used, key, view.istio[key], lambda key=key: istio_resource(registry, view.istio[key])) for key in sorted(view.istio)]
    if cache is not None:
        for stale in cache.keys() - used:
            del cache[stale]
    return resources
