"""The collection meshwright.mesh as users get it: `ansible-galaxy collection build` from this clone,
then `install` into a folder of the caller's, with Ansible seeing nothing of the clone (an empty
ansible.cfg). Used by tools/collection_sanity.py and by the tests that run the installed collection
(tests/modules/test_collection.py, tests/e2e: every playbook run there)."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def installed_env(work: str) -> dict:
    """An environment where Ansible finds collections only in work/installed (and ansible-core's own)."""
    config = os.path.join(work, "ansible.cfg")
    if not os.path.exists(config):
        with open(config, "w", encoding="utf-8") as handle:
            handle.write("[defaults]\n")  # not the clone's ansible.cfg (its collections_path links the clone)
    return dict(os.environ, ANSIBLE_CONFIG=config, ANSIBLE_COLLECTIONS_PATH=os.path.join(work, "installed"),
                ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false", ANSIBLE_HOME=os.path.join(work, "home"), ANSIBLE_NOCOLOR="1")


def ansible_galaxy(*args: str, env: dict, cwd: str) -> None:
    result = subprocess.run([os.path.join(BIN, "ansible-galaxy"), *args], capture_output=True, text=True, env=env, cwd=cwd,
                            timeout=300, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ansible-galaxy {' '.join(args)} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def build_and_install(work: str) -> tuple[str, str]:
    """(the archive, the installed collection's folder: work/installed/ansible_collections/meshwright/mesh)."""
    env = installed_env(work)
    ansible_galaxy("collection", "build", "--output-path", os.path.join(work, "build"), ROOT, env=env, cwd=work)
    [archive] = glob.glob(os.path.join(work, "build", "meshwright-mesh-*.tar.gz"))
    ansible_galaxy("collection", "install", "--collections-path", os.path.join(work, "installed"), archive, env=env, cwd=work)
    return archive, os.path.join(work, "installed", "ansible_collections", "meshwright", "mesh")
