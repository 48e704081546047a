"""Run the real `ansible-inventory` on a config of meshwright's inventory plugins, as a user does.

Two ways the plugins load: from the repository's plugins/inventory folder
(ANSIBLE_INVENTORY_PLUGINS, the plugin enabled by its short name), or from a collection
`meshwright.mesh` on the collections path (the config's `plugin:` picks it through `auto`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PLUGINS = REPO / "plugins" / "inventory"
ANSIBLE_INVENTORY = Path(sys.executable).parent / "ansible-inventory"


def as_collection(root: Path) -> Path:
    """A collections path where meshwright.mesh's inventory plugins are this repository's."""
    inventory = root / "ansible_collections" / "meshwright" / "mesh" / "plugins" / "inventory"
    inventory.parent.mkdir(parents=True, exist_ok=True)
    if not inventory.exists():
        inventory.symlink_to(PLUGINS)
    return root


def run_inventory(source: Path, enabled: str, collections: Path | None = None, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_INVENTORY_ENABLED=enabled, ANSIBLE_INVENTORY_UNPARSED_FAILED="true",
               ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="true", ANSIBLE_NOCOLOR="1", PYTHONWARNINGS="ignore")
    env.pop("ANSIBLE_CONFIG", None)
    if collections is None:
        env["ANSIBLE_INVENTORY_PLUGINS"] = str(PLUGINS)
    else:
        env["ANSIBLE_COLLECTIONS_PATH"] = str(collections)
    # cwd: not the source's folder (relative paths in a config are relative to the config), and
    # without an ansible.cfg (the repository's would add its inventory)
    return subprocess.run([str(ANSIBLE_INVENTORY), "-i", str(source), "--list", *args], cwd="/", env=env,
                          capture_output=True, text=True, timeout=120)


def unwrap(value):
    """ansible-inventory's JSON with Ansible's {"__ansible_unsafe": x} markers taken off."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {key: unwrap(item) for key, item in value.items()}
    if isinstance(value, list):
        return [unwrap(item) for item in value]
    return value


def inventory_list(source: Path, enabled: str, collections: Path | None = None) -> dict:
    result = run_inventory(source, enabled, collections)
    assert result.returncode == 0, result.stderr
    return unwrap(json.loads(result.stdout))


def inventory_error(source: Path, enabled: str, collections: Path | None = None) -> str:
    """The error a user sees when the inventory does not parse: one message, no traceback."""
    result = run_inventory(source, enabled, collections)
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    return " ".join(result.stderr.split())


def group_hosts(listing: dict, group: str) -> list[str]:
    return sorted(listing.get(group, {}).get("hosts", []))


def host_vars(listing: dict, host: str) -> dict:
    return listing["_meta"]["hostvars"][host]
