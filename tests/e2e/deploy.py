"""Running the real playbooks against an inventory, and reading their results."""

from __future__ import annotations

import atexit
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from tools.collection_install import build_and_install, installed_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


class PlaybookRun:
    def __init__(self, process: subprocess.CompletedProcess):
        self.returncode = process.returncode
        self.output = process.stdout + process.stderr

    @property
    def recap(self) -> dict[str, dict[str, int]]:
        return {host: {"ok": int(ok), "changed": int(changed), "unreachable": int(unreachable), "failed": int(failed)}
                for host, ok, changed, unreachable, failed in RECAP.findall(self.output)}

    def changed(self) -> dict[str, int]:
        return {host: counts["changed"] for host, counts in self.recap.items()}

    def __str__(self) -> str:
        return self.output[-6000:]


@functools.cache
def installed_collection() -> str:
    """A folder holding the collection as users install it: built from this clone and installed
    there once per test run (removed at exit). Every playbook of the e2e tests runs from it."""
    work = tempfile.mkdtemp(prefix="mw-collection-")
    atexit.register(shutil.rmtree, work, True)
    build_and_install(work)
    return work


def playbook_env() -> dict:
    """Ansible finds meshwright.mesh in the installed collection only, as README's install steps
    run it: the clone's ansible.cfg (its settings, such as inject_facts_as_vars, docs/security.md)
    with ANSIBLE_COLLECTIONS_PATH in place of its collections_path (.collections, the clone)."""
    return dict(installed_env(installed_collection()), ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_FORCE_COLOR="0",
                PATH=BIN + os.pathsep + os.environ.get("PATH", ""))


def run_playbook(playbook: str, extra_vars: dict, *args: str, inventory: str = "inventories/local", timeout: float = 600) -> PlaybookRun:
    # By the collection's name, as users run them (deploy.yml -> meshwright.mesh.deploy).
    name = "meshwright.mesh." + os.path.splitext(playbook)[0]
    command = [os.path.join(BIN, "ansible-playbook"), "-i", os.path.join(ROOT, inventory), name, "-e", json.dumps(extra_vars), *args]
    return PlaybookRun(subprocess.run(command, cwd=ROOT, env=playbook_env(), capture_output=True, text=True, timeout=timeout))


def proxy_user() -> str:
    """The proxies' user, as inventories/local chooses it: the connecting user (empty), or the
    role's meshwright-proxy where the tests run as root (proxies never run as root)."""
    return "meshwright-proxy" if os.geteuid() == 0 else ""


def state_folder(name: str) -> str:
    """A folder for a deploy's state that the proxies' user can enter (pytest's own temporary
    folders are private to the user running the tests). remove_state_folder removes it."""
    path = tempfile.mkdtemp(prefix=f"mw-{name}-")
    os.chmod(path, 0o755)
    return path


def remove_state_folder(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
