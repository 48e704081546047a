#!/usr/bin/python
# -*- coding: utf-8 -*-
# meshwright: make meshwright's folders on a host and mark them as its own; remove only those.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_owned_folders
short_description: Make meshwright's folders on a host, marking those it made; remove only marked ones
description:
  - With O(state=present), makes every folder of O(folders) that is missing (with the parents it needs) and
    writes the mark file O(mark) into each folder of the list it made. A folder that is already there gets no
    mark and is left as it is (a O(folders) entry of C(/opt) stays the host's).
  - With O(state=absent), removes every folder of O(folders) that holds the mark, with everything in it,
    children before parents. Folders without the mark, and the parents made on the way, stay.
  - One call for the whole list; nothing changes when every folder is there (V(present)) or none holds the
    mark (V(absent)).
  - Runs on the host; needs only the Python standard library.
options:
  folders:
    description: Absolute paths, parents before children (as the envoy_proxy role lists them).
    type: list
    elements: path
    required: true
  state:
    description: V(present) makes and marks missing folders; V(absent) removes the marked ones.
    type: str
    choices: [present, absent]
    default: present
  mark:
    description: Name of the mark file inside each folder meshwright made (a plain file name).
    type: str
    default: .meshwright-owned
  mark_content:
    description: What the mark file says (for a person who finds it).
    type: str
    default: "Made by meshwright: playbooks/uninstall.yml removes this folder.\n"
  mode:
    description: Mode of the folders made (parents made on the way included), for example C("0755").
    type: str
    default: "0755"
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The listed folders that exist (and, of those, the marked ones) before and after.
  platform:
    platforms: posix
author:
  - meshwright maintainers (@meshwright)
"""

EXAMPLES = r"""
- name: Make and mark meshwright's folders
  meshwright.mesh.mesh_owned_folders:
    folders: [/etc/meshwright, /opt/meshwright, /var/lib/meshwright, /var/log/meshwright]
    mark_content: "Made by meshwright (proxy payment-1.default): playbooks/uninstall.yml removes this folder.\n"

- name: Remove the folders meshwright made (those with its mark)
  meshwright.mesh.mesh_owned_folders:
    folders: [/etc/meshwright, /opt/meshwright, /var/lib/meshwright, /var/log/meshwright]
    state: absent
"""

RETURN = r"""
created:
  description: Folders of O(folders) made and marked (or that would be, in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: ["/opt/meshwright", "/var/log/meshwright"]
removed:
  description: Marked folders removed (or that would be, in check mode), children first.
  returned: always
  type: list
  elements: str
  sample: ["/var/log/meshwright", "/opt/meshwright"]
"""

import os
import re
import shutil

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.mesh_file_set import write_atomic


def path_problems(folders, mark):
    """Why the arguments may not name folders to make or remove (empty when they may)."""
    problems = [f"{path!r} is not an absolute path" for path in folders if not os.path.isabs(path)]
    problems += [f"{path!r} has a '..' part" for path in folders if ".." in path.split("/")]
    problems += [f"{path!r} is the root folder" for path in folders if os.path.normpath(path) == "/"]
    if not mark or os.path.basename(mark) != mark or mark in (".", ".."):
        problems.append(f"mark {mark!r} is not a plain file name")
    return problems


def make_folder(path, mode):
    """Make path and the parents it needs, each with mode (whatever the umask)."""
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        make_folder(parent, mode)
    os.mkdir(path)
    os.chmod(path, mode)


def is_marked(folder, mark):
    return os.path.isdir(folder) and os.path.isfile(os.path.join(folder, mark))


def remove_folder(path):
    """A link to a folder goes, not what it points to."""
    if os.path.islink(path):
        os.unlink(path)
    else:
        shutil.rmtree(path)


def folder_states(folders, mark):
    """Each listed folder that exists -> whether it holds the mark (what the diff shows)."""
    return {path: is_marked(path, mark) for path in folders if os.path.lexists(path)}


def states_after(states, created, removed):
    """The folder states a run leaves: made ones marked, removed ones gone with what was in them."""
    after = {path: marked for path, marked in states.items()
             if not any(path == gone or path.startswith(gone + "/") for gone in removed)}
    after.update((path, True) for path in created)
    return after


def describe(states, folders):
    return "".join(f"{path}{' (marked)' if states[path] else ''}\n" for path in folders if path in states)


def ensure_present(module, folders):
    params = module.params
    created = [path for path in folders if not os.path.lexists(path)]
    if not module.check_mode:
        mode = int(params["mode"], 8)
        for path in created:
            if not os.path.isdir(path):  # else made already as the parent of one before it
                make_folder(path, mode)
            write_atomic(os.path.join(path, params["mark"]), params["mark_content"], replace=module.atomic_move)
    return created


def ensure_absent(module, folders):
    removed = [path for path in reversed(folders) if is_marked(path, module.params["mark"])]
    if not module.check_mode:
        for path in removed:
            if os.path.lexists(path):  # not gone already with a marked parent
                remove_folder(path)
    return removed


def main():
    module = AnsibleModule(
        argument_spec=dict(
            folders=dict(type="list", elements="path", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            mark=dict(type="str", default=".meshwright-owned"),
            mark_content=dict(type="str", default="Made by meshwright: playbooks/uninstall.yml removes this folder.\n"),
            mode=dict(type="str", default="0755"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    folders = [os.path.normpath(path) for path in params["folders"]]
    problems = path_problems(params["folders"], params["mark"])
    if not re.fullmatch("[0-7]{3,4}", params["mode"]):
        problems.append(f"mode {params['mode']!r} is not an octal mode such as 0755")
    if problems:
        module.fail_json(msg="mesh_owned_folders: " + "; ".join(problems), created=[], removed=[])

    before = folder_states(folders, params["mark"])
    try:
        if params["state"] == "present":
            created, removed = ensure_present(module, folders), []
        else:
            created, removed = [], ensure_absent(module, folders)
    except OSError as error:
        module.fail_json(msg=f"mesh_owned_folders: {error}", created=[], removed=[])

    result = dict(changed=bool(created or removed), created=created, removed=removed)
    if module._diff:
        result["diff"] = dict(before=describe(before, folders), after=describe(states_after(before, created, removed), folders),
                              before_header="meshwright's folders", after_header="meshwright's folders")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
