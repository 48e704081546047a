"""The collection meshwright.mesh as users get it: `ansible-galaxy collection build` from this
clone, `install` into a fresh folder, and Ansible then finds every module, role and playbook by
its fully qualified name there (not in the clone). plugins/ holds current copies of modules/ and
module_utils/ (tools/sync_collection.py), as real files."""

from __future__ import annotations

import glob
import os
import pathlib
import subprocess
import sys
import tarfile

import pytest
import yaml

from tests.modules.conftest import ROOT
from tools.collection_install import build_and_install, installed_env

BIN = os.path.dirname(sys.executable)
MODULES = sorted(os.path.basename(path)[:-3] for path in glob.glob(os.path.join(ROOT, "modules", "*.py")))
PLAYBOOKS = sorted(os.path.basename(path)[:-4] for path in glob.glob(os.path.join(ROOT, "playbooks", "*.yml")))
ROLES = sorted(os.listdir(os.path.join(ROOT, "roles")))


def ansible(*args: str, env: dict, cwd: str) -> str:
    result = subprocess.run([os.path.join(BIN, args[0]), *args[1:]], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    assert result.returncode == 0, f"{' '.join(args)} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the archive, the folder it was installed into, an environment that sees only that folder)."""
    work = tmp_path_factory.mktemp("collection")
    # An empty ansible.cfg, not the clone's: only the installed collection (and ansible-core's own) is found.
    archive, folder = build_and_install(str(work))
    return archive, pathlib.Path(folder), installed_env(str(work)), work


def test_the_installed_collection_lists_every_module_and_role(installed):
    _, folder, env, work = installed
    listed = ansible("ansible-doc", "--list", "--json", "meshwright.mesh", env=env, cwd=str(work))
    assert sorted(yaml.safe_load(listed)) == [f"meshwright.mesh.{name}" for name in MODULES]
    roles = ansible("ansible-doc", "--type", "role", "--list", "--json", "meshwright.mesh", env=env, cwd=str(work))
    assert sorted(yaml.safe_load(roles)) == [f"meshwright.mesh.{name}" for name in ROLES]
    assert sorted(os.path.basename(path)[:-4] for path in glob.glob(str(folder / "playbooks" / "*.yml"))) == PLAYBOOKS


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_each_playbook_runs_by_its_name_from_the_installed_collection(installed, playbook):
    _, folder, env, work = installed
    inventory = os.path.join(ROOT, "inventories", "local")
    out = ansible("ansible-playbook", "-i", inventory, f"meshwright.mesh.{playbook}", "--syntax-check", env=env, cwd=str(work))
    assert f"playbook: {folder}/playbooks/{playbook}.yml" in out


def test_the_archive_holds_the_collection_only_with_real_files(installed):
    archive = installed[0]
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    names = {member.name for member in members}
    assert not [member.name for member in members if member.issym() or member.islnk()]
    assert {f"plugins/modules/{name}.py" for name in MODULES} <= names
    assert "meta/runtime.yml" in names and "galaxy.yml" not in names  # MANIFEST.json stands for it
    # The clone's development files stay out: tests, Molecule, demo state, the module sources.
    assert not [name for name in names if name.split("/")[0] in ("tests", "molecule", ".venv", "state", "modules", "module_utils")]
    # The controller's core, which the action and inventory plugins import: pip installs it
    # from the installed collection's folder (README, meta/ee-requirements.txt).
    assert {"pyproject.toml", "src/meshwright/__init__.py", "src/meshwright/cli.py"} <= set(names)
    assert not [name for name in names if "__pycache__" in name or ".egg-info" in name]


def test_the_core_installs_with_pip_from_the_installed_collection(installed, tmp_path):
    _, folder, _, _ = installed
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(folder)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert [name for name in os.listdir(tmp_path) if name.startswith("meshwright-") and name.endswith(".whl")]


def test_plugins_hold_current_copies_of_modules_and_module_utils():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "sync_collection.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert not [path for path in glob.glob(os.path.join(ROOT, "plugins", "*", "*.py")) if os.path.islink(path)]


GROUP_PLAYBOOK = """\
- name: Options of every meshwright module at once, through the collection's action group
  hosts: localhost
  gather_facts: false
  module_defaults:
    group/meshwright.mesh.mesh:
      mesh: ["{{ mesh }}"]
  tasks:
    - name: Render without naming the mesh config (the group's default gives it)
      meshwright.mesh.mesh_render:
        proxies: {"frontend.default": /etc/meshwright/proxy}
      register: rendered
    - name: Assert the proxy was rendered
      ansible.builtin.assert:
        that: rendered.proxies['frontend.default'].kind == 'sidecar'
"""


def test_module_defaults_reach_the_controller_actions_through_the_action_group(tmp_path):
    (tmp_path / "play.yml").write_text(GROUP_PLAYBOOK)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    extra = '{"mesh": "%s"}' % os.path.join(ROOT, "examples", "basic", "mesh.yaml")
    out = ansible("ansible-playbook", "-i", "localhost,", "-c", "local", str(tmp_path / "play.yml"), "-e", extra, env=env, cwd=ROOT)
    assert "failed=0" in out and "ok=2" in out, out


# The paths users run to deploy, rotate, upgrade, report and uninstall: controller work runs as action plugins there.
RUN_PATHS = ["playbooks/deploy.yml", "playbooks/rotate_certs.yml", "playbooks/upgrade.yml", "playbooks/cert_report.yml", "playbooks/uninstall.yml",
             "playbooks/tasks", "playbooks/templates", "roles"]


def test_no_task_of_deploy_rotation_upgrade_or_report_delegates_to_the_controller_or_sets_its_interpreter():
    found = subprocess.run(["grep", "-rn", r"delegate_to: localhost\|ansible_python_interpreter", *RUN_PATHS],
                           cwd=ROOT, capture_output=True, text=True).stdout
    assert found == ""
