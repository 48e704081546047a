"""`meshwright marathon-inject`: an app becomes a pod with the sidecar, a pod gains it; ports
and health checks rewritten so traffic passes the sidecar; injecting twice changes nothing;
an opted-out app is left alone; what a pod cannot hold is an error naming the field. The
injected pod is accepted by the Marathon double, and the registry then publishes the
sidecar's port for every one of the service's ports."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import subprocess

import pytest

from meshwright.cli import main as meshwright_main
from meshwright.deliver.marathon_inject import SidecarSettings, inject
from meshwright.registry.marathon import mesh_resources, workload_name
from tests.fakes.marathon import MarathonCluster

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "marathon")
SETTINGS = SidecarSettings("10.0.0.1:15012", "10.0.0.1:15016")
CONTROL_PLANE = ["--xds", "10.0.0.1:15012", "--csr", "10.0.0.1:15016"]


def fixture(name: str) -> dict:
    with open(os.path.join(DATA, name)) as handle:
        return json.load(handle)


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = meshwright_main(list(args))
    return code, out.getvalue(), err.getvalue()


def test_an_app_becomes_a_pod_running_the_app_and_the_sidecar():
    pod = inject(fixture("app_definition.json"), SETTINGS)
    app, sidecar = pod["containers"]
    assert (pod["id"], pod["scaling"], pod["networks"]) == ("/shop/payment", {"kind": "fixed", "instances": 2}, [{"mode": "container/bridge"}])
    assert pod["labels"] == {"team": "payments", "meshwright.io/injected": SETTINGS.version}
    assert pod["environment"] == {"LOG_LEVEL": "info", "DB_PASSWORD": {"secret": "db"}} and pod["user"] == "nobody"
    assert pod["scheduling"]["placement"] == {"constraints": [{"fieldName": "hostname", "operator": "UNIQUE"}], "acceptedResourceRoles": ["mesos_role"]}
    assert app["exec"] == {"command": {"shell": "./payment --port 8080"}}
    assert app["image"] == {"kind": "DOCKER", "id": "registry.example.com/shop/payment:1.4.2", "forcePull": False}
    assert app["resources"] == {"cpus": 0.25, "mem": 256, "disk": 0, "gpus": 0}
    # The app's port: no host port any more (only the sidecar is reached), its mesh port kept.
    assert app["endpoints"] == [{"name": "http", "containerPort": 8080, "protocol": ["tcp"],
                                 "labels": {"VIP_0": "/payment:80", "meshwright.io/port": "10019"}}]
    assert app["healthCheck"] == {"http": {"endpoint": "http", "path": "/health", "scheme": "HTTP"}, "gracePeriodSeconds": 300,
                                  "intervalSeconds": 20, "maxConsecutiveFailures": 3, "timeoutSeconds": 20}
    assert pod["volumes"] == [{"name": "volume0", "host": "/srv/payment-cache"}]
    assert app["volumeMounts"] == [{"name": "volume0", "mountPath": "/var/cache/payment", "readOnly": False}]
    assert sidecar["name"] == "meshwright-sidecar"
    assert [(e["name"], e["containerPort"], e.get("hostPort")) for e in sidecar["endpoints"]] == [("mesh-inbound", 15006, 0), ("mesh-health", 15021, None)]
    assert sidecar["healthCheck"]["http"] == {"endpoint": "mesh-health", "path": "/healthz/ready", "scheme": "HTTP"}
    command = sidecar["exec"]["command"]["shell"]
    assert 'proxy="payment-$(printf %s "$MESOS_TASK_ID"' in command and ').shop"' in command
    assert "--xds 10.0.0.1:15012 --csr 10.0.0.1:15016" in command


def test_a_pod_gains_the_sidecar_and_its_endpoints_lose_their_host_ports():
    pod = inject(fixture("pod_definition.json"), SETTINGS)
    assert [c["name"] for c in pod["containers"]] == ["cart", "meshwright-sidecar"]
    assert pod["containers"][0]["endpoints"] == [{"name": "http", "containerPort": 8080, "protocol": ["tcp"], "labels": {"meshwright.io/port": "80"}}]
    unchanged = fixture("pod_definition.json")
    assert {k: v for k, v in pod.items() if k not in ("containers", "labels")} == {k: v for k, v in unchanged.items() if k not in ("containers", "labels")}


@pytest.mark.parametrize("name", ["app_definition.json", "pod_definition.json"])
def test_injecting_twice_changes_nothing_and_a_new_sidecar_version_replaces_the_old(name, tmp_path):
    path = tmp_path / name
    path.write_text(json.dumps(fixture(name)))
    code, once, err = run("marathon-inject", "-f", str(path), *CONTROL_PLANE)
    assert (code, err) == (0, "")
    (tmp_path / "once.json").write_text(once)
    code, twice, _ = run("marathon-inject", "-f", str(tmp_path / "once.json"), *CONTROL_PLANE)
    assert (code, twice) == (0, once)
    upgraded = inject(json.loads(once), SidecarSettings("10.0.0.1:15012", "10.0.0.1:15016", version="0.2.0"))
    assert [c["name"] for c in upgraded["containers"]].count("meshwright-sidecar") == 1
    assert upgraded["labels"]["meshwright.io/injected"] == "0.2.0"


def test_an_app_that_opts_out_is_left_alone():
    for label in ({"meshwright.io/inject": "false"}, {"meshwright.io/mesh": "false"}):
        app = fixture("app_definition.json")
        app["labels"].update(label)
        assert inject(copy.deepcopy(app), SETTINGS) == app


def test_what_a_pod_cannot_hold_is_an_error_naming_the_field(tmp_path):
    app = fixture("app_definition.json")
    app["dependencies"] = ["/shop/db"]
    path = tmp_path / "app.json"
    path.write_text(json.dumps(app))
    code, out, err = run("marathon-inject", "-f", str(path), *CONTROL_PLANE)
    assert (code, out) == (1, "")
    assert err == f'{path}: /shop/payment: /dependencies: dependencies has no place in a pod, so /shop/payment cannot become one ' \
                  '(remove it, or label the app meshwright.io/inject: "false")\n'
    app.pop("dependencies")
    app["args"] = ["./payment"]
    path.write_text(json.dumps(app))
    assert run("marathon-inject", "-f", str(path), *CONTROL_PLANE)[2].endswith("/args: an app runs cmd or args, not both (Marathon refuses it too)\n")
    path.write_text(json.dumps({"id": "/shop/Pay_ment", "cmd": "./payment"}))
    assert run("marathon-inject", "-f", str(path), *CONTROL_PLANE)[2] == (
        f"{path}: /shop/Pay_ment: /id: meshwright.io/service (from the id): 'Pay_ment' is not a DNS-1123 label "
        "(at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit)\n")
    path.write_text('{"id": "/x",\n  "cmd": }')
    assert run("marathon-inject", "-f", str(path), *CONTROL_PLANE) == (1, "", f"{path}:2:10: not JSON: Expecting value\n")


def test_marathon_takes_the_injected_pod_and_the_registry_sends_traffic_to_its_sidecar():
    cluster = MarathonCluster()
    pod, _, _ = cluster.put_pod(inject(fixture("app_definition.json"), SETTINGS), force=False)
    status = cluster.pod_status(pod["id"])
    resources, problems = mesh_resources("marathon/test", [], [status])
    assert problems == []
    [service] = [r for r in resources if r.kind == "ServiceEntry"]
    assert service.spec["ports"] == [{"number": 10019, "name": "http", "protocol": "HTTP", "targetPort": 8080}]
    workloads = [r for r in resources if r.kind == "WorkloadEntry"]
    inbound_ports = sorted(e["allocatedHostPort"] for i in status["instances"] for c in i["containers"]
                           if c["name"] == "meshwright-sidecar" for e in c["endpoints"] if e["name"] == "mesh-inbound")
    assert sorted(w.spec["ports"]["http"] for w in workloads) == inbound_ports and len(workloads) == 2
    # The sidecar's proxy name (from MESOS_TASK_ID) is the registry's name for the instance.
    for workload, instance in zip(sorted(workloads, key=lambda w: w.name), sorted(status["instances"], key=lambda i: i["id"])):
        assert workload.name == "payment-" + instance["id"].split("instance-")[1]


def test_the_sidecar_names_itself_as_the_registry_names_its_instance():
    """The sidecar's shell, run as Mesos runs it (MESOS_TASK_ID set), names the proxy the
    registry makes for the instance: the service's WorkloadEntry name and namespace."""
    long_app = fixture("app_definition.json")
    long_app["id"] = "/shop/" + "a-very-long-service-name-that-is-cut"
    for app in (fixture("app_definition.json"), long_app):
        pod = inject(app, SETTINGS)
        command = pod["containers"][1]["exec"]["command"]["shell"].replace("exec meshwright marathon-sidecar", "echo")
        instance = app["id"].strip("/").replace("/", "_") + ".instance-3f6c1d1e-7bb5-11e9-b931-8ae30e1b1bb7"
        env = {"MESOS_TASK_ID": f"{instance}.meshwright-sidecar", "MESOS_SANDBOX": "/sandbox", "PATH": os.environ["PATH"]}
        printed = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, check=True).stdout.split()
        service = app["id"].rsplit("/", 1)[1]
        assert printed[printed.index("--proxy") + 1] == workload_name(service, instance) + ".shop"
        assert printed[printed.index("--health") + 1] == "15021"
        assert printed[printed.index("--identity") + 1] == f"spiffe://cluster.local/ns/shop/sa/{service}"
