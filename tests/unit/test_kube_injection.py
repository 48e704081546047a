"""Sidecar injection into a Kubernetes pod (deliver/kube_inject.py): what is added, that injecting twice
changes nothing, Istio's opt-in and capture annotations, and the pods refused whole."""

from __future__ import annotations

import copy
import json

import pytest

from meshwright.deliver.kube_inject import InjectionSettings, NotInjectable, injected_pod, injection_patch, wants_injection

SETTINGS = InjectionSettings("local.test/meshwright-proxy:0.1.0", "10.244.0.1:15012", "10.244.0.1:15017")
POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "reviews-7d9f", "namespace": "shop", "labels": {"app": "reviews"},
                 "annotations": {"traffic.sidecar.istio.io/excludeOutboundPorts": "5432"}},
    "spec": {"serviceAccountName": "reviews",
             "containers": [{"name": "app", "image": "local.test/tools:1", "ports": [{"containerPort": 8000}]}],
             "volumes": [{"name": "data", "emptyDir": {}}]},
}


def test_a_pod_gets_the_init_container_the_proxy_its_token_and_the_status():
    pod = injected_pod(POD, SETTINGS)

    assert [c["name"] for c in pod["spec"]["containers"]] == ["app", "istio-proxy"]
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["istio-init"]
    init = pod["spec"]["initContainers"][0]
    assert init["args"] == ["capture", "--proxy-uid", "1337", "--exclude-inbound-ports", "15000,15001,15006,15020,15021,15090",
                            "--exclude-outbound-ports", "5432"]
    assert init["securityContext"]["capabilities"]["add"] == ["NET_ADMIN", "NET_RAW"]
    proxy = pod["spec"]["containers"][1]
    assert proxy["image"] == "local.test/meshwright-proxy:0.1.0" and proxy["securityContext"]["runAsUser"] == 1337
    assert {e["name"]: e.get("value") for e in proxy["env"]}["MESHWRIGHT_XDS_ADDRESS"] == "10.244.0.1:15012"
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/healthz/ready", "port": 15021}
    token = next(v for v in pod["spec"]["volumes"] if v["name"] == "istio-token")
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "meshwright"
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["data", "istio-token", "istio-envoy", "istio-certs", "istiod-ca-cert"]
    assert pod["metadata"]["labels"] == {"app": "reviews", "security.istio.io/tlsMode": "istio"}
    assert "sidecar.istio.io/status" in pod["metadata"]["annotations"]
    assert POD["spec"]["containers"] == [POD["spec"]["containers"][0]] and "initContainers" not in POD["spec"]  # the input is untouched


def test_injecting_twice_changes_nothing():
    once = injected_pod(POD, SETTINGS)
    assert injected_pod(copy.deepcopy(once), SETTINGS) == once
    assert injection_patch(once, SETTINGS) == []


def test_the_patch_makes_the_injected_pod():
    patch = injection_patch(POD, SETTINGS)
    patched = copy.deepcopy(POD)
    for operation in patch:
        assert operation["op"] == "add"
        parent, key = operation["path"].rsplit("/", 1)
        patched[parent.strip("/")][key] = operation["value"]
    assert patched == injected_pod(POD, SETTINGS)


@pytest.mark.parametrize("change, message", [
    (lambda spec: spec.update(hostNetwork=True), "spec.hostNetwork: a pod on the host's network cannot be injected"),
    (lambda spec: spec["containers"].append({"name": "istio-proxy", "image": "x"}), "spec: a container is already named istio-proxy"),
    (lambda spec: spec["volumes"].append({"name": "istio-token", "emptyDir": {}}), "spec.volumes: a volume is already named istio-token"),
])
def test_pods_that_cannot_be_injected_are_refused_with_the_reason(change, message):
    pod = copy.deepcopy(POD)
    change(pod["spec"])
    with pytest.raises(NotInjectable, match=message.replace(".", r"\.")):
        injected_pod(pod, SETTINGS)


def test_the_pods_own_choice_wins_over_its_namespaces():
    def pod(where: str, value: str) -> dict:
        return {"metadata": {where: {"sidecar.istio.io/inject": value}}}

    assert wants_injection({}, namespace_enabled=True) and not wants_injection({}, namespace_enabled=False)
    assert not wants_injection(pod("labels", "false"), namespace_enabled=True)
    assert not wants_injection(pod("annotations", "false"), namespace_enabled=True)
    assert wants_injection(pod("labels", "true"), namespace_enabled=False)


PROBED = {
    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "shop"},
    "spec": {"containers": [
        {"name": "app", "image": "x", "ports": [{"name": "http", "containerPort": 8000}, {"name": "admin", "containerPort": 9000}],
         "readinessProbe": {"httpGet": {"path": "/ready", "port": "http", "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
                            "periodSeconds": 1, "timeoutSeconds": 2},
         "livenessProbe": {"tcpSocket": {"port": 9000}, "failureThreshold": 5},
         "startupProbe": {"exec": {"command": ["true"]}}},
        {"name": "cache", "image": "y", "readinessProbe": {"httpGet": {"path": "/", "port": 6000, "host": "10.0.0.9"}}},
    ]},
}


def _proxy_env(pod: dict) -> dict:
    return {e["name"]: e.get("value") for e in pod["spec"]["containers"][-1]["env"]}


def test_the_apps_http_and_tcp_probes_go_through_the_sidecar_as_istio_rewrites_them():
    pod = injected_pod(PROBED, SETTINGS)

    app, cache = pod["spec"]["containers"][:2]
    assert app["readinessProbe"] == {"httpGet": {"path": "/app-health/app/readyz", "port": 15020, "scheme": "HTTP"},
                                     "periodSeconds": 1, "timeoutSeconds": 2}
    assert app["livenessProbe"] == {"httpGet": {"path": "/app-health/app/livez", "port": 15020, "scheme": "HTTP"}, "failureThreshold": 5}
    assert app["startupProbe"] == {"exec": {"command": ["true"]}}  # exec runs in the container: nothing to rewrite
    assert cache == PROBED["spec"]["containers"][1]  # it probes another host
    assert json.loads(_proxy_env(pod)["ISTIO_KUBE_APP_PROBERS"]) == {
        "/app-health/app/readyz": {"httpGet": {"path": "/ready", "port": 8000, "scheme": "HTTP",
                                               "httpHeaders": [{"name": "X-Probe", "value": "1"}]}, "timeoutSeconds": 2},
        "/app-health/app/livez": {"tcpSocket": {"port": 9000}, "timeoutSeconds": 1},
    }
    assert injected_pod(copy.deepcopy(pod), SETTINGS) == pod
    assert PROBED["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] == "http"  # the input is untouched


def test_a_pod_that_opts_out_keeps_its_probes():
    pod = copy.deepcopy(PROBED)
    pod["metadata"]["annotations"] = {"sidecar.istio.io/rewriteAppHTTPProbers": "false"}
    injected = injected_pod(pod, SETTINGS)
    assert injected["spec"]["containers"][:2] == pod["spec"]["containers"]
    assert "ISTIO_KUBE_APP_PROBERS" not in _proxy_env(injected)
    assert "ISTIO_KUBE_APP_PROBERS" not in _proxy_env(injected_pod(POD, SETTINGS))  # no probes: nothing to hand over


@pytest.mark.parametrize("change, message", [
    (lambda pod: pod["metadata"].update(annotations={"sidecar.istio.io/rewriteAppHTTPProbers": "no"}),
     "metadata.annotations.sidecar.istio.io/rewriteAppHTTPProbers: 'no' is not \"true\" or \"false\""),
    (lambda pod: pod["spec"]["containers"][0]["readinessProbe"]["httpGet"].update(port="metrics"),
     "spec.containers[0].readinessProbe.httpGet.port: 'metrics' names no port of the container"),
])
def test_a_probe_that_cannot_be_rewritten_is_refused_naming_it(change, message):
    pod = copy.deepcopy(PROBED)
    change(pod)
    with pytest.raises(NotInjectable) as refused:
        injected_pod(pod, SETTINGS)
    assert str(refused.value) == message
