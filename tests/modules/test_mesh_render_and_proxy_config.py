"""mesh_render (controller) and mesh_proxy_config (host): the mesh config becomes files in the
folder a proxy's Envoy watches, checked by a real Envoy before they replace the old ones."""

from __future__ import annotations

import os
import stat

import pytest

from tests.harness import ENVOY
from tests.modules.conftest import ROOT, run_module

BASIC = os.path.join(ROOT, "examples", "basic", "mesh.yaml")
PROXY = "frontend.default"


FRONTEND_EGRESS_ON_9001 = """---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: frontend, namespace: default}
spec:
  workloadSelector: {labels: {app: frontend}}
  egress:
  - port: {number: 9001, protocol: HTTP, name: http}
    bind: 127.0.0.1
    hosts: ["./*"]
"""


def only_v1(mesh_text: str) -> str:
    """The basic mesh with the v2 subset gone (reviews traffic all to v1), and frontend's
    outbound listener moved to 9001 (so its route configuration file is another one)."""
    head, virtual_service = mesh_text.split("kind: VirtualService")
    head = head.replace("  - {name: v2, labels: {version: v2}}\n", "")
    virtual_service = virtual_service.split("  http:")[0] + "  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n"
    return head + "kind: VirtualService" + virtual_service + FRONTEND_EGRESS_ON_9001


def render(mesh: str, config_dir: str) -> dict:
    result = run_module("mesh_render", mesh=[mesh], proxies={PROXY: config_dir})
    assert not result.get("failed"), result
    return result["proxies"][PROXY]


def write_config(bundle: dict, config_dir: str, check: bool = False, **extra) -> dict:
    return run_module("mesh_proxy_config", check=check, diff=True, config_dir=config_dir, files=bundle["files"],
                      validation_bootstrap=bundle["validation_bootstrap"], envoy=ENVOY, **extra)


def read_dir(path: str) -> dict[str, str]:
    """The folder's config files."""
    out = {}
    # the manifest of what the render wrote and the folder's lock (one run at a time) are not config
    for name in sorted(set(os.listdir(path)) - {".meshwright-files", ".meshwright.lock"}):
        with open(os.path.join(path, name)) as handle:
            out[name] = handle.read()
    return out


def test_render_returns_each_proxy_and_never_changes_anything(tmp_path):
    """The render is a pipe: files, a self-contained validation bootstrap, the proxy's ports and a
    digest that is the same for the same input; it reports no change, in check mode too."""
    config_dir = str(tmp_path / "frontend")
    args = dict(mesh=[BASIC], proxies={PROXY: config_dir, "reviews-v1.default": str(tmp_path / "reviews-v1")})
    result = run_module("mesh_render", **args)
    assert result["changed"] is False
    frontend = result["proxies"][PROXY]
    assert frontend["kind"] == "sidecar"
    assert frontend["ports"] == {"admin": 15300, "health": 15321, "stats": 15390}
    assert {"bootstrap.yaml", "lds.yaml", "cds.yaml"} <= set(frontend["files"])
    assert f"path: {config_dir}/lds.yaml" in frontend["files"]["bootstrap.yaml"]
    assert "dynamic_resources" not in frontend["validation_bootstrap"]
    assert set(result["proxies"]) == {PROXY, "reviews-v1.default"}

    again = run_module("mesh_render", check=True, **args)
    assert again["changed"] is False
    assert again["proxies"][PROXY]["digest"] == frontend["digest"]
    assert not os.path.exists(config_dir)


def test_an_invalid_mesh_fails_with_every_problem_where_it_is_written(tmp_path):
    """Istio's validation contract: the task fails, and every problem names file, line, resource,
    field and what is wrong."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: ratings\n  namespace: default\n"
        "spec:\n  hosts: [ratings]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n      weight: 60\n"
        "    - destination: {host: reviews, subset: v3}\n      weight: 30\n"
    )
    result = run_module("mesh_render", mesh=[BASIC, str(bad)], proxies={PROXY: str(tmp_path / "out")})
    assert result.get("failed") is True
    assert result["msg"] == "3 problem(s) in the mesh config"
    where = [problem.split(": ")[:3] for problem in result["problems"]]
    assert where == [
        [f"{bad}:7", "VirtualService/default/ratings", "spec.hosts[0]"],
        [f"{bad}:9", "VirtualService/default/ratings", "spec.http[0].route"],
        [f"{bad}:12", "VirtualService/default/ratings", "spec.http[0].route[1].destination.subset"],
    ], result["problems"]
    assert "sum to 90" in result["problems"][1] and "'v3'" in result["problems"][2]
    assert "proxies" not in result


def test_an_unknown_proxy_is_named(tmp_path):
    result = run_module("mesh_render", mesh=[BASIC], proxies={"nope.default": str(tmp_path)})
    assert result.get("failed") is True
    assert "no proxy named nope.default" in result["msg"] and "frontend.default" in result["msg"]


def test_config_check_apply_rerun_and_a_new_render(tmp_path):
    """First write: check mode shows every file as new and writes nothing; the write lays down
    exactly the rendered files; re-runs change nothing. A new render (v2 subset gone) rewrites only
    what differs, removes the route file no longer rendered, and leaves unmanaged files alone."""
    config_dir = str(tmp_path / "frontend")
    bundle = render(BASIC, config_dir)

    check = write_config(bundle, config_dir, check=True)
    assert check["changed"] is True
    assert check["changed_files"] == sorted(bundle["files"]) and check["removed_files"] == []
    assert [d["after_header"] for d in check["diff"]] == [os.path.join(config_dir, n) for n in sorted(bundle["files"])]
    assert all(d["before_header"] == "/dev/null" and d["before"] == "" for d in check["diff"])
    assert not os.path.exists(config_dir)

    written = write_config(bundle, config_dir)
    assert written["changed"] is True, written
    assert read_dir(config_dir) == bundle["files"]
    assert write_config(bundle, config_dir)["changed"] is False
    again = write_config(bundle, config_dir, check=True)
    assert (again["changed"], again["diff"]) == (False, [])

    (tmp_path / "frontend" / "notes.txt").write_text("not ours")
    v1_mesh = tmp_path / "mesh.yaml"
    v1_mesh.write_text(only_v1(open(BASIC).read()))
    new = render(str(v1_mesh), config_dir)
    [gone] = sorted(set(bundle["files"]) - set(new["files"]))
    assert gone == "rds-15301.yaml"

    check = write_config(new, config_dir, check=True)
    assert check["changed"] is True and check["removed_files"] == [gone]
    assert "cds.yaml" in check["changed_files"] and "bootstrap.yaml" not in check["changed_files"]
    by_name = {os.path.basename(d["before_header"]): d for d in check["diff"]}
    assert by_name[gone]["after_header"] == "/dev/null" and by_name[gone]["after"] == ""
    assert "outbound|9080|v2|" in by_name["cds.yaml"]["before"] and "outbound|9080|v2|" not in by_name["cds.yaml"]["after"]
    assert read_dir(config_dir) == {**bundle["files"], "notes.txt": "not ours"}

    applied = write_config(new, config_dir)
    assert (applied["changed_files"], applied["removed_files"]) == (check["changed_files"], [gone])
    assert read_dir(config_dir) == {**new["files"], "notes.txt": "not ours"}
    assert write_config(new, config_dir)["changed"] is False


@pytest.mark.parametrize("check", [False, True], ids=["apply", "check"])
def test_a_config_envoy_rejects_is_not_written(tmp_path, check):
    """The host's Envoy has the last word: a cluster with a load-balancing policy Envoy does not
    know fails the task with Envoy's own message, and the running config stays as it was."""
    config_dir = str(tmp_path / "frontend")
    good = render(BASIC, config_dir)
    assert write_config(good, config_dir)["changed"] is True
    before = read_dir(config_dir)

    bad = {
        "files": {**good["files"], "cds.yaml": good["files"]["cds.yaml"].replace("LEAST_REQUEST", "MOST_REQUEST")},
        "validation_bootstrap": good["validation_bootstrap"].replace("lb_policy: LEAST_REQUEST", "lb_policy: MOST_REQUEST"),
    }
    result = write_config(bad, config_dir, check=check)
    assert result.get("failed") is True, result
    assert "Envoy rejects the config" in result["msg"] and "unknown enum value: 'MOST_REQUEST'" in result["msg"]
    assert read_dir(config_dir) == before


def test_owner_and_modes_are_kept(tmp_path):
    """mode and dir_mode are applied to the files and the folder; a mode changed by hand is
    reported (check mode) and put back."""
    config_dir = str(tmp_path / "frontend")
    bundle = render(BASIC, config_dir)
    modes = dict(mode="0640", dir_mode="0750")
    assert write_config(bundle, config_dir, **modes)["changed"] is True
    assert stat.S_IMODE(os.stat(config_dir).st_mode) == 0o750
    assert {stat.S_IMODE(os.stat(os.path.join(config_dir, n)).st_mode) for n in bundle["files"]} == {0o640}
    assert write_config(bundle, config_dir, **modes)["changed"] is False

    lds = os.path.join(config_dir, "lds.yaml")
    os.chmod(lds, 0o666)
    assert write_config(bundle, config_dir, check=True, **modes)["changed"] is True
    assert stat.S_IMODE(os.stat(lds).st_mode) == 0o666
    fixed = write_config(bundle, config_dir, **modes)
    assert fixed["changed"] is True and fixed["changed_files"] == []
    assert stat.S_IMODE(os.stat(lds).st_mode) == 0o640


def test_files_are_written_in_xds_order_and_only_its_own_are_removed(tmp_path, monkeypatch):
    """The host side writes as the CLI does: secrets, clusters, routes, listeners, bootstrap (seen
    in the order of the renames); a user's rds-my-notes.yaml in the folder is never removed."""
    config_dir = str(tmp_path / "frontend")
    os.makedirs(config_dir)
    (tmp_path / "frontend" / "rds-my-notes.yaml").write_text("my notes")
    identity_mesh = tmp_path / "identity.yaml"
    identity_mesh.write_text(open(BASIC).read().replace("  accessLogFile: /dev/stdout\n", "  accessLogFile: /dev/stdout\n  certificates: {}\n"))
    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda source, target: (renamed.append(os.path.basename(target)), real_replace(source, target)))
    written = write_config(render(str(identity_mesh), config_dir), config_dir)
    assert written["changed"] is True, written
    assert [name for name in renamed if not name.startswith(".")] == [
        "sds-default.yaml", "sds-rootca.yaml", "cds.yaml", "rds-15301.yaml", "lds.yaml", "bootstrap.yaml"]

    v1_mesh = tmp_path / "mesh.yaml"
    v1_mesh.write_text(only_v1(open(BASIC).read()))
    applied = write_config(render(str(v1_mesh), config_dir), config_dir)
    assert "sds-default.yaml" in applied["removed_files"] and "rds-my-notes.yaml" not in applied["removed_files"]
    assert read_dir(config_dir)["rds-my-notes.yaml"] == "my notes"


def test_a_certificates_folder_outside_the_root_fails_the_render(tmp_path):
    """The host modules write keys where the bundle says: never outside the config dir's parent."""
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text(open(BASIC).read().replace("  accessLogFile: /dev/stdout\n", "  accessLogFile: /dev/stdout\n  certificates: {dir: /etc/ssl}\n"))
    result = run_module("mesh_render", mesh=[str(mesh)], proxies={PROXY: "/etc/meshwright/proxy"})
    assert result.get("failed") is True
    assert "certificates.dir '/etc/ssl' is /etc/ssl, outside /etc/meshwright" in result["msg"]


FOREIGN_PRINCIPAL = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-foreign, namespace: default}
spec:
  selector: {matchLabels: {app: payment-service}}
  action: DENY
  rules:
  - from:
    - source: {principals: [other.example/ns/default/sa/intruder]}
"""


def test_render_shows_validation_warnings_as_ansible_warnings(tmp_path):
    """A principal in a trust domain that is not the mesh's renders (it is valid Istio), and the
    playbook's output says so."""
    import shutil

    mesh = tmp_path / "mesh"
    shutil.copytree(os.path.join(ROOT, "examples", "seed", "mesh"), mesh)
    (mesh / "foreign.yaml").write_text(FOREIGN_PRINCIPAL)
    result = run_module("mesh_render", mesh=[str(mesh)], proxies={"payment-1.default": str(tmp_path / "proxy")})
    assert not result.get("failed"), result
    shown = [str(warning) for warning in result.get("warnings", [])]  # Ansible 2.19 returns them structured
    assert any("foreign.yaml:9: AuthorizationPolicy/default/deny-foreign" in warning and "other.example" in warning
               for warning in shown), shown
