#!/usr/bin/python
# -*- coding: utf-8 -*-
# meshwright (documentation only: the action plugin plugins/action/mesh_render.py does the work):
# validate the mesh config and render proxies, on the controller.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_render
short_description: Validate the mesh config and render the config of every proxy
description:
  - Loads the mesh config (Istio API YAML), validates all of it (shape, references, semantics, Envoy's protos),
    and compiles the Envoy config of each proxy named in O(proxies).
  - A pipe module, in the manner of C(x509_certificate_pipe) - content in, content out. It writes nothing, so it
    never reports a change. M(meshwright.mesh.mesh_proxy_config) writes the result on each host.
  - "An action plugin: it runs in the controller's Ansible process, with the Python that runs ansible-playbook
    (which must have the C(meshwright) package) - no C(delegate_to), no interpreter setting. Use C(run_once: true)."
  - "When the mesh config is invalid, the task fails with every problem found, each as
    C(FILE:LINE: Kind/namespace/name: field.path: message)."
  - "Warnings of validation (problems that do not stop it, such as a principal in a trust domain that is not the
    mesh's) are shown as Ansible warnings, in the same form."
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
  hosts:
    description:
      - Inventory host name to the proxy it runs (C(name.namespace), as in O(proxies)); the result's RV(identities) is
        then the signing plan - which identity each host may be given, and by which site's intermediate.
      - Build it from the inventory in the first play, before any task runs on a host, and register the result -
        registered variables outrank the facts a host's modules return, so no host can change the plan afterwards.
    type: dict
  sites:
    description:
      - Inventory host name to its site (the intermediate CA that signs its certificate); hosts left out are in
        site C(default). Each must be a DNS-1123 label (a site name is a folder of the CA).
    type: dict
  xds:
    description:
      - Proxy IDs (as in O(proxies)) delivered by xDS from the control plane (C(meshwright serve)) instead of files.
        Their RV(proxies) C(files) are their bootstrap alone, which names every instance of O(xds_servers) and
        authenticates to them with the workload certificate in C(identity.certs_dir); the mesh must have identity.
    type: list
    elements: str
  xds_servers:
    description: C(HOST:PORT) of each control plane instance's xDS port, for O(xds).
    type: list
    elements: str
  xds_delta:
    description: Bootstraps for O(xds) use incremental xDS (DELTA_GRPC) instead of state of the world.
    type: bool
    default: false
  format:
    description: Format of the files Envoy reads.
    type: str
    choices: [yaml, json]
    default: yaml
extends_documentation_fragment:
  - action_common_attributes
  - meshwright.mesh.attributes
  - meshwright.mesh.attributes.info_module
author:
  - meshwright maintainers (@meshwright)
"""

EXAMPLES = r"""
- name: Validate the mesh config and render every proxy
  meshwright.mesh.mesh_render:
    mesh: ["{{ playbook_dir }}/../mesh"]
    proxies: "{{ dict(ansible_play_hosts_all | map('extract', hostvars, 'mesh_proxy')
                 | zip(ansible_play_hosts_all | map('extract', hostvars, 'mesh_config_dir'))) }}"
  run_once: true
  register: mesh_rendered
"""

RETURN = r"""
envoy_version:
  description: The Envoy version the mesh config is compiled for (MeshConfig C(envoyVersion)), which the control plane serves.
  returned: success
  type: str
  sample: 1.40.0
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
      description: File name to content, for M(meshwright.mesh.mesh_proxy_config).
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
          (M(meshwright.mesh.mesh_workload_csr), M(meshwright.mesh.mesh_workload_cert)). Null when the mesh has no identity.
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
identities:
  description:
    - With O(hosts) - inventory host name to C(proxy), C(site) and C(spiffe_id) (null when the mesh has no identity),
      the plan M(meshwright.mesh.mesh_workload_sign) signs against (its O(meshwright.mesh.mesh_workload_sign#module:plan)).
  returned: success, when O(hosts) is given
  type: dict
  sample: {"payment-1": {"proxy": "payment-1.default", "site": "eu-west", "spiffe_id": "spiffe://cluster.local/ns/default/sa/payment-service"}}
problems:
  description: "Every problem in the mesh config, as C(FILE:LINE: Kind/namespace/name: field.path: message)."
  returned: failure, when the mesh config is invalid
  type: list
  elements: str
  sample: ["mesh/routes.yaml:12: VirtualService/default/reviews: spec.http[0].route: weights sum to 90, not 100"]
"""
