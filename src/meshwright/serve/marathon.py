"""Marathon as a registry of the control plane: list apps and pods with their tasks, follow
the event stream, publish the mesh resources they make (registry/marathon.py translates).

The follower opens `/v2/events` first and lists second (`/v2/apps?embed=apps.tasks`,
`/v2/pods/::status`), so nothing that happens between the two is missed; the stream has no
event ids, so every reconnect lists again, and so does an event it cannot read. Task status
updates change the task in place; health, instance, deployment and definition events fetch
the one app or pod again. After each read from the stream, what changed is published: the
apps and pods the events touched are translated again, and only their resources that differ
(serve/registries.py ViewChanges); the first list, and every list again, publishes the whole.

Marathon writes a bare CRLF every 10 s on an idle stream: a stream silent for stall_seconds
is dead (a cut without FIN, a hung leader) and is dropped and reopened. Several URLs are an
HA Marathon: a failing one hands over to the next; a standby redirects the stream to the
leader (followed once). A Marathon that answers 500 or garbage leaves the last published
resources in place; each failure is one log line naming the URL and what was wrong.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import socket
import threading
import time
import re
import urllib.parse

from meshwright.registry.marathon import (DEFAULT_DOMAIN, TERMINAL_TASK_STATES, RunSpecResources, app_resources, merged, merged_services,
                                          pod_resources, workload_name)
from meshwright.serve.certificates import MarathonTaskRefused
from meshwright.serve.registries import Update, ViewChanges

LOG = logging.getLogger("meshwright.serve.marathon")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
STALL_SECONDS = 30.0  # three missed keep-alives
REQUEST_SECONDS = 10.0
RETRY_SECONDS, MAX_RETRY_SECONDS = 0.2, 5.0
READ_BYTES = 65536
# Events after which the app or pod they name is fetched again.
REFETCH_EVENTS = ("health_status_changed_event", "instance_health_changed_event", "failed_health_check_event",
                  "unhealthy_instance_kill_event", "instance_changed_event", "unknown_instance_terminated_event")
DEPLOYMENT_EVENTS = ("deployment_info", "deployment_step_success", "deployment_step_failure", "deployment_success", "deployment_failed")


class MarathonUnavailable(Exception):
    """A request failed; the message names the URL and why."""


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def token_auth(token: str) -> str:
    """DC/OS's header for a Marathon behind its auth: `Authorization: token=<token>`."""
    return f"token={token}"


def auth_from_files(credentials_file: str | None, token_file: str | None) -> str | None:
    """The Authorization header from a `user:password` file or a token file (never from the command line)."""
    if credentials_file:
        with open(credentials_file) as handle:
            text = handle.read().strip()
        user, sep, password = text.partition(":")
        if not sep or not user:
            raise ValueError(f"{credentials_file}: expected one line user:password")
        return basic_auth(user, password)
    if token_file:
        with open(token_file) as handle:
            token = handle.read().strip()
        if not token:
            raise ValueError(f"{token_file}: the token file is empty")
        return token_auth(token)
    return None


class EventStreamParser:
    """Server-Sent Events as Marathon (Jetty) writes them: `event:` and `data:` lines ended by
    CRLF (or CR, or LF), a blank line dispatching; a bare line break (the keep-alive, whose CR
    and LF may arrive in separate reads) dispatches nothing."""

    def __init__(self):
        self._line = bytearray()
        self._skip_lf = False
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        events = []
        for byte in chunk:
            if self._skip_lf:
                self._skip_lf = False
                if byte == 0x0A:
                    continue
            if byte in (0x0D, 0x0A):
                self._skip_lf = byte == 0x0D
                event = self._line_done(self._line.decode("utf-8", "replace"))
                self._line.clear()
                if event:
                    events.append(event)
            else:
                self._line.append(byte)
        return events

    def _line_done(self, line: str) -> tuple[str, str] | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = (self._event or "message", "\n".join(self._data))
            self._event, self._data = "", []
            return event
        field, dummy, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        return None


class MarathonClient:
    """Requests to the first Marathon of urls that answers; a failure moves to the next."""

    def __init__(self, urls: list[str], authorization: str | None = None, timeout: float = REQUEST_SECONDS):
        for url in urls:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"--marathon {url!r}: expected http://HOST:PORT or https://HOST:PORT")
        self.urls = [url.rstrip("/") for url in urls]
        self.authorization = authorization
        self.timeout = timeout
        self.current = 0

    @property
    def url(self) -> str:
        return self.urls[self.current]

    def next_url(self) -> None:
        self.current = (self.current + 1) % len(self.urls)

    def _connect(self, url: str, timeout: float) -> http.client.HTTPConnection:
        parts = urllib.parse.urlsplit(url)
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        return kind(parts.hostname, parts.port, timeout=timeout)

    def _open(self, url: str, headers: dict, timeout: float) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        parts = urllib.parse.urlsplit(url)
        connection = self._connect(url, timeout)
        if self.authorization:
            headers = {**headers, "Authorization": self.authorization}
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request("GET", target, headers=headers)
            return connection, connection.getresponse()
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            raise MarathonUnavailable(f"GET {url}: {_reason(error)}") from None

    def get_json(self, path: str):
        """The JSON answer of GET path; None for a 404; MarathonUnavailable otherwise, after every URL was tried."""
        failures = []
        for dummy in self.urls:
            url = self.url + path
            try:
                return self._get_json_once(url)
            except MarathonUnavailable as failure:
                failures.append(str(failure))
                self.next_url()
        raise MarathonUnavailable("; ".join(failures))

    def _get_json_once(self, url: str):
        connection, response = self._open(url, {"Accept": "application/json"}, self.timeout)
        try:
            body = response.read()
        except (OSError, http.client.HTTPException) as error:
            raise MarathonUnavailable(f"GET {url}: {_reason(error)}") from None
        finally:
            connection.close()
        if response.status == 404:
            return None
        if response.status != 200:
            raise MarathonUnavailable(f"GET {url}: HTTP {response.status} {_excerpt(body)}{_auth_hint(response.status)}")
        try:
            return json.loads(body)
        except ValueError as error:
            raise MarathonUnavailable(f"GET {url}: the answer is not JSON ({error}): {_excerpt(body)}") from None

    def open_events(self, stall_seconds: float) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, str]:
        """The event stream of the current URL (a standby's redirect to the leader followed
        once): its connection, its response (reads time out after stall_seconds) and its URL."""
        url = self.url + "/v2/events"
        for dummy in range(2):
            connection, response = self._open(url, {"Accept": "text/event-stream", "Cache-Control": "no-cache"}, stall_seconds)
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                location = urllib.parse.urljoin(url, response.getheader("Location"))
                connection.close()
                url = location
                continue
            if response.status != 200:
                body = response.read(2048)
                connection.close()
                raise MarathonUnavailable(f"GET {url}: HTTP {response.status} {_excerpt(body)}{_auth_hint(response.status)}")
            return connection, response, url
        raise MarathonUnavailable(f"GET {url}: redirected more than once")


def host_addresses(host: str) -> set[str]:
    """The IP addresses of an agent's host name (Marathon gives a name or an address)."""
    if not host:
        return set()
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    except OSError:
        return set()


def _reason(error: BaseException) -> str:
    if isinstance(error, (socket.timeout, TimeoutError)):
        return "timed out"
    return str(error) or type(error).__name__


def _excerpt(body: bytes) -> str:
    text = body[:200].decode("utf-8", "replace").replace("\n", " ").strip()
    return text + ("..." if len(body) > 200 else "")


def _auth_hint(status: int) -> str:
    return " (check --marathon-credentials or --marathon-token-file)" if status in (401, 403) else ""


class MarathonRegistry:
    """A registry of the control plane (name, start(publish), stop()): publish(resources) is
    called with every ServiceEntry and WorkloadEntry of Marathon's apps and pods whenever they change."""

    def __init__(self, urls: list[str], name: str = "marathon", authorization: str | None = None,
                 stall_seconds: float = STALL_SECONDS, domain: str = DEFAULT_DOMAIN):
        self.name = name
        self.client = MarathonClient(urls, authorization)
        self.stall_seconds = stall_seconds
        self.domain = domain
        self.apps: dict[str, dict] = {}
        self.pods: dict[str, dict] = {}  # pod statuses by id
        # Each app's and pod's resources, translated again only when an event touched it (dirty).
        self._parts: dict[str, RunSpecResources] = {}
        self._dirty: set[str] = set()
        # What was published, by key, and the run specs whose workloads are in it; after a list
        # the next publish is whole.
        self._view: dict[tuple, object] = {}
        self._services: dict[tuple, object] = {}  # the view's ServiceEntries
        self._included: set[str] = set()
        self._whole = True
        self.published: int | None = None  # how many resources the published view holds (None: nothing yet)
        self.last_error: str | None = None
        self.connected_to: str | None = None
        self.listed_at: float | None = None
        self._problems: set[str] = set()
        self._attested: set[str] = set()  # task ids that got their first certificate (one each)
        self._attest_lock = threading.Lock()
        self._publish = None
        # The state (apps, pods, what is dirty, the translated parts) is shared by the follower,
        # which applies events, and the publisher, which translates and publishes: a publish
        # (the plane's apply) never holds up reading the stream, and publishes coalesce.
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._publisher: threading.Thread | None = None
        self._attempt_started = 0.0
        self._stop = threading.Event()
        self._connection: http.client.HTTPConnection | None = None
        self._thread: threading.Thread | None = None

    # The registry interface.

    def start(self, publish) -> None:
        self._publish = publish
        self._publisher = threading.Thread(target=self._publish_changes, name=f"registry-{self.name}-publish", daemon=True)
        self._publisher.start()
        self._thread = threading.Thread(target=self._follow, name=f"registry-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._close_stream()
        for thread in (self._thread, self._publisher):
            if thread is not None:
                thread.join(timeout=5)

    def _publish_changes(self) -> None:
        """The publisher thread: publish whenever the follower changed the state."""
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.publish()
            except Exception:  # a bug must not end the publishing: the next change tries again
                LOG.exception("%s: translating Marathon's apps and pods failed; keeping the last published resources", self.name)

    def _changed(self) -> None:
        """The state changed: wake the publisher (started), or publish now (driven directly, in tests)."""
        if self._publisher is not None:
            self._wake.set()
        else:
            self.publish()

    def status(self) -> dict:
        return {"name": self.name, "connected_to": self.connected_to, "listed_at": self.listed_at, "last_error": self.last_error,
                "apps": len(self.apps), "pods": len(self.pods), "skipped": sorted(self._problems)}

    # Identity: a task's first certificate (the CSR service asks).

    def attest_task(self, proxy_id: str, task_id: str, peer: str) -> None:
        """Returns when Marathon vouches for the caller: the task runs now (asked afresh, not
        from the followed state), belongs to the app or pod whose task the proxy is (the
        proxy's name carries the task's UUID), and runs on the host the call comes from; and
        the task has not had its first certificate yet (one per task: renewals go over mTLS).
        MarathonTaskRefused saying which of these fails."""
        name, dummy, namespace = proxy_id.rpartition(".")
        run_spec_id, service = self._run_spec_of(namespace, name)
        if workload_name(service, task_id) != name:
            raise MarathonTaskRefused(f"task {task_id} is not the task of proxy {proxy_id}")
        try:
            addresses = self._running_task_addresses(run_spec_id, task_id)
        except MarathonUnavailable as failure:
            raise MarathonTaskRefused(f"cannot ask Marathon about task {task_id}: {failure}") from None
        if peer not in addresses:
            raise MarathonTaskRefused(f"task {task_id} runs on {', '.join(sorted(addresses)) or 'no known address'}, "
                                      f"the call comes from {peer or 'an unknown address'}")
        with self._attest_lock:
            if task_id in self._attested:
                raise MarathonTaskRefused(f"task {task_id} already has its first certificate (renew over mTLS with it)")
            self._attested.add(task_id)

    def _run_spec_of(self, namespace: str, name: str) -> tuple[str, str]:
        """(app or pod id, service) of the run spec that published the WorkloadEntry namespace/name."""
        for run_spec_id, part in list(self._parts.items()):
            if part.service is not None and any(w.kind == "WorkloadEntry" and (w.namespace, w.name) == (namespace, name) for w in part.workloads):
                return run_spec_id, part.service.name
        raise MarathonTaskRefused(f"Marathon has no task for the WorkloadEntry {namespace}/{name}")

    def _running_task_addresses(self, run_spec_id: str, task_id: str) -> set[str]:
        """The addresses a running task calls from (its agent's, its container's); empty when
        Marathon does not list it as running."""
        quoted = urllib.parse.quote(run_spec_id)
        status = self.client.get_json(f"/v2/pods{quoted}::status")
        if isinstance(status, dict):
            for instance in status.get("instances") or []:
                for container in instance.get("containers") or []:
                    if container.get("containerId") == task_id and container.get("status") == "TASK_RUNNING":
                        given = [a for n in instance.get("networks") or [] for a in n.get("addresses") or []]
                        return host_addresses(instance.get("agentHostname", "")) | set(given)
            return set()
        answer = self.client.get_json(f"/v2/apps{quoted}/tasks")
        for task in (answer or {}).get("tasks") or [] if isinstance(answer, dict) else []:
            if task.get("id") == task_id and task.get("state") == "TASK_RUNNING":
                return host_addresses(task.get("host", "")) | {a.get("ipAddress") for a in task.get("ipAddresses") or [] if a.get("ipAddress")}
        return set()

    # Following.

    def _follow(self) -> None:
        delay = RETRY_SECONDS
        while not self._stop.is_set():
            try:
                self._follow_once()
                delay = RETRY_SECONDS
            except MarathonUnavailable as failure:
                if self.connected_to is not None and self.listed_at is not None and self.listed_at >= self._attempt_started:
                    delay = RETRY_SECONDS  # it worked until now: a first retry soon, backing off only while it fails
                self._failed(f"{failure}; keeping the last good endpoints, retrying in {delay:.1f}s")
                self.client.next_url()
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, MAX_RETRY_SECONDS)
            except Exception:  # a bug must not end the registry: the plane keeps the last good endpoints
                LOG.exception("%s: following Marathon failed; keeping the last good endpoints", self.name)
                if self._stop.wait(delay):
                    return
            finally:
                self._close_stream()
                self.connected_to = None

    def _failed(self, message: str) -> None:
        self.last_error = message
        LOG.error("%s: %s", self.name, message)

    def _follow_once(self) -> None:
        """Open the stream, list everything, then apply events until the stream ends."""
        self._attempt_started = time.time()
        connection, response, url = self.client.open_events(self.stall_seconds)
        self._connection = connection
        self.connected_to = url
        self.relist()
        LOG.info("%s: following %s (%d apps, %d pods)", self.name, url, len(self.apps), len(self.pods))
        parser = EventStreamParser()
        while not self._stop.is_set():
            try:
                chunk = response.read1(READ_BYTES)
            except (socket.timeout, TimeoutError):
                raise MarathonUnavailable(f"event stream {url} silent for {self.stall_seconds:g}s (no event, no keep-alive): "
                                          "reconnecting and listing again") from None
            except (OSError, http.client.HTTPException, ValueError) as error:
                if self._stop.is_set():
                    return
                raise MarathonUnavailable(f"event stream {url}: {_reason(error)}: reconnecting and listing again") from None
            if not chunk:
                if self._stop.is_set():
                    return
                raise MarathonUnavailable(f"event stream {url} closed by Marathon: reconnecting and listing again")
            events = parser.feed(chunk)
            if events:
                self.apply_events(events)

    def _close_stream(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and connection.sock is not None:
            try:
                connection.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            connection.close()

    def relist(self) -> None:
        """Every app with its tasks and every pod's status, then publish."""
        apps = self.client.get_json("/v2/apps?embed=apps.tasks&embed=apps.deployments")
        pods = self.client.get_json("/v2/pods/::status")
        if not isinstance(apps, dict) or not isinstance(apps.get("apps"), list) or not all(isinstance(a, dict) for a in apps["apps"]):
            raise MarathonUnavailable(f"GET {self.client.url}/v2/apps: not Marathon's answer (expected {{\"apps\": [...]}})")
        if pods is None:  # a Marathon older than pods (before 1.4)
            pods = []
        if not isinstance(pods, list) or not all(isinstance(p, dict) for p in pods):
            raise MarathonUnavailable(f"GET {self.client.url}/v2/pods/::status: not Marathon's answer (expected a list of pod statuses)")
        with self._lock:
            self.apps = {a.get("id", ""): a for a in apps["apps"]}
            self.pods = {p.get("id", ""): p for p in pods}
            self._dirty = set(self._parts) | set(self.apps) | set(self.pods)
            self._whole = True
        self.listed_at = time.time()
        self.last_error = None
        self._changed()

    def apply_events(self, events: list[tuple[str, str]]) -> None:
        """Apply a batch of events to the state: what the events carry in place, then each app
        or pod they name that must be fetched again, once however many events named it."""
        to_fetch: dict[str, None] = {}
        with self._lock:
            for event_type, data in events:
                try:
                    payload = json.loads(data)
                except ValueError as error:
                    self._failed(f"event stream {self.connected_to}: {event_type} is not JSON ({error}): listing again")
                    self.relist()
                    return
                if isinstance(payload, dict):
                    to_fetch.update(dict.fromkeys(self.apply_event(event_type, payload)))
        for run_spec_id in to_fetch:
            self.refetch(run_spec_id)
        self._changed()

    def apply_event(self, event_type: str, event: dict) -> list:
        """Apply one event; the ids of the apps or pods to fetch again for it."""
        if event_type == "status_update_event":
            return self._task_status(event)
        if event_type == "app_terminated_event":
            self.apps.pop(event.get("appId"), None)
            self.pods.pop(event.get("appId"), None)
            self._dirty.add(event.get("appId"))
            return []
        if event_type in REFETCH_EVENTS:
            return self._instance_event(event_type, event)
        if event_type in DEPLOYMENT_EVENTS:
            return [action.get("app") or action.get("pod") for step in (event.get("plan") or {}).get("steps") or []
                    for action in step.get("actions") or []]
        if event_type == "api_post_event":
            return [(event.get("appDefinition") or {}).get("id")]
        if event_type in ("pod_created_event", "pod_updated_event", "pod_deleted_event"):
            return [str(event.get("uri", "")).partition("/v2/pods")[2].split("::")[0] or None]
        return []

    def _instance_event(self, event_type: str, event: dict) -> list:
        """Health and instance events. An app's tasks change by their status updates, which
        carry state, host and ports; an app with one health check changes health by these
        events, which carry it. Anything else (a pod, an app with several checks or not known
        yet) is fetched again."""
        run_spec_id = event.get("appId") or event.get("runSpecId")
        app = self.apps.get(run_spec_id)
        if app is None or len(app.get("healthChecks") or []) > 1:
            return [run_spec_id]
        if event_type in ("health_status_changed_event", "instance_health_changed_event"):
            alive = event.get("alive") if "alive" in event else event.get("healthy")
            if not isinstance(alive, bool) or not self._set_health(app, str(event.get("instanceId", "")), alive):
                return [run_spec_id]
            self._dirty.add(run_spec_id)
        elif event_type in ("unknown_instance_terminated_event",):
            return [run_spec_id]
        return []

    @staticmethod
    def _set_health(app: dict, instance_id: str, alive: bool) -> bool:
        """The health of the app's task of that instance (the same UUID), in place; False when it has no such task."""
        found = _UUID.findall(instance_id)
        if not found or not app.get("healthChecks"):
            return False
        for task in app.get("tasks") or []:
            if found[-1] in _UUID.findall(task.get("id", "")):
                task["healthCheckResults"] = [{"alive": alive, "instanceId": instance_id}]
                return True
        return False

    def _task_status(self, event: dict) -> list:
        """An app's task changed state: update it in place (a task of a pod, or of an app not
        known yet: fetch its run spec)."""
        app = self.apps.get(event.get("appId"))
        if app is None:
            return [event.get("appId")]
        tasks = [t for t in app.get("tasks") or [] if t.get("id") != event.get("taskId")]
        if event.get("taskStatus") not in TERMINAL_TASK_STATES:
            previous = next((t for t in app.get("tasks") or [] if t.get("id") == event.get("taskId")), {})
            # Older Marathons send no ipAddresses, and "unknown" for a host not known yet: keep what was known.
            host = event.get("host") if event.get("host") not in (None, "", "unknown") else previous.get("host", "")
            tasks.append({**previous, "id": event.get("taskId"), "appId": event.get("appId"), "state": event.get("taskStatus"),
                          "host": host, "ports": event.get("ports") or previous.get("ports") or [],
                          "ipAddresses": event.get("ipAddresses") or previous.get("ipAddresses") or [], "version": event.get("version")})
        app["tasks"] = tasks
        self._dirty.add(event.get("appId"))
        return []

    def _translated(self) -> Update | None:
        """What to publish: after a list, every resource; else the resources of the apps and
        pods events touched that translate differently (ViewChanges); None when none does."""
        before: dict[str, RunSpecResources | None] = {}  # the parts that changed, as they were
        for run_spec_id in self._dirty:
            if run_spec_id in self.apps:
                part = app_resources(self.name, self.apps[run_spec_id], self.domain)
            elif run_spec_id in self.pods:
                part = pod_resources(self.name, self.pods[run_spec_id], self.domain)
            else:
                part = None
            if self._parts.get(run_spec_id) != part:
                before[run_spec_id] = self._parts.get(run_spec_id)
                if part is None:
                    del self._parts[run_spec_id]
                else:
                    self._parts[run_spec_id] = part
        self._dirty = set()
        if not before and not self._whole:
            return None
        services, included, problems = merged_services(self.name, list(self._parts.values()))
        for problem in sorted(set(problems) - self._problems):
            LOG.warning("%s", problem)
        self._problems = set(problems)
        if self._whole:
            resources, dummy = merged(self.name, list(self._parts.values()))
            self._view, self._included, self._whole = {r.key: r for r in resources}, set(included), False
            self._services = {service.key: service for service in services.values()}
            self.published = len(resources)
            LOG.info("%s: publishing %d services, %d workloads", self.name, len(services), len(resources) - len(services))
            return resources
        changes = self._changes(before, services, set(included))
        self.published = len(self._view)
        if not changes:
            return None
        LOG.info("%s: publishing %d changed resources", self.name, len(changes))
        return ViewChanges(changes)

    def _changes(self, before: dict[str, RunSpecResources | None], services: dict, included: set[str]) -> dict:
        """The published view's changes, by key (None: gone), and the view updated: the
        workloads of the parts that changed or came in or out, and the services."""
        changes: dict[tuple, object] = {}
        touched = sorted(before.keys() | (included ^ self._included))  # in a stable order: a problem is reported on the first
        for run_spec_id in touched:  # what was in goes first: what is in now overwrites it
            was = before[run_spec_id] if run_spec_id in before else self._parts.get(run_spec_id)
            if run_spec_id in self._included and was is not None:
                changes.update(dict.fromkeys((w.key for w in was.workloads), None))
        for run_spec_id in touched:
            now = self._parts.get(run_spec_id)
            if run_spec_id in included and now is not None:
                changes.update((w.key, w) for w in now.workloads)
        now_services = {service.key: service for service in services.values()}
        changes.update((key, None) for key in sorted(self._services.keys() - now_services.keys()))
        changes.update((key, service) for key, service in now_services.items() if self._services.get(key) is not service)
        self._services = now_services
        changes = {key: r for key, r in changes.items() if (self._view.get(key) != r if r is not None else key in self._view)}
        for key, resource in changes.items():
            if resource is None:
                del self._view[key]
            else:
                self._view[key] = resource
        self._included = included
        return changes

    def refetch(self, run_spec_id) -> None:
        """Fetch one app (with its tasks) or pod (its status) again; gone: removed."""
        if not isinstance(run_spec_id, str) or not run_spec_id.startswith("/"):
            return
        if run_spec_id not in self.pods:
            answer = self.client.get_json(f"/v2/apps{urllib.parse.quote(run_spec_id)}?embed=app.tasks")
            with self._lock:
                self._dirty.add(run_spec_id)
                if isinstance(answer, dict) and isinstance(answer.get("app"), dict):
                    self.apps[run_spec_id] = answer["app"]
                    return
                self.apps.pop(run_spec_id, None)
        status = self.client.get_json(f"/v2/pods{urllib.parse.quote(run_spec_id)}::status")
        with self._lock:
            self._dirty.add(run_spec_id)
            if isinstance(status, dict) and isinstance(status.get("spec"), dict):
                self.pods[run_spec_id] = status
            else:
                self.pods.pop(run_spec_id, None)

    def publish(self) -> None:
        """Translate the apps and pods events touched; publish what changed (all of it after a list)."""
        with self._lock:
            resources = self._translated()
        if resources is None:
            return
        try:
            self._publish(resources)
        except Exception:  # the plane's problem to report; the registry keeps following
            LOG.exception("%s: the control plane did not take the update", self.name)
            with self._lock:
                self._whole = True  # what it missed is in the next publish: the whole view
