#!/usr/bin/python
# -*- coding: utf-8 -*-
# meshwright: validate the mesh config and render proxies, on the controller.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_render
short_description: Validate the mesh config and render the config of every proxy
description:
  - Loads the mesh config (Istio API YAML), validates all of it (shape, references, semantics, Envoy's protos),
    and compiles the Envoy config of each proxy named in O(proxies).
  - A pipe module, in the manner of C(x509_certificate_pipe) - content in, content out. It writes nothing, so it
    never reports a change. M(mesh_proxy_config) writes the result on each host.
  - "Runs on the controller (C(delegate_to: localhost), C(run_once: true)) with a Python that has the
    C(meshwright) package (set C(ansible_python_interpreter) to the virtualenv's Python for that task)."
  - "When the mesh config is invalid, the task fails with every problem found, each as
    C(FILE:LINE: Kind/namespace/name: field.path: message)."
requirements:
  - meshwright (on the controller)
options:
  mesh:
    description: Mesh config files or folders (every C(*.yaml)/C(*.yml) in a folder is read).
    type: list
    elements: path
    required: true
  proxies:
    description:
      - Proxy ID (C(name.namespace) of its WorkloadEntry or Gateway) to the config folder on that proxy's host.
      - The folder is written into the bootstrap (Envoy watches it), so it must be the path on the host.
    type: dict
    required: true
  format:
    description: Format of the files Envoy reads.
    type: str
    choices: [yaml, json]
    default: yaml
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details: Renders in check mode too; it writes nothing either way.
  diff_mode:
    support: full
    details: Nothing to diff; it never changes anything.
  platform:
    platforms: posix
author:
  - meshwright maintainers
"""

EXAMPLES = r"""
- name: Validate the mesh config and render every proxy
  mesh_render:
    mesh: ["{{ playbook_dir }}/../mesh"]
    proxies: "{{ dict(ansible_play_hosts_all | map('extract', hostvars, 'mesh_proxy')
                 | zip(ansible_play_hosts_all | map('extract', hostvars, 'mesh_config_dir'))) }}"
  delegate_to: localhost
  run_once: true
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  register: mesh_rendered
"""

RETURN = r"""
proxies:
  description: The rendered proxies, by ID.
  returned: success
  type: dict
  contains:
    kind:
      description: C(sidecar) or C(gateway).
      type: str
      sample: sidecar
    digest:
      description: SHA-256 over the files; equal digests mean identical config.
      type: str
    files:
      description: File name to content, for M(mesh_proxy_config).
      type: dict
    validation_bootstrap:
      description: The whole config as one static bootstrap, for C(envoy --mode validate) on the host.
      type: str
    ports:
      description: Where the running proxy answers on its host (C(admin), C(health), C(stats)).
      type: dict
      sample: {"admin": 15000, "health": 15021, "stats": 15090}
    identity:
      description:
        - With mesh identity on (the MeshConfig has C(certificates)) - C(spiffe_id), the proxy's identity (from its
          WorkloadEntry's namespace and service account), and C(certs_dir), where its Envoy reads its certificates
          (M(mesh_workload_csr), M(mesh_workload_cert)). Null when the mesh has no identity.
      type: dict
      sample: {"spiffe_id": "spiffe://cluster.local/ns/default/sa/payment-service", "certs_dir": "/etc/meshwright/certs"}
    capture:
      description:
        - With iptables capture (the WorkloadEntry's annotation C(sidecar.istio.io/interceptionMode=REDIRECT)) - C(mode),
          C(outbound_port) and C(inbound_port) (where the nat rules redirect to), C(exclude_inbound_ports) (the proxy's
          own ports) and C(hosts), each service name the proxy reaches to its virtual IP (for the host's name lookup).
          Null without capture.
      type: dict
      sample: {"mode": "REDIRECT", "outbound_port": 15001, "inbound_port": 15006, "exclude_inbound_ports": [15000, 15001, 15006, 15021, 15090],
               "hosts": {"payment-service.default.svc.cluster.local": "240.240.0.2"}}
  sample:
    payment-1.default:
      kind: sidecar
      digest: 3e4f76b2000c41f7d6cfb682e7b50c08ff225881f9943ef69bae1a282267bd6c
      files: {"bootstrap.yaml": "...", "lds.yaml": "...", "cds.yaml": "..."}
      validation_bootstrap: "..."
      ports: {"admin": 15100, "health": 15121, "stats": 15190}
problems:
  description: "Every problem in the mesh config, as C(FILE:LINE: Kind/namespace/name: field.path: message)."
  returned: failure, when the mesh config is invalid
  type: list
  elements: str
  sample: ["mesh/routes.yaml:12: VirtualService/default/reviews: spec.http[0].route: weights sum to 90, not 100"]
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from meshwright.deliver.bundle import RenderError, bundle_mesh
except ImportError:
    bundle_mesh = None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            mesh=dict(type="list", elements="path", required=True),
            proxies=dict(type="dict", required=True),
            format=dict(type="str", choices=["yaml", "json"], default="yaml"),
        ),
        supports_check_mode=True,
    )
    if bundle_mesh is None:
        module.fail_json(msg=missing_required_lib("meshwright", reason="to render the mesh on the controller "
                                                  "(set ansible_python_interpreter to the Python that has it)"))
    config_dirs = {str(proxy): str(folder) for proxy, folder in module.params["proxies"].items()}
    try:
        bundles = bundle_mesh(module.params["mesh"], config_dirs, module.params["format"])
    except RenderError as error:
        module.fail_json(msg=str(error), problems=[str(problem) for problem in error.problems])
    proxies = {
        proxy: dict(kind=b.kind, digest=b.digest, files=b.files, validation_bootstrap=b.validation_bootstrap, ports=b.ports,
                    identity=b.identity, capture=b.capture)
        for proxy, b in bundles.items()
    }
    module.exit_json(changed=False, proxies=proxies)


if __name__ == "__main__":
    main()
