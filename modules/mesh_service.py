#!/usr/bin/python
# -*- coding: utf-8 -*-
# meshwright: run a long-lived process (Envoy, an app) under systemd or supervisord.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_service
short_description: Run a long-lived process under systemd, or supervisord where there is no systemd
description:
  - Runs O(command) as a service named O(name) and brings it to O(state).
  - Under systemd (where PID 1 is systemd and C(systemctl) works) it writes C(/etc/systemd/system/<name>.service).
  - Elsewhere (containers, the local demo) it uses this host's own supervisord, from the PyPI C(supervisor)
    package, kept in O(supervisor_dir) (its C(supervisord.conf), socket, pid file, log, and C(programs/<name>.conf)).
    supervisord is started when its socket does not answer and stopped when its last program is removed.
  - Nothing changes when the unit or program file is identical and the process is in the asked state.
    A changed unit or program file restarts a running process. A process that is not running is started again.
  - V(reloaded) sends SIGHUP to the running process instead of restarting it, for a program that reloads on
    SIGHUP, such as the C(envoy-restarter) of the envoy_proxy role (an Envoy hot restart).
  - With O(ready_url), after a start or restart it waits until the URL answers HTTP 200 and fails with the end
    of the process's log otherwise.
  - Under systemd with O(user) and O(log_file), the log file belongs to that user (systemd opens it as root, but
    a process that reopens its stdout, as Envoy does for an access log at C(/dev/stdout), needs it as its own).
  - Runs on the host; needs only the Python standard library (and supervisord, for that manager).
options:
  name:
    description: Name of the service (its unit or program name). Letters, digits and C(_.@-).
    type: str
    required: true
  command:
    description: The program and its arguments (no shell).
    type: list
    elements: str
  manager:
    description: V(auto) picks systemd when the host runs it, else supervisord.
    type: str
    choices: [auto, systemd, supervisord]
    default: auto
  state:
    description:
      - V(started) and V(stopped) are idempotent; V(restarted) always restarts.
      - V(reloaded) sends SIGHUP to the main process when it runs from an unchanged unit or program file;
        otherwise it does what V(started) does (start it, or restart it on the changed file).
      - V(absent) stops the process and removes its unit or program file. Under supervisord, processes of the
        program that outlived a supervisord killed outright (found by the C(SUPERVISOR_*) marks in their
        environment) are stopped too.
    type: str
    choices: [started, stopped, restarted, reloaded, absent]
    default: started
  enabled:
    description:
      - systemd only. Whether the unit starts at boot. By default enabled when O(state) is V(started),
        V(restarted) or V(reloaded), and left as it is otherwise.
      - Under supervisord a program is started with supervisord unless its O(state) is V(stopped).
    type: bool
  user:
    description: User the process runs as.
    type: str
  group:
    description: Group the process runs as (systemd only; under supervisord the user's groups apply).
    type: str
  environment:
    description:
      - Environment variables of the process.
      - Under supervisord a value can hold one kind of quote only, and cannot start or end with one
        (its conf has no escapes); other values fail the task.
    type: dict
    default: {}
  working_dir:
    description: Working directory of the process.
    type: path
  log_file:
    description:
      - File the process's stdout and stderr are appended to.
      - Default under systemd is the journal; under supervisord C(<supervisor_dir>/logs/<name>.log).
    type: path
  supervisor_dir:
    description: Folder of this host's supervisord. Required when supervisord is the manager.
    type: path
  supervisord:
    description: Path of the supervisord program. Default is the one beside the Python that runs this module.
    type: path
  ready_url:
    description:
      - After a start or restart (and on every run with O(state=started) or V(reloaded)), wait until this URL answers 200.
      - After a SIGHUP the process that answers may still be the old one; the caller checks what it needs.
    type: str
  ready_timeout:
    description: Seconds to wait for O(ready_url).
    type: float
    default: 30
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The unit or program file before and after, and the status (running, stopped) before and after.
  platform:
    platforms: posix
author:
  - meshwright maintainers (@meshwright)
"""

EXAMPLES = r"""
- name: Run the sidecar and wait until Envoy is ready
  meshwright.mesh.mesh_service:
    name: envoy-payment-1
    command: [/opt/meshwright/envoy/current/bin/envoy, -c, /etc/meshwright/proxy/bootstrap.yaml]
    user: envoy
    ready_url: http://127.0.0.1:15021/healthz/ready
    ready_timeout: 30

- name: Run an app under this folder's supervisord (no systemd here)
  meshwright.mesh.mesh_service:
    name: demo-app
    manager: supervisord
    supervisor_dir: /srv/mesh/host-1/supervisor
    command: [python3, -m, http.server, "9080", --bind, 127.0.0.1]
    environment:
      PYTHONUNBUFFERED: "1"
    ready_url: http://127.0.0.1:9080/

- name: Remove it (supervisord stops with its last program)
  meshwright.mesh.mesh_service:
    name: demo-app
    manager: supervisord
    supervisor_dir: /srv/mesh/host-1/supervisor
    state: absent
"""

RETURN = r"""
status:
  description: C(running) or C(stopped) after the task (predicted in check mode).
  returned: success
  type: str
  sample: running
pid:
  description: Process ID of the running process, or null.
  returned: success
  type: int
  sample: 4242
manager:
  description: The service manager used, C(systemd) or C(supervisord).
  returned: always
  type: str
  sample: supervisord
config_file:
  description: The unit or program file of the service.
  returned: success
  type: str
  sample: /srv/mesh/host-1/supervisor/programs/demo-app.conf
actions:
  description: What was done (or would be, in check mode), in order.
  returned: success
  type: list
  elements: str
  sample: ["write program file", "update program"]
log_tail:
  description: The last lines of the process's log.
  returned: failure, when the process did not start or did not become ready
  type: str
"""

import xmlrpc.client

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.mesh_service_control import ServiceError, ServiceSpec, ensure_service
from ansible.module_utils.mesh_service_manager import ServiceManagerError, service_manager


def choose_manager(module, spec):
    params = module.params
    try:
        manager = service_manager(spec, params["manager"], params["enabled"], params["supervisor_dir"], params["supervisord"])
    except ServiceManagerError as error:
        module.fail_json(msg=str(error), manager=error.manager)
    if spec.group and manager.name == "supervisord":
        module.warn("group is ignored under supervisord: the process gets the groups of its user")
    return manager


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            command=dict(type="list", elements="str"),
            manager=dict(type="str", choices=["auto", "systemd", "supervisord"], default="auto"),
            state=dict(type="str", choices=["started", "stopped", "restarted", "reloaded", "absent"], default="started"),
            enabled=dict(type="bool"),
            user=dict(type="str"),
            group=dict(type="str"),
            environment=dict(type="dict", default={}),
            working_dir=dict(type="path"),
            log_file=dict(type="path"),
            supervisor_dir=dict(type="path"),
            supervisord=dict(type="path"),
            ready_url=dict(type="str"),
            ready_timeout=dict(type="float", default=30),
        ),
        required_if=[("state", "started", ("command",)), ("state", "stopped", ("command",)),
                     ("state", "restarted", ("command",)), ("state", "reloaded", ("command",))],
        supports_check_mode=True,
    )
    params = module.params
    spec = ServiceSpec(params["name"], tuple(params["command"] or ()), params["user"], params["group"],
                       {str(k): str(v) for k, v in params["environment"].items()}, params["working_dir"], params["log_file"])
    problems = spec.problems(needs_command=params["state"] != "absent")
    if problems:
        module.fail_json(msg="; ".join(problems))
    manager = choose_manager(module, spec)
    try:
        result = ensure_service(manager, params["state"], module.check_mode, params["ready_url"], params["ready_timeout"])
    except ServiceError as error:
        module.fail_json(msg=str(error), log_tail=error.log_tail, manager=manager.name)
    except (OSError, xmlrpc.client.Error) as error:
        module.fail_json(msg=f"{manager.name} failed for {spec.name}: {error}", log_tail=manager.log_tail(), manager=manager.name)
    diff = result.pop("diff")
    if module._diff:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
