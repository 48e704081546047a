#!/usr/bin/env python3
"""ansible-test sanity on the collection as users get it: built from this clone, installed into a
temporary folder (ansible-test wants a path ending ansible_collections/meshwright/mesh), and tested
there in this Python (ansible-test's origin mode: no --venv, no --docker).

ansible-test still makes a virtualenv of its own for some tests (ansible-doc, import, ...) and
puts pip into each with a bootstrap script it downloads from a host of Ansible's CI. The script it
runs from its cache instead is written here: it installs that pip version with this Python's pip
(`pip --python`), from the package index pip is configured for. Nothing else is replaced.
tests/sanity/ignore-*.txt is copied in (the build leaves tests/ out); it holds only entries
ansible-lint's `sanity` rule allows.

    python tools/collection_sanity.py [ansible-test sanity options, e.g. --test pep8]
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

import ansible_test
from collection_install import BIN, ROOT, build_and_install

# ansible-test's virtualenvs and pip bootstrap (its ~/.ansible/test), kept between runs.
ANSIBLE_TEST_HOME = os.path.join(ROOT, ".cache", "ansible-test-home")

BOOTSTRAP = '''\
"""Stands in for get-pip.py (written by meshwright's tools/collection_sanity.py): installs the
requested pip into this virtualenv with the pip of {python}."""
import subprocess
import sys

requested = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([{python!r}, "-m", "pip", "--python", sys.executable, "install", *requested]))
'''


def bootstrap_pip_version() -> str:
    """The pip version ansible-test puts into its virtualenvs (its get_venv_packages)."""
    source = os.path.join(os.path.dirname(ansible_test.__file__), "_internal", "python_requirements.py")
    with open(source, encoding="utf-8") as handle:
        found = re.search(r"default_packages = dict\(\s*pip='([0-9.]+)'", handle.read())
    if not found:
        sys.exit(f"{source}: cannot find the pip version ansible-test bootstraps (has ansible-test changed?)")
    return found.group(1)


def write_pip_bootstrap(home: str) -> None:
    version = bootstrap_pip_version()
    cache = os.path.join(home, ".ansible", "test", "cache")
    os.makedirs(cache, exist_ok=True)
    with open(os.path.join(cache, f"get_pip_{version.replace('.', '_')}.py"), "w", encoding="utf-8") as handle:
        handle.write(BOOTSTRAP.format(python=sys.executable))


def main(argv: list[str]) -> int:
    if not shutil.which("shellcheck"):
        # ansible-test would only warn and skip its shellcheck test.
        sys.exit("shellcheck is not installed (Debian: apt-get install shellcheck): ansible-test sanity needs it")
    write_pip_bootstrap(ANSIBLE_TEST_HOME)
    with tempfile.TemporaryDirectory(prefix="meshwright-sanity-") as work:
        folder = build_and_install(work)[1]
        # The build leaves tests/ out: the ignore file (allowed entries only) goes in beside the code.
        shutil.copytree(os.path.join(ROOT, "tests", "sanity"), os.path.join(folder, "tests", "sanity"))
        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        env = dict(os.environ, HOME=ANSIBLE_TEST_HOME, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
        command = [os.path.join(BIN, "ansible-test"), "sanity", "--python", python, "--color", "no", *argv]
        print("+", " ".join(command), f"(in {folder})", flush=True)
        return subprocess.run(command, cwd=folder, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
