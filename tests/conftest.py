"""Every test that runs ansible-playbook finds the collection meshwright.mesh as ansible.cfg says
(collections_path = .collections): `make collection` links it there; a bare pytest run does too."""

from __future__ import annotations

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTION_LINK = os.path.join(ROOT, ".collections", "ansible_collections", "meshwright", "mesh")


def pytest_configure(config):
    if not os.path.islink(COLLECTION_LINK):
        os.makedirs(os.path.dirname(COLLECTION_LINK), exist_ok=True)
        os.symlink("../../..", COLLECTION_LINK)
