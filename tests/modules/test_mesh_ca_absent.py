"""meshwright.mesh.mesh_ca state=absent (playbooks/uninstall.yml with mesh_ca_remove_on_uninstall):
the CA folder removed on the controller by the action plugin, with check mode and diff, twice
(the second run changes nothing); a folder holding anything the CA does not make is kept whole."""

from __future__ import annotations

import os

from tests.modules.conftest import run_module


def made_ca(tmp_path) -> str:
    ca = str(tmp_path / "ca")
    made = run_module("mesh_ca", path=ca, intermediates=["local"])
    assert not made.get("failed") and made["changed"], made
    return ca


def test_check_mode_and_diff_name_the_files_and_remove_nothing(tmp_path):
    ca = made_ca(tmp_path)
    before = sorted(os.path.relpath(os.path.join(d, n), ca) for d, _, names in os.walk(ca) for n in names)

    result = run_module("mesh_ca", check=True, diff=True, path=ca, state="absent")

    assert not result.get("failed") and result["changed"] is True
    assert result["removed"] == before and "root/key.pem" in before and "intermediates/local/key.pem" in before
    assert result["diff"] == {"before": {"path": ca, "files": before}, "after": {}}
    assert "BEGIN" not in repr(result)  # names only: no certificate, no key
    assert sorted(os.path.relpath(os.path.join(d, n), ca) for d, _, names in os.walk(ca) for n in names) == before


def test_the_folder_is_removed_then_a_second_run_changes_nothing(tmp_path):
    ca = made_ca(tmp_path)

    first = run_module("mesh_ca", path=ca, state="absent")
    second = run_module("mesh_ca", path=ca, state="absent")
    again_in_check_mode = run_module("mesh_ca", check=True, diff=True, path=ca, state="absent")

    assert first["changed"] is True and "root/cert.pem" in first["removed"]
    assert not os.path.exists(ca)
    assert (second["changed"], second["removed"]) == (False, [])
    assert (again_in_check_mode["changed"], again_in_check_mode["diff"]) == (False, {"before": {}, "after": {}})


def test_a_folder_with_files_the_ca_did_not_make_is_kept_and_named(tmp_path):
    ca = made_ca(tmp_path)
    with open(os.path.join(ca, "notes.txt"), "w") as handle:
        handle.write("not the CA's\n")

    result = run_module("mesh_ca", path=ca, state="absent")

    assert result["failed"]
    assert result["msg"] == f"{ca} is not a mesh CA folder (it holds notes.txt, which the mesh CA does not make): nothing removed"
    assert os.path.exists(os.path.join(ca, "root", "key.pem")) and os.path.exists(os.path.join(ca, "notes.txt"))
