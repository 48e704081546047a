"""The Marathon double answers as Marathon does (the shapes of Marathon's RAML, examples and
captured responses): status codes, error bodies, headers, the 1.5 shape of apps sent in 1.4
fields, deployments and locking, and the event stream's framing. The registry, the injection
and the Ansible module are tested against it, so it must not be kinder than Marathon."""

from __future__ import annotations

import http.client
import json
import socket

import pytest

from tests.fakes.marathon import MarathonDouble

LEGACY_APP = {"id": "/foo", "cmd": "sleep 1000", "instances": 2, "cpus": 0.1, "mem": 16,
              "container": {"type": "DOCKER", "docker": {"image": "python:3", "network": "BRIDGE",
                                                         "portMappings": [{"containerPort": 80, "hostPort": 0, "servicePort": 0, "name": "http"}]}}}


@pytest.fixture
def double():
    server = MarathonDouble(heartbeat_seconds=0.2)
    yield server
    server.stop()


def call(double, method: str, path: str, body=None, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", double.port, timeout=5)
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    connection.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    response = connection.getresponse()
    raw = response.read()
    connection.close()
    return response.status, dict(response.getheaders()), json.loads(raw) if raw.startswith((b"{", b"[")) else raw


def test_creating_an_app_answers_201_with_location_and_deployment_and_a_second_time_409(double):
    status, headers, body = call(double, "POST", "/v2/apps", LEGACY_APP)
    assert status == 201
    assert headers["Location"] == f"{double.url}/v2/apps/foo"
    assert body["deployments"] == [{"id": headers["Marathon-Deployment-Id"]}]
    assert (body["tasksRunning"], body["tasksStaged"]) == (0, 0)
    assert call(double, "POST", "/v2/apps", LEGACY_APP)[::2] == (409, {"message": "An app with id [/foo] already exists."})


def test_an_app_sent_in_1_4_fields_comes_back_in_1_5_shape_with_service_ports_and_tasks(double):
    call(double, "POST", "/v2/apps", LEGACY_APP)
    status, _, body = call(double, "GET", "/v2/apps/foo?embed=app.tasks")
    app = body["app"]
    assert status == 200
    assert app["networks"] == [{"mode": "container/bridge"}]
    assert "network" not in app["container"]["docker"] and "portDefinitions" not in app
    [mapping] = app["container"]["portMappings"]
    assert mapping["servicePort"] >= 10000 and mapping["hostPort"] == 0
    assert len(app["tasks"]) == 2 and app["tasksRunning"] == 2
    task = app["tasks"][0]
    assert set(task) >= {"id", "appId", "host", "ports", "ipAddresses", "state", "stagedAt", "startedAt", "version", "slaveId"}
    assert task["state"] == "TASK_RUNNING" and len(task["ports"]) == 1 and task["ipAddresses"][0]["protocol"] == "IPv4"
    listed = call(double, "GET", "/v2/apps")[2]["apps"][0]
    assert "tasks" not in listed and listed["deployments"] == []  # tasks only when embedded


def test_bad_definitions_get_marathons_400_and_422_bodies(double):
    assert call(double, "POST", "/v2/apps", {"id": 5, "cmd": "x"})[::2] == (
        400, {"message": "Invalid JSON", "details": [{"path": "/id", "errors": ["error.expected.jsstring"]}]})
    status, _, body = call(double, "POST", "/v2/apps", b"{not json")
    assert status == 400 and body["message"] == "Invalid JSON" and isinstance(body["details"], str)
    assert call(double, "POST", "/v2/apps", {"id": "/bar", "cmd": "x", "upgradeStrategy": {"minimumHealthCapacity": 2}})[::2] == (
        422, {"message": "Object is not valid", "details": [{"path": "/upgradeStrategy/minimumHealthCapacity", "errors": ["is greater than 1"]}]})
    status, _, body = call(double, "POST", "/v2/apps", {"id": "/Bad_Id", "cmd": "x"})
    assert status == 422 and body["details"][0]["path"] == "/id"


def test_unknown_apps_and_pods_get_404_with_marathons_messages(double):
    assert call(double, "GET", "/v2/apps/nope")[::2] == (404, {"message": "App '/nope' does not exist"})
    assert call(double, "GET", "/v2/pods/nope::status")[::2] == (404, {"message": "Pod '/nope' does not exist"})
    assert call(double, "GET", "/v2/pods/nope")[::2] == (404, {"message": '{"message": "pod with /nope does not exist"}'})
    assert call(double, "GET", "/v2/nothing")[::2] == (500, {"message": "URI not found"})


def test_a_change_to_an_app_in_a_deployment_is_409_locked_unless_forced(double):
    call(double, "POST", "/v2/apps", LEGACY_APP)
    double.cluster.hold_deployments = True
    status, headers, body = call(double, "PUT", "/v2/apps/foo", {**LEGACY_APP, "instances": 3})
    assert status == 200 and set(body) == {"version", "deploymentId"} and headers["Marathon-Deployment-Id"] == body["deploymentId"]
    [deployment] = call(double, "GET", "/v2/deployments")[2]
    assert (deployment["id"], deployment["affectedApps"], deployment["steps"]) == (
        body["deploymentId"], ["/foo"], [{"actions": [{"action": "ScaleApplication", "app": "/foo"}]}])
    status, _, locked = call(double, "PUT", "/v2/apps/foo", {**LEGACY_APP, "instances": 4})
    assert status == 409
    assert locked == {"message": "App is locked by one or more deployments. Override with the option '?force=true'. "
                                 "View details at '/v2/deployments/<DEPLOYMENT_ID>'.", "deployments": [{"id": body["deploymentId"]}]}
    assert call(double, "PUT", "/v2/apps/foo?force=true", {**LEGACY_APP, "instances": 4})[0] == 200


def test_cancelling_a_deployment_rolls_back_and_force_only_stops_it(double):
    call(double, "POST", "/v2/apps", LEGACY_APP)
    double.cluster.hold_deployments = True
    deployment = call(double, "PUT", "/v2/apps/foo", {**LEGACY_APP, "cmd": "sleep 2000"})[2]["deploymentId"]
    status, _, rollback = call(double, "DELETE", f"/v2/deployments/{deployment}")
    assert status == 200 and set(rollback) == {"deploymentId", "version"}
    double.cluster.finish_deployment(rollback["deploymentId"])
    assert call(double, "GET", "/v2/apps/foo")[2]["app"]["cmd"] == "sleep 1000"
    assert call(double, "DELETE", "/v2/deployments/unknown")[::2] == (404, {"message": "DeploymentPlan unknown does not exist"})


def test_pods_are_created_201_shown_with_status_and_deleted_202(double):
    pod = {"id": "/web", "containers": [{"name": "nginx", "resources": {"cpus": 0.1, "mem": 64},
                                         "endpoints": [{"name": "http", "containerPort": 80, "hostPort": 0}]}],
           "networks": [{"mode": "container", "name": "dcos"}], "scaling": {"kind": "fixed", "instances": 2}}
    status, headers, body = call(double, "POST", "/v2/pods", pod)
    assert status == 201 and "Marathon-Deployment-Id" in headers and body["id"] == "/web"
    [status_body] = call(double, "GET", "/v2/pods/::status")[2]
    assert status_body["status"] == "STABLE" and len(status_body["instances"]) == 2
    instance = status_body["instances"][0]
    assert instance["networks"][0]["addresses"] and instance["containers"][0]["endpoints"][0]["allocatedHostPort"] > 0
    assert instance["id"].startswith("web.instance-")
    assert call(double, "DELETE", "/v2/pods/web")[::2] == (202, b"")


def read_stream(double, path: str = "/v2/events", accept: str = "text/event-stream", size: int = 4096, until: bytes = b"}\r\n\r\n\r\n") -> tuple[int, bytes]:
    """The status and the bytes of a GET, read until `until` (the first event and a heartbeat) or size bytes."""
    sock = socket.create_connection(("127.0.0.1", double.port), timeout=2)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\n\r\n".encode())
    data = b""
    try:
        while len(data) < size and until not in data and not (b"\r\n\r\n" in data and not data.startswith(b"HTTP/1.1 200")):
            chunk = sock.recv(size)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        pass
    sock.close()
    return int(data.split(b" ", 2)[1]), data


def test_the_event_stream_needs_its_accept_header_and_is_framed_as_jetty_frames_it(double):
    assert read_stream(double, accept="*/*")[0] == 405
    status, data = read_stream(double)
    head, _, body = data.partition(b"\r\n\r\n")
    assert status == 200 and b"Content-Type: text/event-stream;charset=UTF-8" in head and b"Connection: close" in head
    first, _, rest = body.partition(b"\r\n\r\n")
    event, data_line = first.split(b"\r\n")
    assert event == b"event: event_stream_attached"
    attached = json.loads(data_line[len(b"data: "):])
    assert attached["remoteAddress"] == "127.0.0.1" and attached["eventType"] == "event_stream_attached"
    assert attached["timestamp"].endswith("Z") and len(attached["timestamp"]) == 24
    assert rest.startswith(b"\r\n")  # the heartbeat: a bare CRLF, no ':' comment, no id
    assert b"id:" not in body and b":\r\n" not in body


def test_a_standby_redirects_the_stream_to_the_leader(double):
    standby = MarathonDouble(standby_of=double)
    try:
        status, data = read_stream(standby, size=200)
        assert status == 302 and f"Location: {double.url}/v2/events".encode() in data
    finally:
        standby.stop()


def test_credentials_are_checked_with_marathons_401(double):
    secured = MarathonDouble(credentials=("mesh", "pw"))
    try:
        assert call(secured, "GET", "/v2/apps")[::2] == (401, {"message": "Invalid username or password."})
        assert call(secured, "GET", "/v2/apps", headers={"Authorization": "Basic bWVzaDpwdw=="})[0] == 200
    finally:
        secured.stop()
