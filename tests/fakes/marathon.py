"""A test double of Marathon's REST API (apps, pods, deployments, the event stream).

Marathon is a JVM server scheduling on Mesos; neither runs on this machine, so the registry,
`meshwright marathon-inject` and the Ansible module are tested against this double. It is
written from the real shapes (Marathon's RAML types and examples, captured 1.5 responses, the
event stream's framing as Jetty writes it) and answers as Marathon does:

- `GET /v2/apps?embed=apps.tasks` (counts and deployments always, tasks when embedded),
  `GET /v2/apps/{id}` (`{"app": ...}` with tasks), `/v2/apps/{id}/tasks`, POST (201, Location,
  Marathon-Deployment-Id), PUT (200 `{version, deploymentId}`, 201 when it created the app),
  DELETE (force defaults to true); apps come back in the 1.5 shape (`networks`,
  `container.portMappings`) whatever 1.4 fields were sent.
- `GET /v2/pods`, `/v2/pods/{id}`, `/v2/pods/::status`, `/v2/pods/{id}::status`, POST (201),
  PUT (200), DELETE (202, empty body).
- `GET /v2/deployments`, `DELETE /v2/deployments/{id}` (a rollback deployment; 202 with force).
- `GET /v2/events`: 405 without `Accept: text/event-stream`, `event_type` filter, every event as
  `event: <type>\\r\\ndata: <compact JSON>\\r\\n\\r\\n`, `event_stream_attached` first, a bare
  CRLF heartbeat (written as CR, flush, LF) every heartbeat_seconds, no `id:` lines; a
  standby answers it with a 302 to the leader.
- Errors with Marathon's bodies: 400 invalid JSON (string or per-path details), 401, 404,
  409 already exists / locked by a deployment (unless force=true), 422 object is not valid,
  500 URI not found.

Tasks run nowhere: the double's "agent" is this machine (host 127.0.0.1, host ports free
loopback ports, container-network addresses 127.0.1.N); a test may pass `launcher` to start a
real process per task, or per pod instance: launcher("pod", pod, instance) gets the instance's
containers with their allocated host ports, and runs them as local processes as a Mesos agent
runs a pod in host networking (tests/integration/test_marathon_sidecar.py runs each container's
`exec` shell under `sh -c` with MESOS_TASK_ID = the container's task id, MESOS_SANDBOX and
ENDPOINT_<NAME> = each allocated host port, the environment Mesos gives it). No containerizer,
no isolation: processes of one instance share the machine's network namespace as host
networking does. The health of a pod's instances is what `healthy_on_start` (or
set_instance_health) says, not a real check of the process. Tests drive the cluster through methods (scale, kill_task, set_health,
hold deployments, fail, stall or drop the event stream) and every change emits the events
Marathon emits. Loopback only.
"""

from __future__ import annotations

import base64
import copy
import datetime
import http.server
import itertools
import json
import queue
import re
import socket
import threading
import urllib.parse
import uuid

HOST = "127.0.0.1"
TERMINAL_TASK_STATES = ("TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_LOST", "TASK_ERROR", "TASK_DROPPED",
                        "TASK_GONE", "TASK_GONE_BY_OPERATOR")
_PATH_ID = re.compile(r"(/?((\.\.)|(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9]))?($|/))+")
_CONDITION = {"TASK_STAGING": "Staging", "TASK_STARTING": "Starting", "TASK_RUNNING": "Running", "TASK_KILLED": "Killed",
              "TASK_FAILED": "Failed", "TASK_FINISHED": "Finished", "TASK_LOST": "Unreachable", "TASK_KILLING": "Killing"}


def now() -> str:
    """Marathon's timestamps: ISO-8601 UTC with milliseconds."""
    moment = datetime.datetime.now(datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


_HANDED_OUT: set[int] = set()


def loopback_port() -> int:
    """A free loopback port, one this double has not handed out before where it can: a
    replacement task does not take the port of the task it replaces, whose endpoint the tests
    and bench/marathon.py watch leave (Mesos may reuse ports; here that would hide the change)."""
    for dummy in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            break
    _HANDED_OUT.add(port)
    return port


class MarathonError(Exception):
    def __init__(self, status: int, body: dict | None, headers: dict | None = None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


def not_valid(details: list[dict]) -> MarathonError:
    return MarathonError(422, {"message": "Object is not valid", "details": details})


# Definitions: type checks (400), normalisation to the 1.5 shape, validation (422).

_TYPES = {"id": (str, "error.expected.jsstring"), "instances": (int, "error.expected.jsnumber"),
          "cpus": ((int, float), "error.expected.jsnumber"), "mem": ((int, float), "error.expected.jsnumber"),
          "labels": (dict, "error.expected.jsobject"), "healthChecks": (list, "error.expected.jsarray"),
          "portDefinitions": (list, "error.expected.jsarray"), "networks": (list, "error.expected.jsarray"),
          "containers": (list, "error.expected.jsarray"), "container": (dict, "error.expected.jsobject")}


def type_errors(definition) -> list[dict]:
    """Play JSON's read errors: 400 "Invalid JSON" with per-path details."""
    if not isinstance(definition, dict):
        return [{"path": "/", "errors": ["error.expected.jsobject"]}]
    return [{"path": f"/{key}", "errors": [error]} for key, (kind, error) in _TYPES.items()
            if key in definition and (not isinstance(definition[key], kind) or isinstance(definition[key], bool))]


def _legacy_networks(app: dict) -> list[dict]:
    """1.4 fields to 1.5 networks, as Marathon converts them (marathon-lb's reading)."""
    docker = (app.get("container") or {}).get("docker") or {}
    if "ipAddress" in app:
        return [{"mode": "container", "name": (app["ipAddress"] or {}).get("networkName", "dcos")}]
    if docker.get("network") == "BRIDGE":
        return [{"mode": "container/bridge"}]
    if docker.get("network") == "USER":
        return [{"mode": "container", "name": "dcos"}]
    return [{"mode": "host"}]


def normalise_app(definition: dict, service_ports: itertools.count) -> dict:
    """The app as Marathon stores and answers it: 1.5 fields, defaults, service ports assigned."""
    app = copy.deepcopy(definition)
    app.setdefault("networks", _legacy_networks(app))
    app.pop("ipAddress", None)
    container = app.get("container")
    if container:
        docker = container.get("docker") or {}
        docker.pop("network", None)
        if "portMappings" in docker:
            container["portMappings"] = docker.pop("portMappings")
    mode = app["networks"][-1].get("mode", "host") if app["networks"] else "host"
    if mode == "host":
        if "portDefinitions" not in app:
            ports = app.pop("ports", [0])
            app["portDefinitions"] = [{"port": port, "name": "default" if index == 0 else f"port{index}", "protocol": "tcp"}
                                      for index, port in enumerate(ports)]
        for definition_ in app["portDefinitions"]:
            definition_.setdefault("protocol", "tcp")
            if not definition_.get("port"):
                definition_["port"] = next(service_ports)
        (container or {}).pop("portMappings", None)
    else:
        app.pop("portDefinitions", None)
        for mapping in (container or {}).get("portMappings", []):
            mapping.setdefault("protocol", "tcp")
            if mode == "container/bridge":
                mapping.setdefault("hostPort", 0)
            if not mapping.get("servicePort"):
                mapping["servicePort"] = next(service_ports)
    app.pop("ports", None)
    for key, value in (("instances", 1), ("cpus", 1), ("mem", 128), ("disk", 0), ("gpus", 0), ("labels", {}),
                       ("healthChecks", []), ("requirePorts", False), ("backoffSeconds", 1), ("backoffFactor", 1.15),
                       ("upgradeStrategy", {"minimumHealthCapacity": 1, "maximumOverCapacity": 1})):
        app.setdefault(key, value)
    return app


def app_problems(app: dict) -> list[dict]:
    """The validation Marathon's AppValidation does that a client can trip over (422)."""
    problems: dict[str, list[str]] = {}
    if not _PATH_ID.fullmatch(app.get("id", "")) or not app.get("id", "").strip("/"):
        problems.setdefault("/id", []).append("must fully match regular expression '^(([a-z0-9]|[a-z0-9][a-z0-9\\-]*[a-z0-9])\\.)*([a-z0-9]|[a-z0-9][a-z0-9\\-]*[a-z0-9])|(\\.|\\.\\.)$'")
    if app.get("instances", 1) < 0:
        problems.setdefault("/instances", []).append("got -1, expected 0 or more")
    for key in ("minimumHealthCapacity", "maximumOverCapacity"):
        value = (app.get("upgradeStrategy") or {}).get(key, 1)
        if not 0 <= value <= 1:
            problems.setdefault(f"/upgradeStrategy/{key}", []).append("is greater than 1" if value > 1 else "is less than 0")
    modes = {network.get("mode", "container") for network in app.get("networks", [])}
    if len(modes) > 1:
        problems.setdefault("/networks", []).append("Networks must be of the same mode")
    if not app.get("cmd") and not app.get("args") and not (app.get("container") or {}).get("docker"):
        problems.setdefault("/", []).append("AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'.")
    ports = app.get("portDefinitions") or (app.get("container") or {}).get("portMappings") or []
    names = [port.get("name") for port in ports if port.get("name")]
    if len(names) != len(set(names)):
        problems.setdefault("/portDefinitions" if "portDefinitions" in app else "/container/portMappings", []).append("Port names must be unique.")
    for index, check in enumerate(app.get("healthChecks", [])):
        if check.get("protocol", "HTTP") in ("HTTP", "HTTPS", "TCP", "MESOS_HTTP", "MESOS_HTTPS", "MESOS_TCP") and "port" not in check \
                and check.get("portIndex", 0) >= max(len(ports), 1):
            problems.setdefault(f"/healthChecks({index})", []).append("Health check port indices must address an element of the ports array or container port mappings.")
    return [{"path": path, "errors": errors} for path, errors in problems.items()]


def pod_problems(pod: dict) -> list[dict]:
    problems = []
    if not _PATH_ID.fullmatch(pod.get("id", "")) or not pod.get("id", "").strip("/"):
        problems.append({"path": "/id", "errors": ["must fully match regular expression"]})
    if not pod.get("containers"):
        problems.append({"path": "/containers", "errors": ["must not be empty"]})
    names = [container.get("name") for container in pod.get("containers", [])]
    if len(names) != len(set(names)):
        problems.append({"path": "/containers", "errors": ["container names are not unique"]})
    return problems


# The cluster.

class Deployment:
    def __init__(self, apps: list[str], pods: list[str], actions: list[dict], version: str, apply, revert):
        self.id = str(uuid.uuid4())
        self.version, self.apps, self.pods, self.actions = version, apps, pods, actions
        self.apply, self.revert = apply, revert  # what finishing it does; what rolling it back restores

    def plan(self) -> dict:
        return {"id": self.id, "steps": [{"actions": self.actions}], "version": self.version}

    def info(self) -> dict:
        return {"id": self.id, "version": self.version, "affectedApps": self.apps, "affectedPods": self.pods,
                "steps": [{"actions": self.actions}], "currentActions": self.actions, "currentStep": 1, "totalSteps": 1}


class MarathonCluster:
    """The state Marathon keeps (apps, pods, tasks, instances, deployments) and its event bus.
    A leader and its standbys share one cluster."""

    def __init__(self, launcher=None):
        self.lock = threading.RLock()
        self.apps: dict[str, dict] = {}
        self.tasks: dict[str, list[dict]] = {}
        self.pods: dict[str, dict] = {}
        self.instances: dict[str, list[dict]] = {}
        self.deployments: dict[str, Deployment] = {}
        self.hold_deployments = False  # True: deployments stay running until finish_deployment()
        # New tasks of apps with health checks pass them at once (True), never (False), or when
        # healthy_on_start(app or pod) says so (a version that never becomes healthy).
        self.healthy_on_start = True
        self.launcher = launcher  # launcher(kind, run_spec, task): start a process; returns a stop()
        self._stops: dict[str, object] = {}
        self._service_ports = itertools.count(10000)
        self._container_addresses = itertools.count(2)
        self._subscribers: list[tuple[queue.Queue, set]] = []

    # The event bus.

    def subscribe(self, event_types: set) -> queue.Queue:
        events: queue.Queue = queue.Queue()
        with self.lock:
            self._subscribers.append((events, event_types))
        return events

    def unsubscribe(self, events: queue.Queue) -> None:
        with self.lock:
            self._subscribers = [entry for entry in self._subscribers if entry[0] is not events]

    def emit(self, event_type: str, payload: dict) -> None:
        body = {**payload, "eventType": event_type, "timestamp": now()}
        frame = f"event: {event_type}\r\ndata: {json.dumps(body, separators=(',', ':'))}\r\n\r\n".encode()
        with self.lock:
            for events, wanted in self._subscribers:
                if not wanted or event_type in wanted:
                    events.put(frame)

    # Apps.

    def app_info(self, app_id: str, with_tasks: bool) -> dict:
        app = copy.deepcopy(self.apps[app_id])
        tasks = self.tasks.get(app_id, [])
        running = [t for t in tasks if t["state"] == "TASK_RUNNING"]
        healthy = [t for t in running if t.get("healthCheckResults") and all(r["alive"] for r in t["healthCheckResults"])]
        unhealthy = [t for t in running if any(not r["alive"] for r in t.get("healthCheckResults", []))]
        app.update({"tasksStaged": len(tasks) - len(running), "tasksRunning": len(running), "tasksHealthy": len(healthy),
                    "tasksUnhealthy": len(unhealthy),
                    "deployments": [{"id": d.id} for d in self.deployments.values() if app_id in d.apps]})
        if with_tasks:
            app["tasks"] = copy.deepcopy(tasks)
        return app

    def locked_by(self, run_spec_id: str) -> list[Deployment]:
        return [d for d in self.deployments.values() if run_spec_id in d.apps or run_spec_id in d.pods]

    def put_app(self, definition: dict, force: bool, create_only: bool = False) -> tuple[dict, Deployment, bool]:
        with self.lock:
            app_id = "/" + definition.get("id", "").strip("/")
            created = app_id not in self.apps
            if create_only and not created:
                raise MarathonError(409, {"message": f"An app with id [{app_id}] already exists."})
            self._check_unlocked(app_id, force)
            app = normalise_app(_keeping_service_ports({**definition, "id": app_id}, self.apps.get(app_id)), self._service_ports)
            problems = app_problems(app)
            if problems:
                raise not_valid(problems)
            previous = self.apps.get(app_id)
            app["version"] = now()
            app["versionInfo"] = {"lastScalingAt": app["version"], "lastConfigChangeAt": app["version"]}
            self.apps[app_id] = app
            self.tasks.setdefault(app_id, [])
            if previous is not None and _without_instances(previous) != _without_instances(app):
                action = "RestartApplication"
            else:
                action = "StartApplication" if created else "ScaleApplication"
            deployment = self._deploy([app_id], [], [{"action": action, "app": app_id}], app["version"],
                                      lambda: self._converge_app(app_id, restart=action == "RestartApplication"),
                                      lambda: self._restore_app(app_id, previous))
            return app, deployment, created

    def delete_app(self, app_id: str, force: bool) -> Deployment:
        with self.lock:
            if app_id not in self.apps:
                raise MarathonError(404, {"message": f"App '{app_id}' does not exist"})
            self._check_unlocked(app_id, force)
            return self._deploy([app_id], [], [{"action": "StopApplication", "app": app_id}], now(),
                                lambda: self._remove_app(app_id), lambda: None)

    def scale(self, app_id: str, instances: int) -> Deployment:
        """What `PUT /v2/apps/{id}` with a new `instances` does."""
        return self.put_app({**self.apps[app_id], "instances": instances}, force=True)[1]

    def _converge_app(self, app_id: str, restart: bool = False) -> None:
        app = self.apps[app_id]
        if restart:
            for task in list(self.tasks[app_id]):
                self._end_task(app_id, task, "TASK_KILLED")
        live = [t for t in self.tasks[app_id] if t["state"] not in TERMINAL_TASK_STATES]
        for _ in range(app["instances"] - len(live)):
            self._start_task(app)
        for task in live[app["instances"]:] if app["instances"] < len(live) else []:
            self._end_task(app_id, task, "TASK_KILLED")

    def _remove_app(self, app_id: str) -> None:
        for task in list(self.tasks.get(app_id, [])):
            self._end_task(app_id, task, "TASK_KILLED")
        self.apps.pop(app_id, None)
        self.tasks.pop(app_id, None)
        self.emit("app_terminated_event", {"appId": app_id})

    def _restore_app(self, app_id: str, previous: dict | None) -> None:
        if previous is None:
            self._remove_app(app_id)
            return
        self.apps[app_id] = previous
        self._converge_app(app_id, restart=True)

    def _start_task(self, app: dict) -> dict:
        mode = app["networks"][-1].get("mode", "host") if app["networks"] else "host"
        mappings = (app.get("container") or {}).get("portMappings", [])
        if mode == "host":
            host_ports = [p["port"] if app.get("requirePorts") else loopback_port() for p in app.get("portDefinitions", [])]
        else:
            host_ports = [m["hostPort"] or loopback_port() for m in mappings if mode == "container/bridge" or "hostPort" in m]
        addresses = [{"ipAddress": f"127.0.1.{next(self._container_addresses)}", "protocol": "IPv4"}] if mode != "host" else []
        task_uuid = str(uuid.uuid4())
        task = {"ipAddresses": addresses, "stagedAt": now(), "state": "TASK_STAGING", "ports": host_ports, "startedAt": None,
                "version": app["version"], "id": f"{app['id'].strip('/').replace('/', '_')}.{task_uuid}", "appId": app["id"],
                "slaveId": "double-agent-S0", "host": HOST}
        self.tasks[app["id"]].append(task)
        self._task_status(task, "TASK_STAGING")
        if self.launcher:
            self._stops[task["id"]] = self.launcher("app", app, task)
        task["startedAt"] = now()
        self._task_status(task, "TASK_RUNNING")
        if app["healthChecks"]:
            task["healthCheckResults"] = []
            if self.healthy_on_start(app) if callable(self.healthy_on_start) else self.healthy_on_start:
                self.set_health(task["id"], True)
        return task

    def _task_status(self, task: dict, state: str, message: str = "") -> None:
        task["state"] = state
        self.emit("status_update_event", {"slaveId": task["slaveId"], "taskId": task["id"], "taskStatus": state, "message": message,
                                          "appId": task["appId"], "host": task["host"], "ipAddresses": task["ipAddresses"],
                                          "ports": task["ports"], "version": task["version"]})
        self.emit("instance_changed_event", {"instanceId": instance_id(task["id"]), "condition": _CONDITION.get(state, "Unknown"),
                                             "runSpecId": task["appId"], "agentId": task["slaveId"], "host": task["host"],
                                             "runSpecVersion": task["version"]})

    def _end_task(self, app_id: str, task: dict, state: str) -> None:
        stop = self._stops.pop(task["id"], None)
        if stop:
            stop()
        self.tasks[app_id] = [t for t in self.tasks[app_id] if t is not task]
        self._task_status(task, state)

    def kill_task(self, task_id: str, state: str = "TASK_KILLED", replace: bool = False) -> None:
        """A task ends (killed, failed, lost); with replace, Marathon launches a new one."""
        with self.lock:
            app_id, task = self.find_task(task_id)
            self._end_task(app_id, task, state)
            if replace:
                self._start_task(self.apps[app_id])

    def set_health(self, task_id: str, alive: bool) -> None:
        """Marathon's health checker saw the task pass (alive) or fail its checks."""
        with self.lock:
            app_id, task = self.find_task(task_id)
            moment = now()
            task["healthCheckResults"] = [{"alive": alive, "consecutiveFailures": 0 if alive else 1,
                                           "firstSuccess": moment if alive else None, "lastFailure": None if alive else moment,
                                           "lastSuccess": moment if alive else None, "lastFailureCause": None if alive else "503",
                                           "instanceId": marathon_instance_id(task_id)}
                                          for _ in self.apps[app_id]["healthChecks"]]
            self.emit("health_status_changed_event", {"appId": app_id, "instanceId": marathon_instance_id(task_id),
                                                      "version": task["version"], "alive": alive})
            self.emit("instance_health_changed_event", {"instanceId": marathon_instance_id(task_id), "runSpecId": app_id,
                                                        "healthy": alive, "runSpecVersion": task["version"]})

    def find_task(self, task_id: str) -> tuple[str, dict]:
        for app_id, tasks in self.tasks.items():
            for task in tasks:
                if task["id"] == task_id:
                    return app_id, task
        raise MarathonError(404, {"message": f"Task '{task_id}' does not exist"})

    # Pods.

    def pod_status(self, pod_id: str) -> dict:
        pod = self.pods[pod_id]
        instances = self.instances.get(pod_id, [])
        stable = sum(1 for i in instances if i["status"] == "STABLE")
        state = "STABLE" if stable >= pod["scaling"]["instances"] else "DEGRADED"
        return {"id": pod_id, "spec": copy.deepcopy(pod), "status": state, "statusSince": pod["version"],
                "instances": copy.deepcopy(instances), "terminationHistory": [], "lastUpdated": now(), "lastChanged": pod["version"]}

    def put_pod(self, definition: dict, force: bool, create_only: bool = False) -> tuple[dict, Deployment, bool]:
        with self.lock:
            pod_id = "/" + definition.get("id", "").strip("/")
            created = pod_id not in self.pods
            if create_only and not created:
                raise MarathonError(409, {"message": f"A pod with id [{pod_id}] already exists."})
            self._check_unlocked(pod_id, force)
            pod = copy.deepcopy({**definition, "id": pod_id})
            problems = pod_problems(pod)
            if problems:
                raise not_valid(problems)
            pod.setdefault("scaling", {"kind": "fixed", "instances": 1})
            pod["scaling"].setdefault("kind", "fixed")
            pod["scaling"].setdefault("instances", 1)
            pod.setdefault("networks", [{"mode": "host"}])
            pod["version"] = now()
            previous = self.pods.get(pod_id)
            self.pods[pod_id] = pod
            self.instances.setdefault(pod_id, [])
            restart = previous is not None and _without_instances(previous) != _without_instances(pod)
            action = "RestartPod" if restart else ("StartPod" if created else "ScalePod")
            deployment = self._deploy([], [pod_id], [{"action": action, "pod": pod_id}], pod["version"],
                                      lambda: self._converge_pod(pod_id, restart), lambda: self._restore_pod(pod_id, previous))
            return pod, deployment, created

    def delete_pod(self, pod_id: str, force: bool) -> Deployment:
        with self.lock:
            if pod_id not in self.pods:
                raise MarathonError(404, {"message": f"Pod '{pod_id}' does not exist"})
            self._check_unlocked(pod_id, force)
            return self._deploy([], [pod_id], [{"action": "StopPod", "pod": pod_id}], now(), lambda: self._remove_pod(pod_id), lambda: None)

    def _converge_pod(self, pod_id: str, restart: bool = False) -> None:
        pod = self.pods[pod_id]
        if restart:
            for instance in list(self.instances[pod_id]):
                self._end_instance(pod_id, instance, "TASK_KILLED")
        wanted = pod["scaling"]["instances"]
        for _ in range(wanted - len(self.instances[pod_id])):
            self._start_instance(pod)
        for instance in self.instances[pod_id][wanted:]:
            self._end_instance(pod_id, instance, "TASK_KILLED")

    def _remove_pod(self, pod_id: str) -> None:
        for instance in list(self.instances.get(pod_id, [])):
            self._end_instance(pod_id, instance, "TASK_KILLED")
        self.pods.pop(pod_id, None)
        self.instances.pop(pod_id, None)
        self.emit("app_terminated_event", {"appId": pod_id})

    def _restore_pod(self, pod_id: str, previous: dict | None) -> None:
        if previous is None:
            self._remove_pod(pod_id)
            return
        self.pods[pod_id] = previous
        self._converge_pod(pod_id, restart=True)

    def _start_instance(self, pod: dict) -> dict:
        container_mode = any(n.get("mode") == "container" for n in pod["networks"])
        instance_id_ = f"{pod['id'].strip('/').replace('/', '_')}.instance-{uuid.uuid4()}"
        address = f"127.0.1.{next(self._container_addresses)}"
        containers = []
        for container in pod["containers"]:
            endpoints = []
            for endpoint in container.get("endpoints", []):
                status = {"name": endpoint["name"]}
                if "hostPort" in endpoint or not container_mode:
                    status["allocatedHostPort"] = endpoint.get("hostPort") or loopback_port()
                if container.get("healthCheck"):
                    status["healthy"] = bool(self.healthy_on_start(pod) if callable(self.healthy_on_start) else self.healthy_on_start)
                endpoints.append(status)
            containers.append({"name": container["name"], "status": "TASK_RUNNING", "statusSince": now(), "conditions": [],
                               "containerId": f"{instance_id_}.{container['name']}", "endpoints": endpoints,
                               "resources": container.get("resources", {}), "lastUpdated": now(), "lastChanged": now()})
        healthy = all(e.get("healthy", True) for c in containers for e in c["endpoints"])
        instance = {"id": instance_id_, "status": "STABLE" if healthy else "DEGRADED", "statusSince": now(), "conditions": [],
                    "agentHostname": HOST, "agentId": "double-agent-S0", "resources": {},
                    "networks": [{"name": n.get("name", "dcos"), "addresses": [address]} for n in pod["networks"] if n.get("mode") == "container"],
                    "containers": containers, "specReference": f"/v2/pods{pod['id']}::versions/{pod['version']}",
                    "localVolumes": [], "lastUpdated": now(), "lastChanged": now()}
        self.instances[pod["id"]].append(instance)
        if self.launcher:
            self._stops[instance_id_] = self.launcher("pod", pod, instance)
        for container in containers:
            self._container_status(pod, instance, container, "TASK_RUNNING")
        return instance

    def _container_status(self, pod: dict, instance: dict, container: dict, state: str) -> None:
        container["status"] = state
        self.emit("status_update_event", {"slaveId": instance["agentId"], "taskId": container["containerId"], "taskStatus": state,
                                          "message": "", "appId": pod["id"], "host": HOST,
                                          "ipAddresses": [{"ipAddress": a, "protocol": "IPv4"} for n in instance["networks"] for a in n["addresses"]],
                                          "ports": [e["allocatedHostPort"] for e in container["endpoints"] if "allocatedHostPort" in e],
                                          "version": pod["version"]})
        self.emit("instance_changed_event", {"instanceId": instance["id"], "condition": _CONDITION.get(state, "Unknown"),
                                             "runSpecId": pod["id"], "agentId": instance["agentId"], "host": HOST,
                                             "runSpecVersion": pod["version"]})

    def _end_instance(self, pod_id: str, instance: dict, state: str) -> None:
        stop = self._stops.pop(instance["id"], None)
        if stop:
            stop()
        self.instances[pod_id] = [i for i in self.instances[pod_id] if i is not instance]
        instance["status"] = "TERMINAL"
        for container in instance["containers"]:
            self._container_status(self.pods[pod_id], instance, container, state)

    def kill_instance(self, instance_id_: str, state: str = "TASK_KILLED") -> None:
        with self.lock:
            for pod_id, instances in self.instances.items():
                for instance in instances:
                    if instance["id"] == instance_id_:
                        self._end_instance(pod_id, instance, state)
                        return
        raise MarathonError(404, {"message": f"Instance '{instance_id_}' does not exist"})

    def set_instance_health(self, instance_id_: str, healthy: bool) -> None:
        with self.lock:
            for pod_id, instances in self.instances.items():
                for instance in (i for i in instances if i["id"] == instance_id_):
                    for endpoint in (e for c in instance["containers"] for e in c["endpoints"] if "healthy" in e):
                        endpoint["healthy"] = healthy
                    instance["status"] = "STABLE" if healthy else "DEGRADED"
                    self.emit("instance_health_changed_event", {"instanceId": instance_id_, "runSpecId": pod_id,
                                                                "healthy": healthy, "runSpecVersion": self.pods[pod_id]["version"]})

    # Deployments.

    def _check_unlocked(self, run_spec_id: str, force: bool) -> None:
        locking = self.locked_by(run_spec_id)
        if locking and not force:
            raise MarathonError(409, {"message": "App is locked by one or more deployments. Override with the option '?force=true'. "
                                                 f"View details at '/v2/deployments/<DEPLOYMENT_ID>'.",
                                      "deployments": [{"id": d.id} for d in locking]})
        for deployment in locking:  # force: Marathon cancels the running deployment and starts the new one
            self.deployments.pop(deployment.id, None)

    def _deploy(self, apps, pods, actions, version, apply, revert) -> Deployment:
        deployment = Deployment(apps, pods, actions, version, apply, revert)
        self.deployments[deployment.id] = deployment
        self.emit("deployment_info", {"plan": deployment.plan(), "currentStep": {"actions": actions}})
        if not self.hold_deployments:
            self.finish_deployment(deployment.id)
        return deployment

    def finish_deployment(self, deployment_id: str) -> None:
        with self.lock:
            deployment = self.deployments.pop(deployment_id)
            deployment.apply()
            self.emit("deployment_step_success", {"plan": deployment.plan(), "currentStep": {"actions": deployment.actions}})
            self.emit("deployment_success", {"id": deployment.id, "plan": deployment.plan()})

    def fail_deployment(self, deployment_id: str, reason: str = "tasks did not become healthy") -> None:
        """The deployment ends failed: its target was applied as far as it got (the apps keep
        their new definition), as Marathon leaves them."""
        with self.lock:
            deployment = self.deployments.pop(deployment_id)
            deployment.apply()
            self.emit("deployment_step_failure", {"plan": deployment.plan(), "currentStep": {"actions": deployment.actions}})
            self.emit("deployment_failed", {"id": deployment.id, "plan": deployment.plan(), "reason": reason})

    def cancel_deployment(self, deployment_id: str, force: bool) -> Deployment | None:
        """DELETE /v2/deployments/{id}: without force, a new deployment rolls back to what was
        before; with force, it only stops."""
        with self.lock:
            deployment = self.deployments.pop(deployment_id, None)
            if deployment is None:
                raise MarathonError(404, {"message": f"DeploymentPlan {deployment_id} does not exist"})
            self.emit("deployment_failed", {"id": deployment.id, "plan": deployment.plan(), "reason": "canceled"})
            if force:
                return None
            return self._deploy(deployment.apps, deployment.pods, deployment.actions, now(), deployment.revert, lambda: None)


def _keeping_service_ports(definition: dict, previous: dict | None) -> dict:
    """An update that leaves service ports 0 keeps the ports the app has (Marathon reassigns
    none of an app's service ports on update)."""
    if previous is None:
        return definition
    definition = copy.deepcopy(definition)
    old = [p.get("servicePort") for p in (previous.get("container") or {}).get("portMappings", [])] or \
        [p.get("port") for p in previous.get("portDefinitions", [])]
    container = definition.get("container") or {}
    new = (container.get("docker") or {}).get("portMappings") or container.get("portMappings") or definition.get("portDefinitions") or []
    for port, kept in zip(new, old):
        key = "port" if port is not None and "containerPort" not in port and "servicePort" not in port else "servicePort"
        if not port.get(key):
            port[key] = kept
    return definition


def _without_instances(run_spec: dict) -> dict:
    trimmed = {k: v for k, v in run_spec.items() if k not in ("instances", "version", "versionInfo")}
    if "scaling" in trimmed:
        trimmed["scaling"] = {k: v for k, v in trimmed["scaling"].items() if k != "instances"}
    return trimmed


def instance_id(task_id: str) -> str:
    """The instance a task belongs to ("app.instance-<uuid>._app.1" -> "app.instance-<uuid>")."""
    return task_id.split("._app.")[0] if "._app." in task_id else task_id


def marathon_instance_id(task_id: str) -> str:
    """The instance id Marathon's health results name for an old-style task id
    ("nginx-green.01da..." -> "nginx-green.marathon-01da...")."""
    base, _, unique = instance_id(task_id).rpartition(".")
    return task_id if unique.startswith("instance-") else f"{base}.marathon-{unique}"


# HTTP.

class MarathonDouble:
    """One Marathon server on a free loopback port. standby_of: this server is a standby of
    that leader (same cluster; it redirects /v2/events to the leader, as Marathon 1.7+ does).
    credentials (user, password) or token: requests must carry Basic or `token=` auth."""

    def __init__(self, cluster: MarathonCluster | None = None, standby_of: MarathonDouble | None = None,
                 credentials: tuple[str, str] | None = None, token: str | None = None, heartbeat_seconds: float = 10.0):
        self.cluster = cluster or (standby_of.cluster if standby_of else MarathonCluster())
        self.standby_of = standby_of
        self.credentials, self.token = credentials, token
        self.heartbeat_seconds = heartbeat_seconds
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.stalled = threading.Event()  # set: event streams send nothing at all (no heartbeat either)
        self._faults: list[tuple[str, int, bytes, int]] = []
        self._streams: set = set()
        self._lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer((HOST, 0), _handler(self))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://{HOST}:{self.port}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), name=f"marathon-double-{self.port}", daemon=True).start()

    def stop(self) -> None:
        self.drop_streams()
        self.server.shutdown()
        self.server.server_close()

    def fail_next(self, path_prefix: str, status: int = 500, body: bytes = b'{"message":"internal error"}', times: int = 1) -> None:
        """The next `times` requests whose path starts with path_prefix get this answer instead."""
        with self._lock:
            self._faults.append((path_prefix, status, body, times))

    def take_fault(self, path: str):
        with self._lock:
            for index, (prefix, status, body, times) in enumerate(self._faults):
                if path.startswith(prefix):
                    if times <= 1:
                        del self._faults[index]
                    else:
                        self._faults[index] = (prefix, status, body, times - 1)
                    return status, body
        return None

    def drop_streams(self) -> None:
        """Close every open event stream (a leader change, a network cut)."""
        with self._lock:
            streams = list(self._streams)
        for connection in streams:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stream_count(self) -> int:
        with self._lock:
            return len(self._streams)

    def authorized(self, header: str | None) -> bool:
        if self.credentials is None and self.token is None:
            return True
        if header and self.token is not None and header == f"token={self.token}":
            return True
        if header and self.credentials is not None and header.startswith("Basic "):
            try:
                return base64.b64decode(header[6:]).decode() == ":".join(self.credentials)
            except ValueError:
                return False
        return False


def _handler(double: MarathonDouble):
    cluster = double.cluster

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _send(self, status: int, body, headers: dict | None = None) -> None:
            data = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
            self.send_response(status)
            if "Content-Type" not in (headers or {}):
                self.send_header("Content-Type", "application/json")
            self.send_header("X-Marathon-Leader", (double.standby_of or double).url)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self):
            length = int(self.headers.get("Content-Length") or 0)
            text = self.rfile.read(length) if length else b""
            try:
                definition = json.loads(text)
            except ValueError as error:
                raise MarathonError(400, {"message": "Invalid JSON", "details": f"Unexpected character: {error}"}) from None
            errors = type_errors(definition)
            if errors:
                raise MarathonError(400, {"message": "Invalid JSON", "details": errors})
            return definition

        def _dispatch(self, method: str) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            double.requests.append((method, self.path))
            if not double.authorized(self.headers.get("Authorization")):
                self._send(401, {"message": "Invalid username or password."}, {"WWW-Authenticate": 'Basic realm="Mesosphere"'})
                return
            fault = double.take_fault(url.path)
            if fault:
                self._send(fault[0], fault[1])
                return
            try:
                if method == "GET" and url.path == "/v2/events":
                    self._events(query)
                    return
                status, body, headers = route(method, url.path, query, self._body)
            except MarathonError as error:
                status, body, headers = error.status, error.body, error.headers
            self._send(status, body, headers)

        def do_GET(self):
            self._dispatch("GET")

        def do_POST(self):
            self._dispatch("POST")

        def do_PUT(self):
            self._dispatch("PUT")

        def do_DELETE(self):
            self._dispatch("DELETE")

        def _events(self, query: dict) -> None:
            if self.headers.get("Accept") != "text/event-stream":
                page = b"<html><body><h2>HTTP ERROR 405</h2><p>Reason: HTTP method GET is not supported by this URL</p></body></html>"
                self.send_response(405)
                self.send_header("Content-Type", "text/html;charset=iso-8859-1")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)
                return
            if double.standby_of is not None:
                self.send_response(302)
                self.send_header("Location", double.standby_of.url + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            for name, value in (("Content-Type", "text/event-stream;charset=UTF-8"), ("Connection", "close"),
                                ("Cache-Control", "no-cache, no-store, must-revalidate"), ("Pragma", "no-cache"), ("Expires", "0")):
                self.send_header(name, value)
            self.end_headers()
            self.close_connection = True
            events = cluster.subscribe(set(query.get("event_type", [])))
            with double._lock:
                double._streams.add(self.connection)
            try:
                cluster.emit("event_stream_attached", {"remoteAddress": self.client_address[0]})
                self._stream(events)
            except OSError:
                pass
            finally:
                cluster.unsubscribe(events)
                with double._lock:
                    double._streams.discard(self.connection)

        def _stream(self, events: queue.Queue) -> None:
            while True:
                try:
                    frame = events.get(timeout=double.heartbeat_seconds)
                except queue.Empty:
                    frame = None
                if double.stalled.is_set():
                    continue
                if frame is None:  # Jetty's heartbeat: CR, flush, LF, flush
                    self.wfile.write(b"\r")
                    self.wfile.flush()
                    frame = b"\n"
                self.wfile.write(frame)
                self.wfile.flush()

    def route(method: str, path: str, query: dict, body):
        force = query.get("force", ["false"])[0] == "true"
        embed = set(query.get("embed", []))
        with cluster.lock:
            if path in ("/ping",):
                return 200, b"pong", {"Content-Type": "text/plain"}
            if path == "/v2/apps" and method == "GET":
                with_tasks = bool(embed & {"apps.tasks", "app.tasks", "tasks"})
                return 200, {"apps": [cluster.app_info(app_id, with_tasks) for app_id in sorted(cluster.apps)]}, {}
            if path == "/v2/apps" and method == "POST":
                app, deployment, _ = cluster.put_app(body(), force, create_only=True)
                echoed = {**app, "tasksStaged": 0, "tasksRunning": 0, "tasksHealthy": 0, "tasksUnhealthy": 0, "deployments": [{"id": deployment.id}]}
                echoed.pop("versionInfo", None)
                return 201, echoed, {"Location": f"{double.url}/v2/apps{app['id']}", "Marathon-Deployment-Id": deployment.id}
            if path.startswith("/v2/apps/"):
                # DELETE /v2/apps/{id} defaults to force=true (every version from 1.4 to 1.10)
                return app_route(method, path[len("/v2/apps"):], force, body, query.get("force", ["true"])[0] == "true")
            if path == "/v2/pods" and method == "GET":
                return 200, [copy.deepcopy(cluster.pods[pod_id]) for pod_id in sorted(cluster.pods)], {}
            if path == "/v2/pods/::status" and method == "GET":
                return 200, [cluster.pod_status(pod_id) for pod_id in sorted(cluster.pods)], {}
            if path == "/v2/pods" and method == "POST":
                pod, deployment, _ = cluster.put_pod(body(), force, create_only=True)
                return 201, pod, {"Location": f"{double.url}/v2/pods{pod['id']}", "Marathon-Deployment-Id": deployment.id}
            if path.startswith("/v2/pods/"):
                return pod_route(method, path[len("/v2/pods"):], force, body)
            if path == "/v2/deployments" and method == "GET":
                return 200, [d.info() for d in cluster.deployments.values()], {}
            if path.startswith("/v2/deployments/") and method == "DELETE":
                rollback = cluster.cancel_deployment(path[len("/v2/deployments/"):], force)
                if rollback is None:
                    return 202, b"", {}
                return 200, {"deploymentId": rollback.id, "version": rollback.version}, {"Marathon-Deployment-Id": rollback.id}
            if path == "/v2/info":
                return 200, {"name": "marathon", "version": "1.10.26", "leader": f"{HOST}:{(double.standby_of or double).port}",
                             "frameworkId": "double-framework"}, {}
        raise MarathonError(500, {"message": "URI not found"})

    def app_route(method: str, rest: str, force: bool, body, delete_force: bool = True):
        if rest.endswith("/tasks") and method == "GET":
            app_id = rest[: -len("/tasks")]
            if app_id not in cluster.apps:
                raise MarathonError(404, {"message": f"App '{app_id}' does not exist"})
            return 200, {"tasks": copy.deepcopy(cluster.tasks.get(app_id, []))}, {}
        app_id = "/" + rest.strip("/")
        if method == "GET":
            if app_id not in cluster.apps:
                raise MarathonError(404, {"message": f"App '{app_id}' does not exist"})
            return 200, {"app": cluster.app_info(app_id, with_tasks=True)}, {}
        if method == "PUT":
            definition = body()
            if "id" in definition and "/" + definition["id"].strip("/") != app_id:
                raise MarathonError(422, {"message": "Object is not valid", "details": [{"path": "/id", "errors": ["id in the URL does not match the body"]}]})
            app, deployment, created = cluster.put_app({**definition, "id": app_id}, force)
            return 201 if created else 200, {"version": app["version"], "deploymentId": deployment.id}, {"Marathon-Deployment-Id": deployment.id}
        if method == "DELETE":
            deployment = cluster.delete_app(app_id, force=delete_force)
            return 200, {"version": deployment.version, "deploymentId": deployment.id}, {"Marathon-Deployment-Id": deployment.id}
        raise MarathonError(500, {"message": "URI not found"})

    def pod_route(method: str, rest: str, force: bool, body):
        status = rest.endswith("::status")
        pod_id = "/" + (rest[: -len("::status")] if status else rest).strip("/")
        if method == "GET":
            if pod_id not in cluster.pods:
                message = f"Pod '{pod_id}' does not exist" if status else json.dumps({"message": f"pod with {pod_id} does not exist"})
                raise MarathonError(404, {"message": message})
            return 200, cluster.pod_status(pod_id) if status else copy.deepcopy(cluster.pods[pod_id]), {}
        if method == "PUT":
            definition = body()
            if "id" in definition and "/" + str(definition["id"]).strip("/") != pod_id:
                raise MarathonError(400, {"message": f"'{pod_id}' does not match definition's id ('{definition['id']}')"})
            pod, deployment, created = cluster.put_pod({**definition, "id": pod_id}, force)
            return 201 if created else 200, pod, {"Marathon-Deployment-Id": deployment.id}
        if method == "DELETE":
            deployment = cluster.delete_pod(pod_id, force)
            return 202, b"", {"Marathon-Deployment-Id": deployment.id}
        raise MarathonError(500, {"message": "URI not found"})

    return Handler
