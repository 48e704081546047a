"""The Marathon registry (serve/marathon.py) against the Marathon double (tests/fakes/marathon.py):
what it publishes when apps scale, tasks die or fail their health checks, the event stream
drops, stalls or is redirected, and Marathon answers 500, garbage or 401. Each change must be
published within a second of its event; a failure keeps the last published resources and
says what was wrong in one log line."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from meshwright.registry.inventory import ENDPOINT_ANNOTATION, NOT_READY
from meshwright.registry.marathon import mesh_resources
from meshwright.serve.marathon import EventStreamParser, MarathonRegistry, auth_from_files, basic_auth, token_auth
from meshwright.serve.registries import ViewChanges, view_after
from tests.fakes.marathon import MarathonDouble
from tests.harness import free_port

APP = {"id": "/shop/payment", "cmd": "./payment", "instances": 2, "labels": {"version": "v1"},
       "portDefinitions": [{"port": 0, "name": "http", "protocol": "tcp"}],
       "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/health", "portIndex": 0}]}
POD = {"id": "/shop/web", "containers": [{"name": "nginx", "resources": {"cpus": 0.1, "mem": 64},
                                          "endpoints": [{"name": "http", "containerPort": 80, "hostPort": 0}]}],
       "networks": [{"mode": "host"}], "scaling": {"kind": "fixed", "instances": 1}}
WITHIN = 1.0  # seconds from an event to its publication


class Published:
    """The registry's publish(): keeps the view after each publish (a whole list, or what changed)."""

    def __init__(self):
        self.lists: list[list] = []
        self.updates: list = []
        self.view: dict = {}
        self.changed = threading.Condition()

    def __call__(self, update):
        with self.changed:
            self.updates.append(update)
            self.view = view_after(self.view, update)
            self.lists.append(sorted(self.view.values(), key=lambda r: (r.kind != "ServiceEntry", r.namespace, r.name, r.kind)))
            self.changed.notify_all()

    def wait_for(self, predicate, timeout: float = WITHIN) -> list:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not (self.lists and predicate(self.lists[-1])):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"not published within {timeout}s; last: {endpoints(self.lists[-1]) if self.lists else None}")
                self.changed.wait(left)
            return self.lists[-1]


def endpoints(resources, service: str = "payment") -> dict[str, bool]:
    """address:port -> ready, of the service's WorkloadEntries."""
    return {f"{r.spec['address']}:{next(iter(r.spec['ports'].values()))}": r.annotations.get(ENDPOINT_ANNOTATION) != NOT_READY
            for r in resources if r.kind == "WorkloadEntry" and r.spec["labels"]["app"] == service}


def running(double: MarathonDouble, app_id: str = "/shop/payment") -> dict[str, bool]:
    """What Marathon says: address:port -> running and healthy, of the app's tasks."""
    return {f"{t['host']}:{t['ports'][0]}": t["state"] == "TASK_RUNNING" and all(r["alive"] for r in t.get("healthCheckResults") or [{"alive": False}])
            for t in double.cluster.tasks[app_id]}


@pytest.fixture
def double():
    server = MarathonDouble(heartbeat_seconds=0.2)
    server.cluster.put_app(APP, force=False)
    server.cluster.put_pod(POD, force=False)
    yield server
    server.stop()


@pytest.fixture
def follow():
    registries = []

    def start(urls, **options):
        published = Published()
        registry = MarathonRegistry(urls, name="marathon/test", **options)
        registry.start(published)
        registries.append(registry)
        return registry, published
    yield start
    for registry in registries:
        registry.stop()


def test_the_registry_publishes_every_app_and_pod_with_its_tasks(double, follow):
    _, published = follow([double.url])
    resources = published.wait_for(lambda r: len(endpoints(r)) == 2, timeout=5)
    assert sorted(r.ref for r in resources if r.kind == "ServiceEntry") == ["ServiceEntry/shop/payment", "ServiceEntry/shop/web"]
    assert endpoints(resources) == running(double)
    assert all(endpoints(resources).values())
    assert len(endpoints(resources, "web")) == 1


def test_scaling_up_and_down_is_published_within_a_second(double, follow):
    _, published = follow([double.url])
    published.wait_for(lambda r: len(endpoints(r)) == 2, timeout=5)
    double.cluster.scale("/shop/payment", 5)
    resources = published.wait_for(lambda r: endpoints(r) == running(double) and len(endpoints(r)) == 5)
    assert all(endpoints(resources).values())
    double.cluster.scale("/shop/payment", 1)
    published.wait_for(lambda r: endpoints(r) == running(double) and len(endpoints(r)) == 1)


def test_a_task_that_dies_or_fails_its_health_check_leaves_the_endpoints_within_a_second(double, follow):
    _, published = follow([double.url])
    published.wait_for(lambda r: len(endpoints(r)) == 2, timeout=5)
    first, second = double.cluster.tasks["/shop/payment"]
    double.cluster.set_health(first["id"], False)
    resources = published.wait_for(lambda r: endpoints(r) == running(double) and list(endpoints(r).values()).count(False) == 1)
    assert endpoints(resources)[f"{first['host']}:{first['ports'][0]}"] is False
    double.cluster.kill_task(second["id"], "TASK_FAILED")
    published.wait_for(lambda r: endpoints(r) == running(double) and len(endpoints(r)) == 1)
    double.cluster.set_health(first["id"], True)
    published.wait_for(lambda r: endpoints(r) == running(double) and all(endpoints(r).values()))


def test_a_dropped_stream_is_reopened_and_what_changed_meanwhile_is_listed(double, follow, caplog):
    caplog.set_level(logging.INFO, "meshwright.serve.marathon")
    _, published = follow([double.url])
    published.wait_for(lambda r: len(endpoints(r)) == 2, timeout=5)
    double.fail_next("/v2/events", 503, b"", times=2)  # the next reconnects fail: changes happen unseen
    double.drop_streams()
    double.cluster.kill_task(double.cluster.tasks["/shop/payment"][0]["id"])
    double.cluster.scale("/shop/payment", 3)
    published.wait_for(lambda r: endpoints(r) == running(double) and len(endpoints(r)) == 3, timeout=5)
    assert "closed by Marathon: reconnecting and listing again" in caplog.text
    assert "HTTP 503" in caplog.text


def test_a_stalled_stream_without_keep_alive_is_detected_and_reopened(double, follow, caplog):
    _, published = follow([double.url], stall_seconds=0.6)
    published.wait_for(lambda r: len(endpoints(r)) == 2, timeout=5)
    double.stalled.set()  # the connection stays open; nothing comes, no heartbeat either
    time.sleep(0.1)
    double.cluster.scale("/shop/payment", 3)  # this event is lost with the stalled stream
    resources = published.wait_for(lambda r: len(endpoints(r)) == 3, timeout=3)  # the stall detected, listed again
    double.stalled.clear()
    assert endpoints(resources) == running(double)
    assert "silent for 0.6s (no event, no keep-alive): reconnecting and listing again" in caplog.text


def test_marathon_answering_500_or_garbage_keeps_the_last_endpoints_and_says_so(double, follow, caplog):
    registry, published = follow([double.url])
    published.wait_for(lambda r: len(endpoints(r)) == 2, timeout=5)
    published_before = len(published.lists)
    double.fail_next("/v2/apps", 500, b'{"message":"internal error"}', times=1)
    double.fail_next("/v2/pods", 200, b'{"apps": [garbage', times=1)
    double.drop_streams()
    deadline = time.monotonic() + 5
    while not ("not JSON" in caplog.text and "HTTP 500" in caplog.text) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert 'GET http://127.0.0.1:%d/v2/apps?embed=apps.tasks&embed=apps.deployments: HTTP 500 {"message":"internal error"}' % double.port in caplog.text
    assert "/v2/pods/::status: the answer is not JSON (Expecting value: line 1 column 11 (char 10))" in caplog.text
    assert "keeping the last good endpoints" in caplog.text
    assert len(published.lists) == published_before  # nothing published from the failed lists
    double.cluster.scale("/shop/payment", 3)
    published.wait_for(lambda r: endpoints(r) == running(double) and len(endpoints(r)) == 3, timeout=5)
    assert registry.status()["last_error"] is None


def test_an_unreachable_marathon_hands_over_to_the_next_url_and_a_standby_redirects_to_the_leader(double, follow):
    standby = MarathonDouble(standby_of=double)
    try:
        dead = f"http://127.0.0.1:{free_port()}"
        registry, published = follow([dead, standby.url])
        published.wait_for(lambda r: len(endpoints(r)) == 2, timeout=5)
        assert registry.status()["connected_to"] == f"{double.url}/v2/events"  # the standby's 302, followed
        assert ("GET", "/v2/events") in standby.requests
        double.cluster.scale("/shop/payment", 3)
        published.wait_for(lambda r: endpoints(r) == running(double) and len(endpoints(r)) == 3)
    finally:
        standby.stop()


def test_basic_auth_and_tokens_are_sent_and_a_refusal_is_named(follow, caplog, tmp_path):
    secured = MarathonDouble(credentials=("mesh", "s3cret"), token="t0ken")
    try:
        secured.cluster.put_app(APP, force=False)
        _, published = follow([secured.url], authorization=basic_auth("mesh", "s3cret"))
        published.wait_for(lambda r: len(endpoints(r)) == 2, timeout=5)
        token_file = tmp_path / "token"
        token_file.write_text("t0ken\n")
        assert auth_from_files(None, str(token_file)) == token_auth("t0ken")
        _, with_token = follow([secured.url], authorization=auth_from_files(None, str(token_file)))
        with_token.wait_for(lambda r: len(endpoints(r)) == 2, timeout=5)
        follow([secured.url], authorization=basic_auth("mesh", "wrong"))
        deadline = time.monotonic() + 5
        while "HTTP 401" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 'HTTP 401 {"message": "Invalid username or password."} (check --marathon-credentials or --marathon-token-file)' in caplog.text
    finally:
        secured.stop()


def test_the_credentials_file_must_hold_user_and_password(tmp_path):
    path = tmp_path / "credentials"
    path.write_text("mesh:pa:ss\n")
    assert auth_from_files(str(path), None) == basic_auth("mesh", "pa:ss")
    path.write_text("mesh\n")
    with pytest.raises(ValueError, match="credentials: expected one line user:password"):
        auth_from_files(str(path), None)


def test_the_event_parser_reads_crlf_cr_and_lf_and_skips_keep_alives_split_across_reads():
    parser = EventStreamParser()
    stream = (b"event: event_stream_attached\r\ndata: {\"remoteAddress\":\"127.0.0.1\"}\r\n\r\n"
              b"\r\n"  # heartbeat
              b"event: status_update_event\rdata: {\"a\":1}\r\r"
              b"event: app_terminated_event\ndata: {\"appId\":\"/x\"}\n\n")
    whole = parser.feed(stream)
    split = EventStreamParser()
    pieces = [split.feed(stream[i:i + 1]) for i in range(len(stream))]  # one byte a read: CR and LF apart
    assert whole == [event for piece in pieces for event in piece] == [
        ("event_stream_attached", '{"remoteAddress":"127.0.0.1"}'),
        ("status_update_event", '{"a":1}'),
        ("app_terminated_event", '{"appId":"/x"}')]


def test_what_is_published_after_many_events_equals_translating_marathon_whole(double, follow):
    """The registry translates only the apps and pods events touch: after a run of changes,
    its resources are exactly those of Marathon's state translated from scratch."""
    registry, published = follow([double.url])
    published.wait_for(lambda r: len(endpoints(r)) == 2, timeout=5)
    cluster = double.cluster
    cluster.put_app({**APP, "id": "/shop/cart", "instances": 1}, force=False)
    cluster.scale("/shop/payment", 4)
    cluster.kill_task(cluster.tasks["/shop/payment"][0]["id"], replace=True)
    cluster.set_health(cluster.tasks["/shop/payment"][1]["id"], False)
    cluster.put_pod({**POD, "scaling": {"kind": "fixed", "instances": 3}}, force=False)
    cluster.delete_app("/shop/cart", force=True)

    def whole():
        with cluster.lock:
            apps = [cluster.app_info(app_id, with_tasks=True) for app_id in cluster.apps]
            pods = [cluster.pod_status(pod_id) for pod_id in cluster.pods]
        return [(r.ref, r.spec, r.metadata) for r in mesh_resources("marathon/test", apps, pods)[0]]
    published.wait_for(lambda r: [(x.ref, x.spec, x.metadata) for x in r] == whole(), timeout=2)


def test_a_status_update_in_an_older_marathons_shape_keeps_what_was_known_of_the_task():
    """Marathon before 1.4 sends no ipAddresses (and "unknown" for a host it does not know):
    a container-network task stays reachable at the address listed before."""
    registry = MarathonRegistry(["http://127.0.0.1:1"], name="marathon/test")
    published = Published()
    registry._publish = published
    app = {"id": "/shop/api", "networks": [{"mode": "container", "name": "dcos"}],
           "container": {"portMappings": [{"containerPort": 8080, "name": "http", "servicePort": 10200}]},
           "tasks": [{"id": "shop_api.instance-c7c311a4-b669-11e6-a48f-0ea4f4b1778c._app.1", "appId": "/shop/api", "state": "TASK_STAGING",
                      "host": "10.0.2.150", "ports": [], "ipAddresses": [{"ipAddress": "9.0.6.3", "protocol": "IPv4"}]}]}
    registry.apps = {"/shop/api": app}
    registry._dirty = {"/shop/api"}
    registry.publish()
    event = ('{"eventType":"status_update_event","timestamp":"2015-09-30T12:47:11.286Z","slaveId":"S0",'
             '"taskId":"shop_api.instance-c7c311a4-b669-11e6-a48f-0ea4f4b1778c._app.1","taskStatus":"TASK_RUNNING",'
             '"appId":"/shop/api","host":"unknown","ports":[],"version":"2015-09-11T22:11:03.156Z"}')
    registry.apply_events([("status_update_event", event)])
    assert isinstance(published.updates[-1], ViewChanges)  # after the first publish, what changed
    [workload] = [r for r in published.lists[-1] if r.kind == "WorkloadEntry"]
    assert (workload.spec["address"], workload.spec["ports"], workload.annotations) == ("9.0.6.3", {"http": 8080}, {})
