"""Uninstall removes only what meshwright made (docs/security.md): the folders deploy creates
carry a mark (roles/envoy_proxy/tasks/owned_folders.yml) and the proxy user it creates a record
(tasks/user.yml); uninstall.yml removes marked folders and a recorded user only
(tasks/remove_owned.yml). A mesh_prefix or mesh_config_dir that names a folder of the host's
own, such as /opt, and a user that was there before, stay.

The role's own task files run in real ansible-playbook runs on this machine (local connection);
the user tests need root (useradd), as CI runs them."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys

from tests.modules.conftest import ROOT

BIN = os.path.dirname(sys.executable)

PLAYBOOK = """
- hosts: all
  gather_facts: false
  tasks:
    - name: Run the role's {step} tasks
      ansible.builtin.include_role:
        name: meshwright.mesh.envoy_proxy
        tasks_from: {step}
"""


def role_step(tmp_path, step: str, **settings) -> str:
    (tmp_path / f"{step}.yml").write_text(PLAYBOOK.format(step=step))
    extra = {"mesh_proxy": "payment-1.default", "ansible_python_interpreter": sys.executable, **settings}
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    result = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", "host-1,", "-c", "local", str(tmp_path / f"{step}.yml"),
                             "-e", json.dumps(extra)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return result.stdout


def deploy_then_uninstall(tmp_path, **settings) -> None:
    role_step(tmp_path, "owned_folders", **settings)
    prefix = settings["mesh_prefix"]
    for folder in ("opt/meshwright/envoy", "var/log/meshwright", "var/lib/meshwright/proxy"):
        os.makedirs(os.path.join(prefix, folder), exist_ok=True)
        with open(os.path.join(prefix, folder, "written-by-deploy"), "w") as handle:
            handle.write("x")
    with open(os.path.join(settings["mesh_config_dir"], "bootstrap.yaml"), "w") as handle:
        handle.write("{}")
    role_step(tmp_path, "remove_owned", **settings)


def test_a_config_dir_that_was_there_before_stays_with_its_files(tmp_path):
    """mesh_config_dir names a folder of the host's own (as /opt would): uninstall leaves it and
    the files it held, and removes the prefix meshwright made."""
    host_folder = tmp_path / "opt"
    host_folder.mkdir()
    (host_folder / "someone-elses.conf").write_text("keep me")
    prefix = tmp_path / "host-1"
    deploy_then_uninstall(tmp_path, mesh_prefix=str(prefix), mesh_config_dir=str(host_folder), envoy_proxy_user="")
    assert (host_folder / "someone-elses.conf").read_text() == "keep me"
    assert not prefix.exists()


def test_a_prefix_that_was_there_before_stays_and_only_meshwrights_folders_in_it_go(tmp_path):
    """mesh_prefix names a folder of the host's own: its own contents stay; the folders meshwright
    made in it (opt/meshwright, var/log/meshwright, ...) and the config folder go."""
    prefix = tmp_path / "opt"
    (prefix / "var" / "log").mkdir(parents=True)
    (prefix / "var" / "log" / "syslog").write_text("keep me")
    deploy_then_uninstall(tmp_path, mesh_prefix=str(prefix), mesh_config_dir=str(prefix / "etc" / "meshwright" / "proxy"),
                          envoy_proxy_user="")
    assert (prefix / "var" / "log" / "syslog").read_text() == "keep me"
    left = sorted(os.path.relpath(os.path.join(folder, name), prefix) for folder, dirs, names in os.walk(prefix) for name in dirs + names)
    # Parents made on the way (var/cache, var/lib, etc) are empty and unmarked: they stay.
    assert left == ["etc", "opt", "var", "var/cache", "var/lib", "var/log", "var/log/syslog"], left


def test_a_second_deploy_keeps_the_marks_and_uninstall_still_removes(tmp_path):
    """Marks are made once, when meshwright makes the folder: a later deploy (the folders there
    now) keeps them, so uninstall still knows the folders are meshwright's."""
    prefix = tmp_path / "host-1"
    settings = {"mesh_prefix": str(prefix), "mesh_config_dir": str(prefix / "etc" / "meshwright" / "proxy"), "envoy_proxy_user": ""}
    role_step(tmp_path, "owned_folders", **settings)
    assert "changed=0" in role_step(tmp_path, "owned_folders", **settings)
    deploy_then_uninstall(tmp_path, **settings)
    assert not prefix.exists()


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def test_uninstall_removes_the_proxy_user_it_made_and_keeps_one_that_was_there(tmp_path):
    suffix = str(os.getpid())[-5:]
    made, existing = f"mw-made-{suffix}", f"mw-old-{suffix}"
    subprocess.run(["groupadd", "--system", "--gid", "1902", existing], check=True)
    subprocess.run(["useradd", "--system", "--no-create-home", "--uid", "1902", "--gid", "1902", existing], check=True)
    try:
        for user, uid in ((made, 1901), (existing, 1902)):
            prefix = tmp_path / user
            settings = {"mesh_prefix": str(prefix), "mesh_config_dir": str(prefix / "etc" / "meshwright" / "proxy"),
                        "envoy_proxy_user": user, "envoy_proxy_uid": uid}
            role_step(tmp_path, "owned_folders", **settings)
            role_step(tmp_path, "user", **settings)
            assert user_exists(user)
            role_step(tmp_path, "user", **settings)  # a second deploy: the user is there now, the record stays
            role_step(tmp_path, "remove_owned", **settings)
        assert not user_exists(made)
        assert user_exists(existing)
    finally:
        for user in (made, existing):
            if user_exists(user):
                subprocess.run(["userdel", user], check=False)
            subprocess.run(["groupdel", user], check=False, capture_output=True)


def test_a_second_deploy_leaves_the_proxy_user_alone_and_mends_one_changed_by_hand(tmp_path):
    """The user and group tasks (one host at a time) run only when the user is not as the role
    makes it: a second deploy skips them; a shell changed by hand is put back."""
    user = f"mw-again-{str(os.getpid())[-5:]}"
    prefix = tmp_path / user
    settings = {"mesh_prefix": str(prefix), "mesh_config_dir": str(prefix / "etc" / "meshwright" / "proxy"),
                "envoy_proxy_user": user, "envoy_proxy_uid": 1903}
    try:
        role_step(tmp_path, "owned_folders", **settings)
        assert "Create the proxy's user" in role_step(tmp_path, "user", **settings)
        again = role_step(tmp_path, "user", **settings)
        assert "changed=0" in again and "Create the proxy's user" not in again, again
        subprocess.run(["usermod", "--shell", "/bin/bash", user], check=True)
        mended = role_step(tmp_path, "user", **settings)
        assert "changed=1" in mended, mended
        assert pwd.getpwnam(user).pw_shell == "/usr/sbin/nologin"
        role_step(tmp_path, "remove_owned", **settings)
        assert not user_exists(user)
    finally:
        if user_exists(user):
            subprocess.run(["userdel", user], check=False)
        subprocess.run(["groupdel", user], check=False, capture_output=True)
