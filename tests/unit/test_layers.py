"""The layers of src/meshwright import one way (pyproject.toml, [tool.importlinter]): lower
layers never import higher ones, not even inside a function, and no package's modules import
each other in a cycle. `lint-imports` checks the real tree, and a copy of it with one upward
import added shows that the contract catches one and names it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYPROJECT = os.path.join(ROOT, "pyproject.toml")


def lint_imports(source_root: str, cwd: str) -> subprocess.CompletedProcess:
    """lint-imports (the one beside this Python) on the meshwright package under source_root."""
    command = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    env = dict(os.environ, PYTHONPATH=source_root)
    return subprocess.run([command, "--no-cache", "--no-logo", PYPROJECT], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_meshwright_layers_import_one_way(tmp_path):
    result = lint_imports(os.path.join(ROOT, "src"), str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def copy_with_import(tmp_path, module: str, imported: str) -> str:
    """A copy of src/meshwright where module (a path under it) imports imported, inside a
    function, where an import cycle is usually dodged: it counts all the same."""
    source = tmp_path / "src"
    shutil.copytree(os.path.join(ROOT, "src", "meshwright"), source / "meshwright",
                    ignore=shutil.ignore_patterns("__pycache__"))
    path = source / "meshwright" / module
    package, name = imported.rsplit(".", 1)
    path.write_text(path.read_text() + f"\n\ndef _added():\n    from {package} import {name}\n")
    return str(source)


def test_an_upward_import_breaks_the_layers_and_is_named(tmp_path):
    result = lint_imports(copy_with_import(tmp_path, "model/resource.py", "meshwright.compile.build"), str(tmp_path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "meshwright.model is not allowed to import meshwright.compile" in result.stdout
    assert "meshwright.model.resource -> meshwright.compile.build" in result.stdout


def test_an_import_cycle_inside_a_package_breaks_the_contract(tmp_path):
    # routes imports clusters; clusters importing routes back closes a cycle within one layer.
    result = lint_imports(copy_with_import(tmp_path, "compile/clusters.py", "meshwright.compile.routes"), str(tmp_path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "meshwright layers import one way KEPT" in result.stdout
    assert "No cycles are allowed in meshwright.compile." in result.stdout
