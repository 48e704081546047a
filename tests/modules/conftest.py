"""Run the custom modules the way Ansible's own unit tests do: in this process, with the
module's arguments patched in, reading the JSON the module prints on exit.

The modules import their helpers as `ansible.module_utils.mesh_*`; Ansible finds them through
`module_utils = module_utils` in ansible.cfg, and here through the package's search path.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os

import ansible.module_utils
from ansible.module_utils.testing import patch_module_args

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES = os.path.join(ROOT, "modules")
MODULE_UTILS = os.path.join(ROOT, "module_utils")

if MODULE_UTILS not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(MODULE_UTILS)


def load_module(name: str):
    spec = importlib.util.spec_from_file_location(f"meshwright_module_{name}", os.path.join(MODULES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_module(module_name: str, /, *, check: bool = False, diff: bool = False, **params) -> dict:
    """One run of a module -> its result (with "failed" set when it failed)."""
    module = load_module(module_name)
    args = dict(params, _ansible_check_mode=check, _ansible_diff=diff)
    out = io.StringIO()
    with patch_module_args(args), contextlib.redirect_stdout(out):
        try:
            module.main()
        except SystemExit:
            pass
    return json.loads(out.getvalue())
