# -*- coding: utf-8 -*-
"""Marathon's REST API for the mesh_marathon_app module: find, compare, put and delete an app
or a pod, wait for its deployment, roll a failed one back. Standard library only.

Idempotence compares meaning: the desired definition against the one Marathon holds, on the
fields the definition gives (Marathon fills in defaults and adds server-managed fields such as
`version`, `tasks` and counts; a service port left 0 is "any" and matches the assigned one).
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse

from ansible.module_utils.urls import open_url

SERVER_MANAGED = frozenset(("version", "versionInfo", "tasks", "tasksStaged", "tasksRunning", "tasksHealthy", "tasksUnhealthy",
                            "deployments", "lastTaskFailure", "taskStats", "readinessCheckResults"))
POLL_SECONDS = 0.25


class MarathonError(Exception):
    """A failure worth a fail_json: the message says what, for which app."""

    def __init__(self, message: str, status: int | None = None, body=None):
        super().__init__(message)
        self.status, self.body = status, body


class Marathon:
    """Requests to the first of urls that answers (an HA Marathon's instances)."""

    def __init__(self, urls: list[str], user: str | None = None, password: str | None = None, token: str | None = None,
                 timeout: float = 30):
        self.urls = [url.rstrip("/") for url in urls]
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"token={token}"
        elif user:
            self.headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password or ''}".encode()).decode()

    def request(self, method: str, path: str, body=None) -> tuple[int, dict, object]:
        """(status, headers, JSON body or None); connection failures try the next URL."""
        failures = []
        data = None if body is None else json.dumps(body).encode()
        for url in self.urls:
            try:
                with open_url(url + path, data=data, method=method, headers=self.headers, timeout=self.timeout) as response:
                    return response.status, dict(response.headers), _json(response.read())
            except urllib.error.HTTPError as error:
                status, payload = error.code, _json(error.read())
                if status in (502, 503):  # no leader, or unavailable: the next instance may answer
                    failures.append(f"{url}: HTTP {status}")
                    continue
                return status, dict(error.headers), payload
            except (OSError, ValueError) as error:
                failures.append(f"{url}: {getattr(error, 'reason', error)}")
        raise MarathonError(f"no Marathon answered {method} {path}: " + "; ".join(failures))


def _json(raw: bytes):
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return {"message": raw[:200].decode("utf-8", "replace")}


def is_pod(definition: dict) -> bool:
    return "containers" in definition


def run_spec_id(definition: dict) -> str:
    run_id = definition.get("id")
    if not isinstance(run_id, str) or not run_id.strip("/"):
        raise MarathonError("definition.id: an app or pod needs an id such as /shop/payment")
    return "/" + run_id.strip("/")


def resource_path(definition: dict) -> str:
    return ("/v2/pods" if is_pod(definition) else "/v2/apps") + urllib.parse.quote(run_spec_id(definition))


def refusal(what: str, status: int, body) -> MarathonError:
    """Marathon's error body as one message: its message and every detail path."""
    body = body if isinstance(body, dict) else {}
    details = body.get("details")
    if isinstance(details, list):
        text = "; ".join(f"{d.get('path', '/')}: {', '.join(d.get('errors') or [])}" for d in details if isinstance(d, dict))
    else:
        text = str(details or "")
    message = body.get("message", "")
    return MarathonError(f"Marathon refused {what} (HTTP {status}): {message}{': ' + text if text else ''}", status, body)


def contains(desired, actual) -> bool:
    """Whether actual holds what desired says (dict keys desired gives; lists item by item; a
    port number 0 matches any assigned one)."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(
            (key in ("servicePort", "port", "hostPort") and value == 0 and key in actual) or contains(value, actual.get(key))
            for key, value in desired.items() if key not in SERVER_MANAGED)
    if isinstance(desired, list):
        return isinstance(actual, list) and len(desired) == len(actual) and all(contains(d, a) for d, a in zip(desired, actual))
    return desired == actual


def without_server_fields(definition: dict | None) -> dict | None:
    if definition is None:
        return None
    return {key: value for key, value in definition.items() if key not in SERVER_MANAGED}


class RunSpecs:
    """find / put / delete / wait for one app or pod; what the module's runner calls."""

    def __init__(self, marathon: Marathon, wait_timeout: float, on_locked: str = "wait", sleep=time.sleep, clock=time.monotonic):
        self.marathon, self.wait_timeout, self.on_locked = marathon, wait_timeout, on_locked
        self.sleep, self.clock = sleep, clock

    def find(self, definition: dict) -> dict | None:
        status, dummy, body = self.marathon.request("GET", resource_path(definition))
        if status == 404:
            return None
        if status != 200 or not isinstance(body, dict):
            raise refusal(f"reading {run_spec_id(definition)}", status, body)
        return body.get("app", body) if not is_pod(definition) else body

    def put(self, definition: dict, force: bool) -> str:
        """Create or update; the deployment's id. A 409 (locked) waits for the deployments
        holding it (on_locked=wait) or fails naming them."""
        what = run_spec_id(definition)
        deadline = self.clock() + self.wait_timeout
        while True:
            path = resource_path(definition) + ("?force=true" if force else "")
            status, headers, body = self.marathon.request("PUT", path, definition)
            if status in (200, 201):
                return _deployment_id(headers, body)
            if status == 409 and isinstance(body, dict) and body.get("deployments"):
                locking = [d.get("id") for d in body["deployments"]]
                if self.on_locked == "fail":
                    raise MarathonError(f"{what} is locked by deployment {', '.join(locking)} (on_locked=fail; wait for it, or force=true)", status, body)
                if self.clock() > deadline:
                    raise MarathonError(f"{what} stayed locked by deployment {', '.join(locking)} for {self.wait_timeout:g}s", status, body)
                self.wait_for_deployments(locking, deadline)
                continue
            raise refusal(f"{'the pod' if is_pod(definition) else 'the app'} {what}", status, body)

    def delete(self, definition: dict) -> str | None:
        status, headers, body = self.marathon.request("DELETE", resource_path(definition))
        if status == 404:
            return None
        if status not in (200, 202):
            raise refusal(f"deleting {run_spec_id(definition)}", status, body)
        return headers.get("Marathon-Deployment-Id") or (body or {}).get("deploymentId")

    def running_deployments(self) -> set[str]:
        status, dummy, body = self.marathon.request("GET", "/v2/deployments")
        if status != 200 or not isinstance(body, list):
            raise refusal("listing deployments", status, body)
        return {d.get("id") for d in body if isinstance(d, dict)}

    def wait_for_deployments(self, ids: list[str], deadline: float) -> bool:
        """Wait until none of ids is running; False when the deadline came first."""
        while set(ids) & self.running_deployments():
            if self.clock() > deadline:
                return False
            self.sleep(POLL_SECONDS)
        return True

    def healthy(self, definition: dict) -> tuple[bool, str]:
        """Whether every instance of the new version runs (and passes its health checks)."""
        current = self.find(definition) or {}
        if is_pod(definition):
            status, dummy, body = self.marathon.request("GET", resource_path(definition) + "::status")
            state = (body or {}).get("status") if status == 200 else None
            return state == "STABLE", f"pod status {state}"
        wanted = current.get("instances", 0)
        running, healthy = current.get("tasksRunning", 0), current.get("tasksHealthy", 0)
        checked = bool(current.get("healthChecks"))
        ok = running >= wanted and (not checked or healthy >= wanted)
        return ok, f"{healthy if checked else running} of {wanted} tasks {'healthy' if checked else 'running'}"

    def wait_deployed(self, definition: dict, deployment: str) -> tuple[bool, str]:
        """Wait for the deployment to end and every instance to be up; (done, how it stands)."""
        deadline = self.clock() + self.wait_timeout
        if not self.wait_for_deployments([deployment], deadline):
            return False, f"deployment {deployment} still running after {self.wait_timeout:g}s ({self.healthy(definition)[1]})"
        while True:
            ok, how = self.healthy(definition)
            if ok:
                return True, how
            if self.clock() > deadline:
                return False, f"not healthy after {self.wait_timeout:g}s: {how}"
            self.sleep(POLL_SECONDS)


def _deployment_id(headers: dict, body) -> str:
    if headers.get("Marathon-Deployment-Id"):
        return headers["Marathon-Deployment-Id"]
    if isinstance(body, dict):
        return body.get("deploymentId") or next((d.get("id") for d in body.get("deployments") or []), "")
    return ""


def ensure(specs: RunSpecs, definition: dict, state: str, force: bool, wait: bool, rollback: bool, check_mode: bool) -> dict:
    """Bring the app or pod to state; the module's result (changed, diff, deployment...).
    A deployment that does not finish healthy is rolled back to the definition found before
    (with rollback) and raised as a MarathonError naming the app."""
    what = run_spec_id(definition)
    before = specs.find(definition)
    result = {"changed": False, "id": what, "kind": "pod" if is_pod(definition) else "app", "deployment_id": None,
              "diff": {"before": without_server_fields(before), "after": without_server_fields(before)}}
    if state == "absent":
        if before is None:
            return result
        result.update(changed=True, diff={"before": without_server_fields(before), "after": None})
        if not check_mode:
            result["deployment_id"] = specs.delete(definition)
            if wait and result["deployment_id"]:
                if not specs.wait_for_deployments([result["deployment_id"]], specs.clock() + specs.wait_timeout):
                    raise MarathonError(f"deleting {what}: deployment {result['deployment_id']} still running after {specs.wait_timeout:g}s")
        return result
    if before is not None and contains(definition, before):
        return result
    result.update(changed=True, diff={"before": without_server_fields(before), "after": definition})
    if check_mode:
        return result
    result["deployment_id"] = deployment = specs.put(definition, force)
    if not wait:
        return result
    done, how = specs.wait_deployed(definition, deployment)
    if done:
        return result
    if not rollback:
        raise MarathonError(f"the deployment of {what} failed: {how}; not rolled back (rollback=false)")
    if before is None:
        raise MarathonError(f"the deployment of {what} failed: {how}; it had no previous version to roll back to")
    previous = without_server_fields(before)
    back = specs.put(previous, force=True)  # force: it replaces the deployment still running
    restored, restored_how = specs.wait_deployed(previous, back)
    raise MarathonError(f"the deployment of {what} failed: {how}; rolled back to version {before.get('version')} "
                        f"({'done' if restored else 'not finished: ' + restored_how})")
