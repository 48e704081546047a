"""Marathon apps and pods as mesh resources: a ServiceEntry per service, a WorkloadEntry per
task (app) or instance (pod). Pure translation of Marathon's JSON (`GET /v2/apps?embed=apps.tasks`,
`GET /v2/pods/::status`); serve/marathon.py fetches it and follows the event stream.

Names and identity come from labels, with defaults from the run spec's id: `/shop/payment`
is service `payment` in namespace `shop` with service account `payment`, host
`payment.shop.svc.cluster.local`; `/web` is in namespace `default`; deeper groups join
(`/a/b/web`: namespace `a-b`). Labels `meshwright.io/service`, `meshwright.io/namespace`,
`meshwright.io/service-account` override them; `meshwright.io/mesh: "false"` keeps an app out.

Ports follow Marathon's networking (its NetworkInfo.computePortAssignments): in host and
container/bridge mode a task is reached at `host:ports[i]`; in container mode a mapping with a
hostPort takes the next host port, the others are reached at the task's container IP and
containerPort. The service port is the port's `meshwright.io/port` label, else Marathon's
service port, else the container port. A pod with the injected sidecar (container
`meshwright-sidecar`, endpoint `mesh-inbound`) is reached through that endpoint for every port.

A task that must not receive traffic (not running, health checks not passing) keeps its
WorkloadEntry, annotated `meshwright.io/endpoint: not-ready`: it stays a proxy but is no
service's endpoint.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from meshwright.model.resource import Resource
from meshwright.names import LABEL_HELP, is_label, is_label_key, is_label_value
from meshwright.registry.inventory import ENDPOINT_ANNOTATION, NOT_READY
from meshwright.registry.published import registry_resource

LABEL_SERVICE = "meshwright.io/service"
LABEL_NAMESPACE = "meshwright.io/namespace"
LABEL_SERVICE_ACCOUNT = "meshwright.io/service-account"
LABEL_MESH = "meshwright.io/mesh"  # "false": the app is not in the mesh (nor injected)
LABEL_PORT = "meshwright.io/port"  # on a port: its number in the mesh
LABEL_PROTOCOL = "meshwright.io/protocol"  # on a port: HTTP, HTTP2, GRPC, TCP, HTTPS, TLS
SIDECAR_CONTAINER = "meshwright-sidecar"
SIDECAR_INBOUND = "mesh-inbound"
SIDECAR_HEALTH = "mesh-health"
SIDECAR_INBOUND_PORT, SIDECAR_HEALTH_PORT = 15006, 15021  # the sidecar's container ports (deliver/marathon_inject.py)
# On an injected instance's WorkloadEntry: its instance's UUID, which its own Sidecar selects.
LABEL_INSTANCE = "meshwright.io/marathon-instance"
PORT_OFFSET_ANNOTATION = "meshwright.io/port-offset"  # compile/proxy.py reads it (registry sits below compile)
DEFAULT_NAMESPACE = "default"
DEFAULT_DOMAIN = "svc.cluster.local"
API_VERSION = "networking.istio.io/v1"
PROTOCOLS = ("HTTP", "HTTP2", "GRPC", "TCP", "HTTPS", "TLS")
TERMINAL_TASK_STATES = frozenset(("TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_LOST", "TASK_ERROR", "TASK_DROPPED",
                                  "TASK_GONE", "TASK_GONE_BY_OPERATOR"))
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True)
class Identity:
    service: str
    namespace: str
    service_account: str
    host: str


@dataclass(frozen=True)
class MeshPort:
    name: str
    number: int  # the service's port in the mesh
    protocol: str
    container_port: int  # the port the process listens on (0: the host port's number)
    host_port: bool  # whether Marathon allocates a host port for it (an entry of task.ports)


class Skipped(Exception):
    """A run spec (or a task) the registry cannot translate; the message says why."""


def run_spec_identity(run_spec_id: str, labels: dict, domain: str = DEFAULT_DOMAIN) -> Identity:
    """Service, namespace, service account and host of an app or pod, by labels or its id."""
    parts = [part for part in run_spec_id.strip("/").split("/") if part]
    default_service = (parts[-1] if parts else "").replace(".", "-")
    default_namespace = "-".join(parts[:-1]).replace(".", "-") or DEFAULT_NAMESPACE
    service = _label(labels, LABEL_SERVICE, default_service)
    namespace = _label(labels, LABEL_NAMESPACE, default_namespace)
    account = _label(labels, LABEL_SERVICE_ACCOUNT, service)
    return Identity(service, namespace, account, f"{service}.{namespace}.{domain}")


def _label(labels: dict, key: str, default: str) -> str:
    value = labels.get(key, default)
    if not is_label(value):
        where = f"label {key}" if key in labels else f"{key} (from the id)"
        raise Skipped(f"{where}: {value!r} is not {LABEL_HELP}")
    return value


def port_protocol(name: str, labels: dict) -> str:
    """The port's protocol: its meshwright.io/protocol label, else Istio's naming convention
    (`http`, `http-web`, `grpc-api`...), else TCP."""
    if LABEL_PROTOCOL in labels:
        protocol = str(labels[LABEL_PROTOCOL]).upper()
        if protocol not in PROTOCOLS:
            raise Skipped(f"port {name}: label {LABEL_PROTOCOL}: {labels[LABEL_PROTOCOL]!r} is not one of {', '.join(PROTOCOLS)}")
        return protocol
    prefix = name.split("-", 1)[0].upper()
    return prefix if prefix in PROTOCOLS else "TCP"


def network_mode(networks: list | None) -> str:
    """host, container/bridge or container (Marathon's rule: the networks' mode; none: host)."""
    return (networks or [{"mode": "host"}])[-1].get("mode", "container")


def _mesh_port(index: int, declared: dict, service_port: int, container_port: int, host_port: bool) -> MeshPort:
    name = declared.get("name") or f"port{index}"
    labels = declared.get("labels") or {}
    number = labels.get(LABEL_PORT) or service_port or container_port
    try:
        number = int(number)
    except (TypeError, ValueError):
        raise Skipped(f"port {name}: label {LABEL_PORT}: {number!r} is not a port number") from None
    if not 0 < number < 65536:
        raise Skipped(f"port {name}: no port number for the mesh (no service port, no container port: give the port a {LABEL_PORT} label)")
    return MeshPort(name, number, port_protocol(name, labels), container_port or 0, host_port)


def app_ports(app: dict) -> list[MeshPort]:
    """An app's ports in declaration order, the order of its tasks' `ports`."""
    mode = network_mode(app.get("networks"))
    if mode == "host":
        return [_mesh_port(i, p, p.get("port", 0), 0, True) for i, p in enumerate(app.get("portDefinitions") or [])]
    mappings = (app.get("container") or {}).get("portMappings") or []
    return [_mesh_port(i, m, m.get("servicePort", 0), m.get("containerPort", 0), mode == "container/bridge" or "hostPort" in m)
            for i, m in enumerate(mappings)]


def pod_ports(pod: dict) -> list[MeshPort]:
    """A pod's ports: its containers' endpoints (pods have no service ports), but the sidecar's."""
    mode = network_mode(pod.get("networks"))
    endpoints = [e for c in pod.get("containers") or [] if c.get("name") != SIDECAR_CONTAINER for e in c.get("endpoints") or []]
    return [_mesh_port(i, e, 0, e.get("containerPort", 0), mode != "container" or "hostPort" in e) for i, e in enumerate(endpoints)]


def task_address(mode: str, ports: list[MeshPort], host: str, host_ports: list, ip_addresses: list) -> tuple[str, dict[str, int]]:
    """Where a task serves each port: (address, {port name: port})."""
    container_ip = next((a.get("ipAddress") or a.get("address") for a in ip_addresses or []), None)
    allocated = iter(host_ports or [])
    by_host = {}
    for port in ports:
        if port.host_port:
            by_host[port.name] = next(allocated, None)
    if mode == "container" and container_ip:
        return container_ip, {p.name: p.container_port or by_host.get(p.name) for p in ports}
    if any(by_host.get(p.name) is None for p in ports):
        raise Skipped("not addressable yet (no container IP, host ports not allocated)")
    return host, by_host


def app_task_ready(app: dict, task: dict) -> bool:
    """Running, and its health checks (if any) all pass (a check not run yet does not)."""
    if task.get("state") != "TASK_RUNNING":
        return False
    if not app.get("healthChecks"):
        return True
    results = task.get("healthCheckResults") or []
    return bool(results) and all(result.get("alive") for result in results)


def pod_instance_ready(instance: dict) -> bool:
    """STABLE (Marathon: started and, with health checks, healthy) with a container running."""
    containers = instance.get("containers") or []
    return instance.get("status") == "STABLE" and any(c.get("status") == "TASK_RUNNING" for c in containers) \
        and all(e.get("healthy", True) for c in containers for e in c.get("endpoints") or [])


def workload_name(service: str, task_id: str) -> str:
    """A DNS-1123 name unique per task: the service and the task's UUID."""
    found = _UUID.findall(task_id)
    unique = found[-1] if found else hashlib.sha256(task_id.encode()).hexdigest()[:16]
    return f"{service[:62 - len(unique)].rstrip('-')}-{unique}"


def workload_labels(identity: Identity, labels: dict) -> dict[str, str]:
    """The run spec's labels that are valid mesh labels (for subsets and policies), and app=<service>."""
    kept = {k: str(v) for k, v in labels.items() if is_label_key(k) and is_label_value(str(v)) and not k.startswith("meshwright.io/")}
    return {**kept, "app": identity.service}


@dataclass(frozen=True)
class RunSpecResources:
    """What one app or pod contributes: its ServiceEntry (None: skipped or without ports), a
    WorkloadEntry per task or instance, and the problems of what was skipped."""

    run_spec_id: str
    service: Resource | None = None
    workloads: tuple[Resource, ...] = ()
    problems: tuple[str, ...] = ()


class Translation:
    """Translates one app or pod of a registry; problems collect what was skipped and why."""

    def __init__(self, registry: str, domain: str = DEFAULT_DOMAIN):
        self.registry, self.domain = registry, domain
        self.service: Resource | None = None
        self.workloads: list[Resource] = []
        self.problems: list[str] = []

    def resource(self, kind: str, namespace: str, name: str, spec: dict, annotations: dict | None = None) -> Resource:
        metadata = {"name": name, "namespace": namespace}
        if annotations:
            metadata["annotations"] = annotations
        return registry_resource(self.registry, {"apiVersion": API_VERSION, "kind": kind, "metadata": metadata, "spec": spec})

    def add_service(self, identity: Identity, ports: list[MeshPort]) -> None:
        spec = {"hosts": [identity.host], "location": "MESH_INTERNAL", "resolution": "STATIC",
                "ports": [{"number": p.number, "name": p.name, "protocol": p.protocol, **({"targetPort": p.container_port} if p.container_port else {})}
                          for p in ports],
                "workloadSelector": {"labels": {"app": identity.service}}}
        self.service = self.resource("ServiceEntry", identity.namespace, identity.service, spec)

    def add_workload(self, identity: Identity, task_id: str, address: str, ports: dict, labels: dict, ready: bool,
                     extra_labels: dict | None = None, annotations: dict | None = None) -> None:
        spec = {"address": address, "ports": dict(sorted(ports.items())), "labels": {**workload_labels(identity, labels), **(extra_labels or {})},
                "serviceAccount": identity.service_account}
        annotations = {**(annotations or {}), **({} if ready else {ENDPOINT_ANNOTATION: NOT_READY})} or None
        self.workloads.append(self.resource("WorkloadEntry", identity.namespace, workload_name(identity.service, task_id), spec, annotations))

    def done(self, run_spec_id: str) -> RunSpecResources:
        return RunSpecResources(run_spec_id, self.service, tuple(sorted(self.workloads, key=lambda r: (r.kind, r.name))), tuple(self.problems))

    def add_app(self, app: dict) -> None:
        labels = app.get("labels") or {}
        if str(labels.get(LABEL_MESH, "")).lower() == "false":
            return
        app_id = app.get("id", "?")
        try:
            identity = run_spec_identity(app_id, labels, self.domain)
            ports = app_ports(app)
        except Skipped as skipped:
            self.problems.append(f"{self.registry}: app {app_id}: {skipped}: skipped")
            return
        if not ports:
            return
        self.add_service(identity, ports)
        mode = network_mode(app.get("networks"))
        for task in app.get("tasks") or []:
            if task.get("state") in TERMINAL_TASK_STATES:
                continue
            try:
                address, served = task_address(mode, ports, task.get("host", ""), task.get("ports"), task.get("ipAddresses"))
            except Skipped as skipped:
                self.problems.append(f"{self.registry}: task {task.get('id')}: {skipped}")
                continue
            self.add_workload(identity, task.get("id", ""), address, served, labels, app_task_ready(app, task))

    def add_pod(self, status: dict) -> None:
        pod = status.get("spec") or {}
        labels = pod.get("labels") or {}
        if str(labels.get(LABEL_MESH, "")).lower() == "false":
            return
        pod_id = pod.get("id") or status.get("id", "?")
        try:
            identity = run_spec_identity(pod_id, labels, self.domain)
            ports = pod_ports(pod)
        except Skipped as skipped:
            self.problems.append(f"{self.registry}: pod {pod_id}: {skipped}: skipped")
            return
        if not ports:
            return
        injected = sidecar_inbound(pod) is not None
        if injected and len(ports) > 1:
            self.problems.append(f"{self.registry}: pod {pod_id}: an injected pod serves one port through its sidecar "
                                 f"(it declares {', '.join(p.name for p in ports)}): skipped")
            return
        self.add_service(identity, ports)
        for instance in status.get("instances") or []:
            if instance.get("status") == "TERMINAL":
                continue
            try:
                if injected:
                    self.add_injected_instance(identity, pod, ports[0], instance, labels)
                    continue
                address, served = self.instance_address(pod, ports, instance)
            except Skipped as skipped:
                self.problems.append(f"{self.registry}: instance {instance.get('id')}: {skipped}")
                continue
            self.add_workload(identity, instance.get("id", ""), address, served, labels, pod_instance_ready(instance))

    def add_injected_instance(self, identity: Identity, pod: dict, port: MeshPort, instance: dict, labels: dict) -> None:
        """An instance of an injected pod: its WorkloadEntry, reached on the sidecar's inbound
        endpoint, and its own Sidecar resource, whose ingress listens there and hands traffic to
        the app on loopback (the pod's containers share a network namespace). Per instance,
        because in host networking each instance's ports are the host ports Marathon allocated
        it; the sidecar's well-known ports (admin, outbound, stats) follow its health port as a
        port offset, so instances on one agent do not clash."""
        mode = network_mode(pod.get("networks"))
        address, served = self.instance_address(pod, [port], instance)
        offset, app_port = 0, port.container_port
        if mode == "host":
            allocated = {e.get("name"): e.get("allocatedHostPort") for c in instance.get("containers") or [] for e in c.get("endpoints") or []}
            app_port = allocated.get(port.name) or port.container_port
            health = allocated.get(SIDECAR_HEALTH)
            offset = health - SIDECAR_HEALTH_PORT if health else 0
        if not app_port:
            raise Skipped(f"port {port.name}: no port the app listens on (give the endpoint a containerPort)")
        found = _UUID.findall(instance.get("id", ""))
        instance_label = found[-1] if found else hashlib.sha256(instance.get("id", "").encode()).hexdigest()[:16]
        annotations = {PORT_OFFSET_ANNOTATION: str(offset)} if offset else None
        self.add_workload(identity, instance.get("id", ""), address, served, labels, pod_instance_ready(instance),
                          {LABEL_INSTANCE: instance_label}, annotations)
        listen = served[port.name] if mode == "host" else SIDECAR_INBOUND_PORT  # else the container's own port
        spec = {"workloadSelector": {"labels": {LABEL_INSTANCE: instance_label}},
                "ingress": [{"port": {"number": listen, "protocol": port.protocol, "name": port.name},
                             "defaultEndpoint": f"127.0.0.1:{app_port}"}]}
        self.workloads.append(self.resource("Sidecar", identity.namespace, workload_name(identity.service, instance.get("id", "")), spec))

    def instance_address(self, pod: dict, ports: list[MeshPort], instance: dict) -> tuple[str, dict[str, int]]:
        mode = network_mode(pod.get("networks"))
        containers = {c.get("name"): c for c in instance.get("containers") or []}
        sidecar = next((e for c in pod.get("containers") or [] if c.get("name") == SIDECAR_CONTAINER
                        for e in c.get("endpoints") or [] if e.get("name") == SIDECAR_INBOUND), None)
        addresses = [{"ipAddress": a} for n in instance.get("networks") or [] for a in n.get("addresses") or []]
        if sidecar is not None:  # every port through the sidecar's inbound listener
            inbound = _mesh_port(0, sidecar, 0, sidecar.get("containerPort", 0), mode != "container" or "hostPort" in sidecar)
            allocated = _allocated(containers.get(SIDECAR_CONTAINER), [sidecar])
            address, served = task_address(mode, [inbound], instance.get("agentHostname", ""), allocated, addresses)
            return address, {p.name: served[inbound.name] for p in ports}
        allocated = [port for c in pod.get("containers") or [] if c.get("name") != SIDECAR_CONTAINER
                     for port in _allocated(containers.get(c.get("name")), c.get("endpoints") or [])]
        return task_address(mode, ports, instance.get("agentHostname", ""), allocated, addresses)


def app_resources(registry: str, app: dict, domain: str = DEFAULT_DOMAIN) -> RunSpecResources:
    """An app (with its embedded tasks) as mesh resources."""
    translation = Translation(registry, domain)
    translation.add_app(app)
    return translation.done(app.get("id", "?"))


def pod_resources(registry: str, status: dict, domain: str = DEFAULT_DOMAIN) -> RunSpecResources:
    """A pod (its ::status, with the spec and instances) as mesh resources."""
    translation = Translation(registry, domain)
    translation.add_pod(status)
    return translation.done((status.get("spec") or {}).get("id") or status.get("id", "?"))


def merged(registry: str, parts: list[RunSpecResources]) -> tuple[list[Resource], list[str]]:
    """The registry's resources from every app's and pod's: one ServiceEntry per (namespace,
    service) (apps sharing one, blue and green, must agree on its ports: the first by id wins,
    the other is skipped), then every WorkloadEntry, in a stable order."""
    services, included, problems = merged_services(registry, parts)
    by_id = {part.run_spec_id: part for part in parts}
    workloads = [workload for run_spec_id in included for workload in by_id[run_spec_id].workloads]
    return [services[key] for key in sorted(services)] + sorted(workloads, key=lambda r: (r.namespace, r.name, r.kind)), problems


def merged_services(registry: str, parts) -> tuple[dict[tuple[str, str], Resource], list[str], list[str]]:
    """merged's ServiceEntries by (namespace, service), the run specs whose WorkloadEntries
    are in (those with a service whose ports agree), and the problems: what a registry that
    publishes only changes works out again for every change (a service is one per app)."""
    services: dict[tuple[str, str], Resource] = {}
    included: list[str] = []
    problems: list[str] = []
    for part in sorted(parts, key=lambda p: p.run_spec_id):
        problems += part.problems
        if part.service is None:
            continue
        key = (part.service.namespace, part.service.name)
        existing = services.setdefault(key, part.service)
        if existing is not part.service and existing.spec["ports"] != part.service.spec["ports"]:
            problems.append(f"{registry}: {part.run_spec_id}: ports differ from another app of service {key[0]}/{key[1]}: skipped")
            continue
        included.append(part.run_spec_id)
    return services, included, problems


def sidecar_inbound(pod: dict) -> dict | None:
    """The injected sidecar's inbound endpoint in a pod's spec; None when the pod has no sidecar."""
    return next((e for c in pod.get("containers") or [] if c.get("name") == SIDECAR_CONTAINER
                 for e in c.get("endpoints") or [] if e.get("name") == SIDECAR_INBOUND), None)


def _allocated(container_status: dict | None, endpoints: list[dict]) -> list[int]:
    """The host ports allocated to endpoints (in their order) by the container's status."""
    by_name = {e.get("name"): e.get("allocatedHostPort") for e in (container_status or {}).get("endpoints") or []}
    return [by_name.get(e.get("name")) for e in endpoints if by_name.get(e.get("name")) is not None]


def mesh_resources(registry: str, apps: list[dict], pod_statuses: list[dict], domain: str = DEFAULT_DOMAIN) -> tuple[list[Resource], list[str]]:
    """Every ServiceEntry and WorkloadEntry of Marathon's apps (with embedded tasks) and pod
    statuses, in a stable order; the problems of what was skipped."""
    parts = [app_resources(registry, app, domain) for app in apps] + [pod_resources(registry, status, domain) for status in pod_statuses]
    return merged(registry, parts)
