"""Every module's DOCUMENTATION, EXAMPLES and RETURN are YAML that ansible-doc can read (a plain
scalar holding ": " silently broke two modules' documentation)."""

from __future__ import annotations

import ast
import glob
import os

import pytest
import yaml

from tests.modules.conftest import MODULES


def module_strings(path: str) -> dict[str, str]:
    tree = ast.parse(open(path).read())
    return {node.targets[0].id: node.value.value for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id in ("DOCUMENTATION", "EXAMPLES", "RETURN")}


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(MODULES, "*.py"))), ids=os.path.basename)
def test_module_documentation_parses(path):
    strings = module_strings(path)
    assert set(strings) == {"DOCUMENTATION", "EXAMPLES", "RETURN"}
    documentation = yaml.safe_load(strings["DOCUMENTATION"])
    assert isinstance(yaml.safe_load(strings["EXAMPLES"]), list)
    assert isinstance(yaml.safe_load(strings["RETURN"]), dict)
    assert documentation["module"] == os.path.basename(path)[:-3]
    assert documentation["short_description"] and documentation["description"]
