"""Run the custom modules the way Ansible's own unit tests do: in this process, with the
module's arguments patched in, reading the JSON the module prints on exit.

The host modules' sources (modules/) import their helpers as `ansible.module_utils.mesh_*`
(the collection's copies in plugins/ import them by the collection's name); here they are found
through the package's search path. The controller's work (mesh_render, mesh_ca,
mesh_workload_sign, mesh_upgrade_plan) is an action plugin of the collection: run_module runs
it as ansible-playbook would, in this process, with the collection found in .collections.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import sys
import types

import ansible.module_utils
from ansible.module_utils.testing import patch_module_args

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES = os.path.join(ROOT, "modules")
MODULE_UTILS = os.path.join(ROOT, "module_utils")
ACTIONS = os.path.join(ROOT, "plugins", "action")
COLLECTIONS = os.path.join(ROOT, ".collections")

if MODULE_UTILS not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(MODULE_UTILS)


def load_module(name: str):
    spec = importlib.util.spec_from_file_location(f"meshwright_module_{name}", os.path.join(MODULES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_action(name: str):
    """The collection's action plugin class, imported by its collection name."""
    from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder

    if not any(isinstance(finder, _AnsibleCollectionFinder) for finder in sys.meta_path):
        _AnsibleCollectionFinder(paths=[COLLECTIONS], scan_sys_paths=False)._install()
    return importlib.import_module(f"ansible_collections.meshwright.mesh.plugins.action.{name}").ActionModule


def run_action(name: str, /, *, check: bool = False, diff: bool = False, vault_secrets: list | None = None, **params) -> dict:
    """One run of a controller action -> its result, as ansible-playbook gets it (vault_secrets:
    the run's, as --vault-id gives them)."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.playbook.play_context import PlayContext

    task = types.SimpleNamespace(args=params, check_mode=check, diff=diff, async_val=0, action=f"meshwright.mesh.{name}")
    connection = types.SimpleNamespace(_shell=types.SimpleNamespace(tmpdir=None))
    loader = DataLoader()
    loader.set_vault_secrets(vault_secrets or [])
    action = load_action(name)(task=task, connection=connection, play_context=PlayContext(), loader=loader, templar=None)
    return action.run(task_vars={})


def run_module(module_name: str, /, *, check: bool = False, diff: bool = False, **params) -> dict:
    """One run of a module (or of the action plugin of that name) -> its result (with "failed" set when it failed)."""
    if os.path.exists(os.path.join(ACTIONS, f"{module_name}.py")):
        return run_action(module_name, check=check, diff=diff, **params)
    module = load_module(module_name)
    args = dict(params, _ansible_check_mode=check, _ansible_diff=diff)
    out = io.StringIO()
    with patch_module_args(args), contextlib.redirect_stdout(out):
        try:
            module.main()
        except SystemExit:
            pass
    return json.loads(out.getvalue())
