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


def test_an_upward_import_breaks_the_contract_and_is_named(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(os.path.join(ROOT, "src", "meshwright"), source / "meshwright",
                    ignore=shutil.ignore_patterns("__pycache__"))
    resource = source / "meshwright" / "model" / "resource.py"
    # Inside a function, where an import cycle is usually dodged: it still counts.
    resource.write_text(resource.read_text() + "\n\ndef _climb():\n    from meshwright.compile import build\n")
    result = lint_imports(str(source), str(tmp_path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "meshwright.model is not allowed to import meshwright.compile" in result.stdout
    assert "meshwright.model.resource -> meshwright.compile.build" in result.stdout
