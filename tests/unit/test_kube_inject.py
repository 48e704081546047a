"""`meshwright kube-inject -f FILE` (istioctl kube-inject's flags): every workload kind's pod
template injected, other objects as they were, a second pass changes nothing, a pod that
cannot be injected refused naming its object."""

from __future__ import annotations

import contextlib
import io
import sys

import yaml

from meshwright.cli import main as meshwright_main

FLAGS = ["--proxy-image", "local.test/meshwright-proxy:1", "--injection-xds", "10.244.0.1:15012", "--injection-csr", "10.244.0.1:15017"]
POD_SPEC = {"containers": [{"name": "app", "image": "local.test/tools:1"}]}
TEMPLATE = {"metadata": {"labels": {"app": "web"}}, "spec": POD_SPEC}
SELECTOR = {"matchLabels": {"app": "web"}}
MANIFESTS = [
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": POD_SPEC},
    {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"selector": SELECTOR, "template": TEMPLATE}},
    {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "s"}, "spec": {"serviceName": "s", "selector": SELECTOR, "template": TEMPLATE}},
    {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "ds"}, "spec": {"selector": SELECTOR, "template": TEMPLATE}},
    {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "spec": {"template": {**TEMPLATE, "spec": {**POD_SPEC, "restartPolicy": "Never"}}}},
    {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"},
     "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {**TEMPLATE, "spec": {**POD_SPEC, "restartPolicy": "Never"}}}}}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}},
]


def kube_inject(text: str, path: str = "-", monkeypatch=None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    if path == "-":
        monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = meshwright_main(["kube-inject", "-f", path, *FLAGS])
    return code, out.getvalue(), err.getvalue()


def pod_specs(documents: list[dict]) -> dict[str, dict]:
    specs = {}
    for doc in documents:
        spec = doc["spec"]
        if doc["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]["template"]["spec"]
        elif "template" in spec:
            spec = spec["template"]["spec"]
        specs[doc["kind"]] = spec
    return specs


def test_every_workload_kind_is_injected_and_other_objects_left_alone(monkeypatch):
    code, out, err = kube_inject(yaml.safe_dump_all(MANIFESTS), monkeypatch=monkeypatch)

    assert (code, err) == (0, "")
    documents = list(yaml.safe_load_all(out))
    specs = pod_specs(documents[:-1])
    assert list(specs) == ["Pod", "Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"]
    for kind, spec in specs.items():
        assert [c["name"] for c in spec["initContainers"] + spec["containers"]] == ["istio-init", "app", "istio-proxy"], kind
    assert documents[-1] == MANIFESTS[-1]  # the Service


def test_a_second_pass_changes_nothing(monkeypatch, tmp_path):
    _, once, _ = kube_inject(yaml.safe_dump_all(MANIFESTS), monkeypatch=monkeypatch)
    (tmp_path / "once.yaml").write_text(once)
    code, twice, _ = kube_inject("", str(tmp_path / "once.yaml"))
    assert code == 0 and twice == once


def test_an_opted_out_template_is_left_as_it_is(monkeypatch):
    opted_out = {**MANIFESTS[1], "spec": {"selector": SELECTOR, "template": {
        "metadata": {"labels": {"app": "web"}, "annotations": {"sidecar.istio.io/inject": "false"}}, "spec": POD_SPEC}}}
    _, out, _ = kube_inject(yaml.safe_dump(opted_out), monkeypatch=monkeypatch)
    assert yaml.safe_load(out) == opted_out


def test_a_pod_that_cannot_be_injected_is_refused_naming_its_object(monkeypatch):
    on_host = {**MANIFESTS[1], "spec": {"selector": SELECTOR, "template": {**TEMPLATE, "spec": {**POD_SPEC, "hostNetwork": True}}}}
    code, out, err = kube_inject(yaml.safe_dump_all([MANIFESTS[0], on_host]), monkeypatch=monkeypatch)
    assert (code, out) == (1, "")
    assert err.startswith("-: Deployment/d: spec.hostNetwork: a pod on the host's network cannot be injected")
