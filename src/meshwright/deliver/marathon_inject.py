"""Sidecar injection for Marathon: an app becomes a pod, or a pod gains a container, that runs
the mesh's sidecar (the agent for its certificate, Envoy for its config from the control plane).

Pods, not apps: only a pod's containers share one network namespace and live and die together,
which a sidecar needs. The app's fields map to the pod's (cmd/args -> exec, cpus/mem/disk ->
resources, env -> environment, portDefinitions/portMappings -> endpoints, health checks ->
the container's healthCheck, constraints/backoff/upgrade -> scheduling); a field a pod has no
place for is an error naming it, never dropped.

Traffic passes the sidecar: its endpoint `mesh-inbound` (container port 15006, a host port
Marathon allocates) is the only one the registry (registry/marathon.py) publishes; the app's
endpoints keep their names and container ports, labelled with the mesh port number they had
(`meshwright.io/port`), and lose their host ports in container and bridge networking, so
nothing reaches the app but through the sidecar (in host networking there is no namespace to
hide them in: the app should listen on loopback). The app's health check stays on the app's
endpoint (the executor runs it inside the pod); the sidecar's own, on its readiness endpoint,
keeps an instance out of service until Envoy has its config.

Idempotent: the sidecar container is replaced, not added twice, and every rewrite is a fixed
point, so injecting an injected definition changes nothing. `meshwright.io/inject: "false"` or
`meshwright.io/mesh: "false"` leave a definition alone.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from meshwright import __version__
from meshwright.names import is_label
from meshwright.registry.marathon import (LABEL_MESH, LABEL_PORT, SIDECAR_CONTAINER, SIDECAR_HEALTH, SIDECAR_INBOUND, Identity, Skipped, app_ports,
                                          network_mode, run_spec_identity)

LABEL_INJECT = "meshwright.io/inject"
LABEL_INJECTED = "meshwright.io/injected"  # the sidecar version injected
INBOUND_PORT, HEALTH_PORT = 15006, 15021
UUID_PATTERN = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# App fields a pod takes elsewhere (handled below) or that Marathon adds to its answers.
_READ_ONLY = {"version", "versionInfo", "tasks", "tasksStaged", "tasksRunning", "tasksHealthy", "tasksUnhealthy", "deployments",
              "lastTaskFailure", "taskStats", "readinessCheckResults"}
_MAPPED = {"id", "cmd", "args", "instances", "cpus", "mem", "disk", "gpus", "env", "labels", "container", "networks", "portDefinitions",
           "ports", "requirePorts", "healthChecks", "constraints", "acceptedResourceRoles", "upgradeStrategy", "backoffSeconds",
           "backoffFactor", "maxLaunchDelaySeconds", "fetch", "uris", "user", "killSelection", "unreachableStrategy", "executor",
           "secrets", "role", "ipAddress"}


class InjectError(Exception):
    """A definition that cannot be injected: the message names the field (a JSON path) and why."""


@dataclass(frozen=True)
class SidecarSettings:
    xds: str  # HOST:PORT of `meshwright serve` (ADS)
    csr: str  # HOST:PORT of its CSR service
    image: str | None = None  # a Docker image with meshwright and Envoy; None: both installed on the agents
    version: str = __version__
    cpus: float = 0.1
    mem: int = 128
    ca: str = "/etc/meshwright/root-cert.pem"  # the mesh's roots on the agents (to trust the control plane)
    trust_domain: str = "cluster.local"


def opted_out(definition: dict) -> bool:
    labels = definition.get("labels") or {}
    return str(labels.get(LABEL_INJECT, "")).lower() == "false" or str(labels.get(LABEL_MESH, "")).lower() == "false"


def inject(definition, settings: SidecarSettings) -> dict:
    """The definition with the sidecar (a pod); unchanged when it opts out."""
    if not isinstance(definition, dict) or not isinstance(definition.get("id"), str):
        raise InjectError("/: expected a Marathon app or pod definition (a JSON object with an \"id\")")
    if opted_out(definition):
        return copy.deepcopy(definition)
    pod = pod_with_own_containers(definition) if "containers" in definition else app_to_pod(definition)
    try:
        identity = run_spec_identity(pod["id"], pod.get("labels") or {})
    except Skipped as skipped:
        raise InjectError(f"{'/id' if '(from the id)' in str(skipped) else '/labels'}: {skipped}") from None
    pod["containers"].append(sidecar_container(identity, settings, network_mode(pod.get("networks"))))
    pod["labels"] = {**(pod.get("labels") or {}), LABEL_INJECTED: settings.version}
    return pod


def pod_with_own_containers(pod: dict) -> dict:
    """A pod's definition without a sidecar injected before (it is made again)."""
    pod = copy.deepcopy(pod)
    if not isinstance(pod["containers"], list) or not pod["containers"]:
        raise InjectError("/containers: a pod needs at least one container")
    pod["containers"] = [c for c in pod["containers"] if not (isinstance(c, dict) and c.get("name") == SIDECAR_CONTAINER)]
    mode = network_mode(pod.get("networks"))
    for index, container in enumerate(pod["containers"]):
        for endpoint in container.get("endpoints") or []:
            if endpoint.get("name") in (SIDECAR_INBOUND, SIDECAR_HEALTH):
                raise InjectError(f"/containers({index})/endpoints: the name {endpoint['name']} is the sidecar's")
            if mode != "host":
                endpoint.pop("hostPort", None)
    return pod


def app_to_pod(app: dict) -> dict:
    """The pod that runs what the app runs (Marathon's pod fields, docs/pods.md)."""
    unknown = sorted(set(app) - _MAPPED - _READ_ONLY)
    if unknown:
        raise InjectError(f"/{unknown[0]}: {unknown[0]} has no place in a pod, so {app['id']} cannot become one "
                          f"(remove it, or label the app {LABEL_INJECT}: \"false\")")
    if app.get("cmd") and app.get("args"):
        raise InjectError("/args: an app runs cmd or args, not both (Marathon refuses it too)")
    if app.get("executor"):
        raise InjectError(f"/executor: a custom executor cannot run a pod ({app['executor']!r})")
    normalised = _networking_1_5(app)
    mode = network_mode(normalised["networks"])
    container = {"name": _container_name(app["id"]), "resources": _resources(app), "endpoints": _endpoints(normalised, mode)}
    if app.get("cmd") or app.get("args"):
        container["exec"] = {"command": {"shell": app["cmd"]} if app.get("cmd") else {"argv": list(app["args"])}}
    docker = (app.get("container") or {}).get("docker") or {}
    if docker.get("image"):
        container["image"] = {"kind": "DOCKER", "id": docker["image"], "forcePull": bool(docker.get("forcePullImage", False))}
    artifacts = [{"uri": f["uri"], **{k: f[k] for k in ("executable", "extract", "cache", "destPath") if k in f}}
                 for f in app.get("fetch") or []] + [{"uri": uri} for uri in app.get("uris") or []]
    if artifacts:
        container["artifacts"] = artifacts
    if app.get("healthChecks"):
        container["healthCheck"] = _health_check(app["healthChecks"], container["endpoints"])
    volumes, mounts = _volumes((app.get("container") or {}).get("volumes") or [])
    if mounts:
        container["volumeMounts"] = mounts
    pod = {"id": app["id"], "labels": dict(app.get("labels") or {}), "containers": [container], "networks": normalised["networks"],
           "scaling": {"kind": "fixed", "instances": app.get("instances", 1)}, "scheduling": _scheduling(app)}
    if volumes:
        pod["volumes"] = volumes
    for source, target in (("env", "environment"), ("secrets", "secrets"), ("user", "user"), ("role", "role")):
        if app.get(source):
            pod[target] = copy.deepcopy(app[source])
    return pod


def _container_name(app_id: str) -> str:
    name = app_id.strip("/").split("/")[-1].replace(".", "-")
    return name if is_label(name) and name != SIDECAR_CONTAINER else "app"


def _volumes(volumes: list[dict]) -> tuple[list[dict], list[dict]]:
    """Host-path volumes as the pod's volumes and the container's mounts; others are refused."""
    pod_volumes, mounts = [], []
    for index, volume in enumerate(volumes):
        if set(volume) - {"containerPath", "hostPath", "mode"} or "hostPath" not in volume:
            raise InjectError(f"/container/volumes({index}): only host-path volumes move into a pod with marathon-inject (write this pod by hand)")
        name = f"volume{index}"
        pod_volumes.append({"name": name, "host": volume["hostPath"]})
        mounts.append({"name": name, "mountPath": volume["containerPath"], "readOnly": volume.get("mode", "RW") == "RO"})
    return pod_volumes, mounts


def _resources(app: dict) -> dict:
    return {"cpus": app.get("cpus", 1), "mem": app.get("mem", 128), "disk": app.get("disk", 0), "gpus": app.get("gpus", 0)}


def _networking_1_5(app: dict) -> dict:
    """The app's networks and ports in Marathon 1.5's fields, whatever 1.4 fields it uses."""
    app = copy.deepcopy(app)
    container = app.get("container") or {}
    docker = container.get("docker") or {}
    if "networks" not in app:
        # marathon-lb's reading of 1.4 apps: docker.network decides, else ipAddress, else host.
        name = (app.get("ipAddress") or {}).get("networkName")
        if docker.get("network") == "BRIDGE":
            app["networks"] = [{"mode": "container/bridge"}]
        elif docker.get("network") == "USER" or "ipAddress" in app:
            app["networks"] = [{"mode": "container", **({"name": name} if name else {})}]
        else:
            app["networks"] = [{"mode": "host"}]
    if "portMappings" in docker and "portMappings" not in container:
        container["portMappings"] = docker["portMappings"]
    if network_mode(app["networks"]) == "host" and "portDefinitions" not in app:
        app["portDefinitions"] = [{"port": port, "protocol": "tcp"} for port in app.get("ports") or []]
    app["container"] = container
    return app


def _endpoints(app: dict, mode: str) -> list[dict]:
    """The app's ports as the pod container's endpoints: names kept, the mesh port as a label,
    no host port outside host networking (only the sidecar is reached from outside)."""
    try:
        ports = app_ports(app)
    except Skipped as skipped:
        raise InjectError(f"/portDefinitions: {skipped}") from None
    declared = app.get("portDefinitions") if mode == "host" else (app.get("container") or {}).get("portMappings") or []
    endpoints = []
    for port, original in zip(ports, declared or []):
        endpoint = {"name": port.name, "containerPort": original.get("containerPort", original.get("port", 0)),
                    "protocol": [original.get("protocol", "tcp")], "labels": {**(original.get("labels") or {}), LABEL_PORT: str(port.number)}}
        if mode == "host":
            endpoint["hostPort"] = original["port"] if app.get("requirePorts") else 0
        endpoints.append(endpoint)
    return endpoints


def _health_check(checks: list[dict], endpoints: list[dict]) -> dict:
    """The app's health check as a pod container's (pods take one): HTTP and TCP on the endpoint of its port."""
    if len(checks) > 1:
        raise InjectError("/healthChecks: a pod container takes one health check; keep one")
    check = checks[0]
    protocol = check.get("protocol", "HTTP")
    timing = {k: check[k] for k in ("gracePeriodSeconds", "intervalSeconds", "maxConsecutiveFailures", "timeoutSeconds", "delaySeconds") if k in check}
    if protocol == "COMMAND":
        return {"exec": {"command": {"shell": (check.get("command") or {}).get("value", "")}}, **timing}
    index = check.get("portIndex", 0)
    if "port" in check or index >= len(endpoints):
        raise InjectError("/healthChecks(0): a pod's health check names an endpoint: use portIndex of one of the app's ports")
    endpoint = endpoints[index]["name"]
    if protocol in ("TCP", "MESOS_TCP"):
        return {"tcp": {"endpoint": endpoint}, **timing}
    scheme = "HTTPS" if protocol in ("HTTPS", "MESOS_HTTPS") else "HTTP"
    return {"http": {"endpoint": endpoint, "path": check.get("path", "/"), "scheme": scheme}, **timing}


def _scheduling(app: dict) -> dict:
    scheduling = {"backoff": {"backoff": app.get("backoffSeconds", 1), "backoffFactor": app.get("backoffFactor", 1.15),
                              "maxLaunchDelay": app.get("maxLaunchDelaySeconds", 3600)},
                  "upgrade": dict(app.get("upgradeStrategy") or {"minimumHealthCapacity": 1, "maximumOverCapacity": 1})}
    placement = {}
    if app.get("constraints"):
        placement["constraints"] = [{"fieldName": c[0], "operator": c[1], **({"value": c[2]} if len(c) > 2 else {})} for c in app["constraints"]]
    if app.get("acceptedResourceRoles"):
        placement["acceptedResourceRoles"] = list(app["acceptedResourceRoles"])
    if placement:
        scheduling["placement"] = placement
    for key in ("killSelection", "unreachableStrategy"):
        if key in app:
            scheduling[key] = copy.deepcopy(app[key])
    return scheduling


def sidecar_command(identity: Identity, settings: SidecarSettings) -> str:
    """The sidecar's shell: its proxy name is the registry's for this instance (registry/marathon.py
    workload_name: the service, cut to fit, and the instance's UUID from MESOS_TASK_ID); the
    identity it asks for is the one the app's labels give (the control plane checks it)."""
    prefix = identity.service[:62 - 36].rstrip("-")
    spiffe = f"spiffe://{settings.trust_domain}/ns/{identity.namespace}/sa/{identity.service_account}"
    return (f"proxy=\"{prefix}-$(printf %s \"$MESOS_TASK_ID\" | grep -oE '{UUID_PATTERN}' | tail -n 1).{identity.namespace}\" && "
            f"exec meshwright marathon-sidecar --proxy \"$proxy\" --identity {spiffe} --xds {settings.xds} --csr {settings.csr} "
            f"--ca {settings.ca} --certs-dir \"$MESOS_SANDBOX/meshwright/certs\" --health \"${{ENDPOINT_MESH_HEALTH:-{HEALTH_PORT}}}\"")


def sidecar_container(identity: Identity, settings: SidecarSettings, mode: str) -> dict:
    """Envoy and the agent; in host networking both its ports are allocated host ports
    (ENDPOINT_MESH_INBOUND, ENDPOINT_MESH_HEALTH), so instances on one agent do not clash."""
    health = {"name": SIDECAR_HEALTH, "containerPort": HEALTH_PORT, "protocol": ["tcp"], **({"hostPort": 0} if mode == "host" else {})}
    container = {
        "name": SIDECAR_CONTAINER,
        "resources": {"cpus": settings.cpus, "mem": settings.mem, "disk": 0, "gpus": 0},
        "exec": {"command": {"shell": sidecar_command(identity, settings)}},
        "endpoints": [{"name": SIDECAR_INBOUND, "containerPort": INBOUND_PORT, "hostPort": 0, "protocol": ["tcp"]},
                      health],
        "healthCheck": {"http": {"endpoint": SIDECAR_HEALTH, "path": "/healthz/ready", "scheme": "HTTP"},
                        "gracePeriodSeconds": 30, "intervalSeconds": 5, "maxConsecutiveFailures": 3, "timeoutSeconds": 2, "delaySeconds": 0},
        "labels": {LABEL_INJECTED: settings.version},
    }
    if settings.image:
        container["image"] = {"kind": "DOCKER", "id": settings.image}
    return container
