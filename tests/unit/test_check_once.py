"""Issue #11, item 2: each distinct resource is checked once per run, and every problem still
names each proxy that has it, with the same message as when every proxy was checked alone."""

from __future__ import annotations

from types import SimpleNamespace

from google.protobuf import json_format

from meshwright import cli
from meshwright.check import envoy_proto
from meshwright.check.envoy_proto import TYPES
from meshwright.check.pipeline import validate_mesh, validate_proxies
from meshwright.compile.build import compile_proxy
from meshwright.compile.proxy import list_proxies
from meshwright.compile.proxy_class import proxy_classes
from meshwright.model.load import load_paths
from tests.unit.validation_cases import BASE

# Two proxies of one scope (same labels, same namespace): their outbound config is shared.
TWO_CLIENTS = BASE + """\
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client-b, namespace: default}
spec: {address: 127.0.0.2, labels: {app: client}}
"""


def load_mesh(tmp_path):
    (tmp_path / "mesh.yaml").write_text(TWO_CLIENTS)
    mesh, problems = validate_mesh(load_paths([str(tmp_path)]))
    assert problems == []
    return mesh


def distinct_and_total(mesh, proxies=None) -> tuple[int, int]:
    """Distinct (type, shape) resources over the proxies (all by default), and all of them counted per proxy."""
    seen, total = set(), 0
    for proxy in proxies or list_proxies(mesh):
        config = compile_proxy(mesh, proxy)
        for kind in ("listeners", "routes", "clusters", "endpoints"):
            for resource in getattr(config, kind):
                seen.add(envoy_proto.resource_shape(TYPES[kind], resource))
                total += 1
    return len(seen), total


def test_a_fragment_two_proxies_share_is_parsed_once(tmp_path, monkeypatch):
    mesh = load_mesh(tmp_path)
    distinct, total = distinct_and_total(mesh)
    assert distinct < total, "the two clients must share resources for this test to mean anything"
    calls = []
    parse = json_format.ParseDict
    monkeypatch.setattr(json_format, "ParseDict", lambda *args, **kwargs: calls.append(1) or parse(*args, **kwargs))
    assert validate_proxies(mesh) == []
    # The two clients are one class, checked once through its first proxy.
    classes = proxy_classes(mesh, list_proxies(mesh))
    assert len(classes) < len(list_proxies(mesh))
    assert len(calls) == distinct_and_total(mesh, [proxies[0] for proxies in classes])[0]


def test_a_bad_shared_fragment_is_reported_for_each_proxy_that_has_it(tmp_path, monkeypatch):
    mesh = load_mesh(tmp_path)
    bad = "outbound|9080||ratings.default.svc.cluster.local"
    checked = []
    check = envoy_proto.check_resource

    def reject_endpoints(type_name, resource):
        checked.append(resource.get("cluster_name"))
        return "Message type ... has no field named \"x\"" if type_name == TYPES["endpoints"] else check(type_name, resource)

    monkeypatch.setattr(envoy_proto, "check_resource", reject_endpoints)
    messages = [(str(p.resource), p.message) for p in validate_proxies(mesh) if bad in p.message]
    assert messages == [
        ("WorkloadEntry/default/client", f'proxy client.default: endpoint {bad}: Envoy rejects it: Message type ... has no field named "x"'),
        ("WorkloadEntry/default/client-b", f'proxy client-b.default: endpoint {bad}: Envoy rejects it: Message type ... has no field named "x"'),
    ]


def fake_envoy(monkeypatch, verdict):
    runs = []
    monkeypatch.setattr(cli, "_envoy_for", lambda args: "envoy")
    monkeypatch.setattr(cli, "envoy_validate", lambda envoy, path, timeout: runs.append(open(path).read()) or verdict)
    return runs


def test_envoy_runs_once_for_proxies_with_the_same_bootstrap_and_names_them_all(tmp_path, monkeypatch, capsys):
    load_mesh(tmp_path)
    runs = fake_envoy(monkeypatch, "error: bad listener")
    monkeypatch.setattr(cli, "bundle_proxy", lambda mesh, proxy_id, out_dir, check_dirs: SimpleNamespace(validation_bootstrap="same: bytes\n"))
    code = cli.main(["validate", str(tmp_path)])
    assert (code, len(runs)) == (1, 1)
    assert capsys.readouterr().err == "proxies client.default, client-b.default: envoy --mode validate rejects the config they share:\nerror: bad listener\n"


def test_envoy_runs_once_per_class_of_proxies(tmp_path, monkeypatch, capsys):
    mesh = load_mesh(tmp_path)
    runs = fake_envoy(monkeypatch, None)
    assert cli.main(["validate", str(tmp_path)]) == 0
    # The two clients are one class: their bootstraps differ only in names (node id, stat names).
    assert len(runs) == len(set(runs)) == len(proxy_classes(mesh, list_proxies(mesh))) == len(list_proxies(mesh)) - 1


def test_a_rejection_of_one_proxy_keeps_its_message(tmp_path, monkeypatch, capsys):
    (tmp_path / "mesh.yaml").write_text(BASE)  # every proxy a class of its own
    mesh, _ = validate_mesh(load_paths([str(tmp_path)]))
    fake_envoy(monkeypatch, "error: bad listener")
    assert cli.main(["validate", str(tmp_path)]) == 1
    first = list_proxies(mesh)[0].id
    assert capsys.readouterr().err == f"proxy {first}: envoy --mode validate rejects its config:\nerror: bad listener\n"


def test_verdicts_beyond_the_limit_are_dropped_and_found_again(monkeypatch):
    parsed = []
    monkeypatch.setattr(envoy_proto, "check_resource", lambda type_name, resource: parsed.append(resource["connect_timeout"]))
    verdicts = envoy_proto.ResourceVerdicts(limit=2)
    for name in ["shared", "a", "shared", "b", "shared", "a"]:
        verdicts.check("T", {"connect_timeout": name})
    # At the limit the table is emptied: "b" emptied it, so "shared" and then "a" are parsed again.
    assert parsed == ["shared", "a", "b", "shared", "a"]
