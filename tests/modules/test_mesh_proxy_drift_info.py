"""mesh_proxy_drift_info: the envoy_proxy role's fast path says "as rendered" only when every task
it stands for would change nothing, and names what differs otherwise (an edited config file, a
file's mode, a missing folder, a changed file); it never changes anything, in check mode or not."""

from __future__ import annotations

import hashlib
import os

from tests.modules.conftest import run_module

FILES = {"bootstrap.yaml": "node: {id: p}\n", "cds.yaml": "resources: []\n"}
RESTARTER = "#!/usr/bin/env python3\nprint('restarter')\n"


def rendered_host(tmp_path) -> dict:
    """A host as the role leaves it (folders, a copied file, the config written by mesh_proxy_config)
    and the arguments that describe it."""
    folders = [str(tmp_path / "etc"), str(tmp_path / "opt" / "bin")]
    restarter = tmp_path / "opt" / "bin" / "envoy-restarter"
    config_dir = str(tmp_path / "etc" / "proxy")
    assert not run_module("mesh_owned_folders", folders=folders).get("failed")
    restarter.write_text(RESTARTER)
    os.chmod(restarter, 0o755)
    assert not run_module("mesh_proxy_config", config_dir=config_dir, files=FILES).get("failed")
    return dict(folders=folders, config={"config_dir": config_dir, "files": FILES},
                files=[{"path": str(restarter), "sha1": hashlib.sha1(RESTARTER.encode()).hexdigest(), "mode": "0755"}])


def snapshot(root) -> dict:
    return {os.path.join(folder, name): open(os.path.join(folder, name), "rb").read()
            for folder, _, names in os.walk(root) for name in names}


def test_a_host_as_rendered_is_reported_so_in_check_mode_and_not(tmp_path):
    wanted = rendered_host(tmp_path)
    for check in (True, False):
        result = run_module("mesh_proxy_drift_info", check=check, **wanted)
        assert result["as_rendered"] is True and result["drift"] == [] and result["changed"] is False
        assert result["proxy"] is None  # no admin_port asked


def test_an_edited_config_file_is_drift_named_by_the_file_and_left_as_it_is(tmp_path):
    wanted = rendered_host(tmp_path)
    edited = tmp_path / "etc" / "proxy" / "cds.yaml"
    edited.write_text("resources: [edited]\n")
    before = snapshot(tmp_path)
    result = run_module("mesh_proxy_drift_info", **wanted)
    assert result["as_rendered"] is False
    assert result["drift"] == ["config file cds.yaml differs"]
    assert snapshot(tmp_path) == before


def test_a_file_with_other_content_or_mode_and_a_missing_folder_are_drift(tmp_path):
    wanted = rendered_host(tmp_path)
    restarter = wanted["files"][0]["path"]
    os.chmod(restarter, 0o644)
    assert run_module("mesh_proxy_drift_info", **wanted)["drift"] == [f"{restarter} has mode 0644, not 0755"]
    with open(restarter, "a") as handle:
        handle.write("# edited\n")
    assert run_module("mesh_proxy_drift_info", **wanted)["drift"] == [f"{restarter} differs from what is rendered"]
    wanted["folders"].append(str(tmp_path / "var" / "log"))
    assert f"folder {tmp_path / 'var' / 'log'} is missing" in run_module("mesh_proxy_drift_info", **wanted)["drift"]


def test_a_file_only_expected_in_a_folder_that_is_there(tmp_path):
    missing = str(tmp_path / "logrotate.d" / "meshwright-proxy")
    result = run_module("mesh_proxy_drift_info", files=[{"path": missing, "sha1": "0" * 40, "mode": "0644", "if_folder": True}])
    assert result["as_rendered"] is True
    os.mkdir(tmp_path / "logrotate.d")
    result = run_module("mesh_proxy_drift_info", files=[{"path": missing, "sha1": "0" * 40, "mode": "0644", "if_folder": True}])
    assert result["drift"] == [f"{missing} is missing"]


def test_a_change_asked_for_is_drift_whatever_the_host_holds(tmp_path):
    wanted = rendered_host(tmp_path)
    result = run_module("mesh_proxy_drift_info", changes_asked=["a hot restart (envoy_proxy_hot_restart)"], **wanted)
    assert result["as_rendered"] is False and result["drift"] == ["asked for: a hot restart (envoy_proxy_hot_restart)"]


def test_a_service_that_does_not_run_is_drift(tmp_path):
    service = {"name": "demo", "command": ["/bin/sleep", "60"], "manager": "supervisord", "supervisor_dir": str(tmp_path / "supervisor")}
    result = run_module("mesh_proxy_drift_info", service=service)
    assert result["as_rendered"] is False
    [line] = result["drift"]
    assert line.startswith("service demo needs: ") and "start supervisord" in line
    assert not os.path.exists(tmp_path / "supervisor")


def test_an_envoy_not_installed_is_drift_said_before_its_source_is_hashed(tmp_path):
    binary = tmp_path / "envoy"
    binary.write_bytes(b"a binary that is not installed yet")
    envoy = {"version": "1.40.0", "prefix": str(tmp_path / "host"), "source": "binary", "binary": str(binary)}
    result = run_module("mesh_proxy_drift_info", envoy=envoy)
    assert result["drift"] == ["Envoy 1.40.0 is not installed"]
