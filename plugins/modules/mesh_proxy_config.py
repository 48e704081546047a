#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copied from modules/mesh_proxy_config.py by tools/sync_collection.py: edit the source, then run it.
# meshwright: write a proxy's rendered config into the folder its Envoy watches.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_proxy_config
short_description: Write a proxy's config files, checked by the host's Envoy first
description:
  - Writes the files of one proxy (as M(meshwright.mesh.mesh_render) returns them) into O(config_dir), the folder its Envoy
    watches. Files are replaced by atomic rename in the order of the xDS protocol (secrets and endpoints, clusters,
    routes, listeners, bootstrap), so Envoy never reads a half-written or dangling config.
  - Only files whose bytes differ are written. The names written are kept in C(.meshwright-files) in the folder;
    files listed there that are no longer rendered are removed. Other files in the folder are left alone.
  - With O(envoy), the host's own Envoy runs C(envoy --mode validate) on O(validation_bootstrap) in a scratch
    folder before anything is swapped in. When Envoy rejects it, the task fails with Envoy's message and
    writes nothing.
  - Runs on the host; needs only the Python standard library.
options:
  config_dir:
    description: The proxy's config folder (the one its bootstrap names). Created when missing.
    type: path
    required: true
  files:
    description: File name to content, for example C(mesh_render)'s C(proxies[ID].files).
    type: dict
    required: true
  validation_bootstrap:
    description: The proxy's whole config as one static bootstrap, for C(envoy --mode validate).
    type: str
  envoy:
    description:
      - Path of the host's Envoy binary. When given, the config is validated by it before anything is written.
      - In check mode the validation runs too (it writes only to a scratch folder it removes); when the binary is
        not installed yet, check mode skips it with a warning.
    type: path
  validate:
    description:
      - V(changed) validates only when a file would change; V(always) on every run, which checks that another
        Envoy binary accepts the config the proxy runs (an upgrade runs it in check mode with the new version).
    type: str
    choices: [changed, always]
    default: changed
  dir_mode:
    description: Mode of O(config_dir), for example C("0755").
    type: raw
  lock_timeout:
    description:
      - One run at a time in the folder - the module holds an exclusive lock on C(.meshwright.lock) in it (the
        holder writes its pid, host and command there; not in check mode). A second run waits up to this many
        seconds, then fails naming the holder.
    type: float
    default: 300
extends_documentation_fragment:
  - action_common_attributes
  - files
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: One unified diff per changed or removed file (config files are not secret).
  platform:
    platforms: posix
notes:
  - O(owner), O(group) and O(mode) apply to every file written; a change of them alone also reports a change.
author:
  - meshwright maintainers (@meshwright)
"""

EXAMPLES = r"""
- name: Write the proxy's config (checked by this host's Envoy first)
  meshwright.mesh.mesh_proxy_config:
    config_dir: /etc/meshwright/proxy
    files: "{{ mesh_rendered.proxies[mesh_proxy].files }}"
    validation_bootstrap: "{{ mesh_rendered.proxies[mesh_proxy].validation_bootstrap }}"
    envoy: /opt/meshwright/envoy/current/bin/envoy
    owner: root
    group: envoy
    mode: "0640"
    dir_mode: "0750"
  register: proxy_config

- name: Restart the proxy only when its bootstrap changed (the rest reloads from the watched folder)
  ansible.builtin.debug:
    msg: restart needed
  when: "'bootstrap.yaml' in proxy_config.changed_files"

- name: Before an upgrade, check that Envoy 1.40.0 accepts the config the proxy runs (writes nothing)
  meshwright.mesh.mesh_proxy_config:
    config_dir: /etc/meshwright/proxy
    files: "{{ mesh_rendered.proxies[mesh_proxy].files }}"
    validation_bootstrap: "{{ mesh_rendered.proxies[mesh_proxy].validation_bootstrap }}"
    envoy: /opt/meshwright/envoy/1.40.0/bin/envoy
    validate: always
  check_mode: true
"""

RETURN = r"""
changed_files:
  description: Files written (or, in check mode, that would be), by name.
  returned: always
  type: list
  elements: str
  sample: ["cds.yaml", "eds-outbound_9080__reviews.default.svc.cluster.local-4ce76f50.yaml"]
removed_files:
  description: Files of the last write (listed in C(.meshwright-files)) removed because they are no longer rendered (or that would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: ["rds-15301.yaml"]
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.meshwright.mesh.plugins.module_utils.mesh_config_dir import ConfigDir
from ansible_collections.meshwright.mesh.plugins.module_utils.mesh_folder_lock import DEFAULT_TIMEOUT, FolderLocked, folder_lock
from ansible_collections.meshwright.mesh.plugins.module_utils.mesh_envoy_binary import EnvoyBinaryError, validate_config


def validate(module, config_dir):
    """Fail (before anything is written) when the host's Envoy rejects the new config."""
    envoy = module.params["envoy"]
    if not envoy or (not config_dir.changed and module.params["validate"] == "changed"):
        return
    if not os.path.exists(envoy) and module.check_mode:
        module.warn(f"config not validated: {envoy} is not installed yet")
        return
    try:
        reason = validate_config(envoy, module.params["validation_bootstrap"])
    except EnvoyBinaryError as error:
        module.fail_json(msg=str(error))
    if reason:
        module.fail_json(msg=f"Envoy rejects the config for {config_dir.path}; nothing was written:\n{reason}",
                         changed_files=[], removed_files=[])


def set_attributes(module, config_dir, changed):
    """Owner, group and mode of the folder and of every file (reports, not sets, in check mode)."""
    if not os.path.isdir(config_dir.path):
        return changed
    folder = module.load_file_common_arguments(module.params, path=config_dir.path)
    folder["mode"] = module.params["dir_mode"]
    changed = module.set_fs_attributes_if_different(folder, changed)
    for name in sorted(config_dir.files):
        path = os.path.join(config_dir.path, name)
        if os.path.exists(path):
            changed = module.set_fs_attributes_if_different(module.load_file_common_arguments(module.params, path=path), changed)
    return changed


def main():
    module = AnsibleModule(
        argument_spec=dict(
            config_dir=dict(type="path", required=True),
            files=dict(type="dict", required=True),
            validation_bootstrap=dict(type="str"),
            envoy=dict(type="path"),
            dir_mode=dict(type="raw"),
            validate=dict(type="str", choices=["changed", "always"], default="changed"),
            lock_timeout=dict(type="float", default=DEFAULT_TIMEOUT),
        ),
        required_by={"envoy": "validation_bootstrap"},
        add_file_common_args=True,
        supports_check_mode=True,
    )
    files = {str(name): str(content) for name, content in module.params["files"].items()}
    bad = sorted(name for name in files if os.path.basename(name) != name or name.startswith("."))
    if bad:
        module.fail_json(msg=f"file names must be plain names inside config_dir: {', '.join(bad)}")

    config_dir = ConfigDir(module.params["config_dir"], files)
    validate(module, config_dir)
    diff = config_dir.diffs() if module._diff else None
    if config_dir.changed and not module.check_mode:
        try:
            # One run at a time in the folder: two deploys at once would interleave the files.
            with folder_lock(config_dir.path, module.params["lock_timeout"], 0o755):
                config_dir.write()
        except FolderLocked as error:
            module.fail_json(msg=str(error))
        except OSError as error:
            module.fail_json(msg=f"cannot write {config_dir.path}: {error}")
    changed = set_attributes(module, config_dir, config_dir.changed)

    result = dict(changed=changed, changed_files=config_dir.to_write, removed_files=config_dir.to_remove)
    if diff is not None:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
