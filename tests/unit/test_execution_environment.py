"""meta/execution-environment.yml: what ansible-builder installs for meshwright.mesh in an image
matches what the code needs (pyproject.toml's runtime dependencies, the plugins' imports)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.unit.ansible_inventory import REPO

DEFINITION = REPO / "meta" / "execution-environment.yml"
# Where ansible-builder installs collections in an image (its introspection reads them there).
IMAGE_COLLECTIONS = "/usr/share/ansible/collections/ansible_collections"


def definition() -> dict:
    return yaml.safe_load(DEFINITION.read_text())


def requirement_lines(path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]


def python_requirements() -> tuple[list[Requirement], list[str]]:
    """(the named requirements, the URL lines) of the Python requirements file."""
    lines = requirement_lines(REPO / definition()["dependencies"]["python"])
    return [Requirement(line) for line in lines if "://" not in line], [line for line in lines if "://" in line]


def test_the_definition_is_ansible_builder_v3_with_files_relative_to_the_collection_root():
    data = definition()

    assert data["version"] == 3
    assert set(data["dependencies"]) == {"python", "system"}
    for kind in ("python", "system"):
        path = data["dependencies"][kind]
        assert not path.startswith("/") and ".." not in path.split("/"), path  # ansible-builder refuses absolute paths
        assert (REPO / path).is_file(), f"dependencies.{kind}: {path} does not exist under the collection root"


def test_the_python_requirements_are_the_runtime_dependencies_of_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    named, _ = python_requirements()

    declared = {canonicalize_name(r.name): r.specifier for r in map(Requirement, project["dependencies"])}
    assert {canonicalize_name(r.name): r.specifier for r in named} == declared


def test_the_meshwright_package_is_installed_from_the_collection_in_the_image():
    _, urls = python_requirements()
    plugin_name = re.search(r'NAME = "([^"]+)"', (REPO / "plugins" / "inventory" / "mesh.py").read_text()).group(1)
    namespace, collection, _ = plugin_name.split(".")

    assert urls == [f"file://{IMAGE_COLLECTIONS}/{namespace}/{collection}#egg=meshwright"]
    # pip installs the collection's root as the package: it must be the meshwright project.
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["name"] == "meshwright"


def third_party_imports(path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {name for name in names if name not in sys.stdlib_module_names and name not in ("ansible", "ansible_collections", "meshwright")}


def test_every_package_the_plugins_import_is_a_requirement():
    named, _ = python_requirements()
    required = {canonicalize_name(r.name) for r in named}
    distributions = importlib.metadata.packages_distributions()
    plugins = sorted((REPO / "plugins").rglob("*.py"))
    assert plugins

    missing = {}
    for path in plugins:
        for module in third_party_imports(path):
            providers = {canonicalize_name(name) for name in distributions.get(module, [module])}
            if not providers & required:
                missing.setdefault(str(path.relative_to(REPO)), []).append(module)
    assert missing == {}


def test_the_system_requirements_are_bindep_lines_for_rpm_and_deb_images():
    lines = requirement_lines(REPO / definition()["dependencies"]["system"])
    bindep = re.compile(r"[a-z0-9][a-z0-9.+_-]*( \[[a-z0-9:!_ -]+\])?")

    assert [line for line in lines if not bindep.fullmatch(line)] == []
    profiles = " ".join(lines)
    assert "[platform:rpm]" in profiles and "[platform:dpkg]" in profiles
