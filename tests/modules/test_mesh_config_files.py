"""meshwright.mesh.mesh_config_files: the mesh config's files on the controller, as the control
plane's copy lays them out (roles/control_plane/tasks/mesh.yml copies them one by one)."""

from __future__ import annotations

from tests.modules.conftest import run_module


def test_folders_keep_their_layout_files_alone_go_to_the_top_and_hidden_ones_stay_out(tmp_path):
    mesh = tmp_path / "mesh"
    (mesh / "shop").mkdir(parents=True)
    (mesh / ".git").mkdir()
    for path in ("routes.yaml", "shop/rules.yml", "shop/notes.txt", ".hidden.yaml", ".git/config.yaml"):
        (mesh / path).write_text("{}\n")
    alone = tmp_path / "extra.yaml"
    alone.write_text("{}\n")

    result = run_module("mesh_config_files", paths=[str(mesh), str(alone)])

    assert not result.get("failed") and result["changed"] is False
    assert result["files"] == [
        {"src": str(mesh / "routes.yaml"), "dest": "routes.yaml"},
        {"src": str(mesh / "shop" / "rules.yml"), "dest": "shop/rules.yml"},
        {"src": str(alone), "dest": "extra.yaml"},
    ]


def test_a_path_that_is_not_there_fails_naming_it(tmp_path):
    result = run_module("mesh_config_files", paths=[str(tmp_path / "nowhere")])

    assert result["failed"] and result["msg"] == f"no such file or folder on the controller: {tmp_path / 'nowhere'}"
