"""mesh_marathon_app against the Marathon double (tests/fakes/marathon.py): check mode, create,
an idempotent second run, an update that waits for its deployment, a 409 lock waited for or
failed on, a deployment that does not finish healthy rolled back and named, absent twice."""

from __future__ import annotations

import copy
import threading
import time

import pytest

from tests.fakes.marathon import MarathonDouble
from tests.modules.conftest import run_module

APP = {"id": "/shop/payment", "cmd": "./payment", "instances": 2, "cpus": 0.1, "mem": 64,
       "portDefinitions": [{"port": 0, "name": "http", "protocol": "tcp"}],
       "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/health", "portIndex": 0}], "labels": {"team": "payments"}}
POD = {"id": "/shop/web", "containers": [{"name": "nginx", "resources": {"cpus": 0.1, "mem": 64},
                                          "endpoints": [{"name": "http", "containerPort": 80, "hostPort": 0}]}],
       "networks": [{"mode": "container", "name": "dcos"}], "scaling": {"kind": "fixed", "instances": 1}}


@pytest.fixture
def marathon():
    double = MarathonDouble()
    yield double
    double.stop()


def run(double, definition, **options):
    return run_module("mesh_marathon_app", marathon_url=[double.url], definition=copy.deepcopy(definition), **options)


def changes(double) -> list[tuple[str, str]]:
    return [(method, path) for method, path in double.requests if method in ("POST", "PUT", "DELETE")]


@pytest.mark.parametrize("definition", [APP, POD], ids=["app", "pod"])
def test_check_mode_then_create_then_nothing_to_do(marathon, definition):
    checked = run(marathon, definition, check=True, diff=True)
    assert (checked["changed"], checked["diff"]["before"], checked["deployment_id"]) == (True, None, None)
    assert changes(marathon) == []
    created = run(marathon, definition)
    assert created["changed"] and created["deployment_id"] and "failed" not in created
    assert created["kind"] == ("pod" if "containers" in definition else "app")
    again = run(marathon, definition)
    assert again["changed"] is False and len(changes(marathon)) == 1
    assert run(marathon, definition, check=True)["changed"] is False


def test_an_update_waits_until_every_task_of_the_new_version_is_healthy(marathon):
    run(marathon, APP)
    scaled = run(marathon, {**APP, "instances": 4}, diff=True)
    assert scaled["changed"] and scaled["diff"]["before"]["instances"] == 2 and scaled["diff"]["after"]["instances"] == 4
    app = marathon.cluster.app_info("/shop/payment", with_tasks=False)
    assert (app["tasksRunning"], app["tasksHealthy"]) == (4, 4)


def test_a_locked_app_is_waited_for_or_named(marathon):
    run(marathon, APP)
    marathon.cluster.hold_deployments = True
    held = marathon.cluster.scale("/shop/payment", 3)
    failed = run(marathon, {**APP, "instances": 5}, on_locked="fail")
    assert failed["failed"] and failed["msg"] == f"/shop/payment is locked by deployment {held.id} (on_locked=fail; wait for it, or force=true)"

    def finish_soon():
        time.sleep(0.5)
        marathon.cluster.hold_deployments = False
        marathon.cluster.finish_deployment(held.id)
    threading.Thread(target=finish_soon).start()
    waited = run(marathon, {**APP, "instances": 5}, wait_timeout=10)
    assert waited["changed"] and "failed" not in waited
    assert marathon.cluster.apps["/shop/payment"]["instances"] == 5


def test_a_deployment_that_does_not_become_healthy_is_rolled_back_and_named(marathon):
    run(marathon, APP)
    marathon.cluster.healthy_on_start = False  # the new version's tasks never pass their health check
    broken = {**APP, "cmd": "./payment --broken"}
    failed = run(marathon, broken, wait_timeout=1)
    assert failed["failed"]
    assert failed["msg"].startswith("the deployment of /shop/payment failed: not healthy after 1s: 0 of 2 tasks healthy; rolled back to version ")
    assert marathon.cluster.apps["/shop/payment"]["cmd"] == "./payment"  # the previous definition is back
    no_rollback = run(marathon, broken, wait_timeout=0.5, rollback=False)
    assert no_rollback["msg"].endswith("; not rolled back (rollback=false)")


def test_marathon_refusing_the_definition_fails_with_its_details(marathon):
    bad = {**APP, "upgradeStrategy": {"minimumHealthCapacity": 2, "maximumOverCapacity": 1}}
    failed = run(marathon, bad)
    assert failed["failed"] and failed["msg"] == ("Marathon refused the app /shop/payment (HTTP 422): Object is not valid: "
                                                  "/upgradeStrategy/minimumHealthCapacity: is greater than 1")


def test_absent_deletes_once_and_then_has_nothing_to_do(marathon):
    run(marathon, APP)
    removed = run(marathon, {"id": "/shop/payment"}, state="absent")
    assert removed["changed"] and "/shop/payment" not in marathon.cluster.apps
    assert run(marathon, {"id": "/shop/payment"}, state="absent")["changed"] is False


def test_an_ha_marathon_is_reached_through_the_instance_that_answers_and_auth_is_sent():
    secured = MarathonDouble(token="t0ken")
    try:
        created = run_module("mesh_marathon_app", marathon_url=["http://127.0.0.1:9", secured.url], marathon_token="t0ken",
                             definition=copy.deepcopy(APP))
        assert created["changed"] and "failed" not in created
        refused = run_module("mesh_marathon_app", marathon_url=[secured.url], marathon_token="wrong", definition=copy.deepcopy(APP))
        assert refused["msg"] == "Marathon refused reading /shop/payment (HTTP 401): Invalid username or password."
    finally:
        secured.stop()
