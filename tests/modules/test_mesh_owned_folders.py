"""mesh_owned_folders: meshwright's folders on a host made and marked in one call, and only the
marked ones removed (the envoy_proxy role's owned_folders.yml and remove_owned.yml).

Check mode, apply, idempotent re-run, check mode again, absent twice; a folder that was there
before gets no mark and stays."""

from __future__ import annotations

import os
import stat

from tests.modules.conftest import run_module

MARK = ".meshwright-owned"


def layout(tmp_path):
    prefix = tmp_path / "host-1"
    return [str(prefix), str(prefix / "opt" / "meshwright"), str(prefix / "var" / "log" / "meshwright"),
            str(prefix / "etc" / "meshwright" / "proxy")]


def test_check_apply_rerun_and_check_again(tmp_path):
    folders = layout(tmp_path)
    checked = run_module("mesh_owned_folders", check=True, diff=True, folders=folders)
    assert checked["changed"] and checked["created"] == folders
    assert not os.path.exists(folders[0])
    assert checked["diff"]["before"] == "" and checked["diff"]["after"] == "".join(f"{f} (marked)\n" for f in folders)

    applied = run_module("mesh_owned_folders", folders=folders, mark_content="Made by meshwright (proxy p.default)\n")
    assert applied["changed"] and applied["created"] == folders
    for folder in folders:
        assert (open(os.path.join(folder, MARK)).read()) == "Made by meshwright (proxy p.default)\n"
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o755
    # Parents made on the way get the mode, not the mark.
    assert stat.S_IMODE(os.stat(os.path.join(folders[0], "var", "log")).st_mode) == 0o755
    assert not os.path.exists(os.path.join(folders[0], "var", "log", MARK))

    again = run_module("mesh_owned_folders", folders=folders)
    assert not again["changed"] and again["created"] == []
    assert not run_module("mesh_owned_folders", check=True, folders=folders)["changed"]


def test_a_folder_that_was_there_gets_no_mark_and_stays(tmp_path):
    folders = layout(tmp_path)
    os.makedirs(folders[2])
    (tmp_path / "host-1" / "var" / "log" / "meshwright" / "syslog").write_text("keep me")
    result = run_module("mesh_owned_folders", folders=folders)
    assert result["created"] == [folders[1], folders[3]]  # host-1 was there too, as var/log/meshwright's parent
    assert not os.path.exists(os.path.join(folders[0], MARK)) and not os.path.exists(os.path.join(folders[2], MARK))

    removed = run_module("mesh_owned_folders", folders=folders, state="absent")
    assert removed["changed"] and removed["removed"] == [folders[3], folders[1]]
    assert (tmp_path / "host-1" / "var" / "log" / "meshwright" / "syslog").read_text() == "keep me"
    assert not os.path.exists(folders[1]) and not os.path.exists(folders[3])


def test_absent_removes_marked_folders_children_first_then_changes_nothing(tmp_path):
    folders = layout(tmp_path)
    run_module("mesh_owned_folders", folders=folders)
    (tmp_path / "host-1" / "opt" / "meshwright" / "envoy").mkdir()
    checked = run_module("mesh_owned_folders", check=True, diff=True, folders=folders, state="absent")
    assert checked["removed"] == list(reversed(folders)) and os.path.isdir(folders[0])
    assert checked["diff"]["after"] == ""

    assert run_module("mesh_owned_folders", folders=folders, state="absent")["removed"] == list(reversed(folders))
    assert not os.path.exists(folders[0])
    second = run_module("mesh_owned_folders", folders=folders, state="absent")
    assert not second["changed"] and second["removed"] == []


def test_paths_that_could_reach_outside_are_refused_with_the_reason(tmp_path):
    result = run_module("mesh_owned_folders", folders=["relative/folder", f"{tmp_path}/a/../b", "/"], state="absent")
    assert result["failed"]
    assert result["msg"] == ("mesh_owned_folders: 'relative/folder' is not an absolute path; "
                             f"'{tmp_path}/a/../b' has a '..' part; '/' is the root folder")
    bad_mark = run_module("mesh_owned_folders", folders=[str(tmp_path / "x")], mark="../x")
    assert bad_mark["failed"] and "mark '../x' is not a plain file name" in bad_mark["msg"]
    assert not os.path.exists(tmp_path / "x")
