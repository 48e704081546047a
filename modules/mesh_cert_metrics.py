#!/usr/bin/python
# -*- coding: utf-8 -*-
# meshwright: the certificate report as a Prometheus text file (node exporter textfile collector).

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_cert_metrics
short_description: Write proxies' certificate reports as a Prometheus text file
description:
  - Turns M(meshwright.mesh.mesh_cert_info) results into Prometheus metrics (gauges, exposition text format) and writes them to
    O(path), the way a node exporter's textfile collector reads them (C(--collector.textfile.directory), files
    ending in C(.prom)).
  - Per certificate (the workload certificate, the intermediates of its chain and the roots of its bundle)
    C(meshwright_cert_not_after_seconds), C(meshwright_cert_not_before_seconds) and C(meshwright_cert_valid), with
    labels C(proxy), C(kind) (V(workload), V(intermediate), V(root)), C(spiffe_id), C(serial), C(subject) and
    C(issuer); for the workload certificate also C(meshwright_cert_renew_after_seconds); per proxy
    C(meshwright_cert_trust_bundle_info) (label C(fingerprint)) and, when Envoy was read,
    C(meshwright_cert_envoy_in_use). A proxy without a certificate has C(meshwright_cert_valid{kind="workload"}) 0.
  - Only absolute times are written, so unchanged certificates give the same bytes and the file is left alone
    (changed=false); the time left is C(meshwright_cert_not_after_seconds - time()) in PromQL.
  - The file is replaced by rename from a temporary file in the same folder (a scraper never reads half a file);
    its folder is made when missing.
  - Standard library only; runs on the controller or on a host.
options:
  path:
    description: The file to write (its name should end in C(.prom) for the textfile collector).
    type: path
    required: true
  proxies:
    description:
      - Proxy ID to its M(meshwright.mesh.mesh_cert_info) result. Results without C(certificate) (a skipped task, for a proxy
        without identity) are left out.
    type: dict
    required: true
extends_documentation_fragment:
  - action_common_attributes
  - files
attributes:
  check_mode:
    support: full
    details: Says whether the file would change; writes nothing.
  diff_mode:
    support: full
    details: The file's text before and after (certificates are public; no secret is in it).
  platform:
    platforms: posix
author:
  - meshwright maintainers (@meshwright)
"""

EXAMPLES = r"""
- name: Read each proxy's certificates
  meshwright.mesh.mesh_cert_info:
    certs_dir: /etc/meshwright/certs
  register: cert_info

- name: Write them for the node exporter on this host
  meshwright.mesh.mesh_cert_metrics:
    path: /var/lib/prometheus/node-exporter/meshwright-certs.prom
    proxies: {"payment-1.default": "{{ cert_info }}"}
    mode: "0644"
"""

RETURN = r"""
path:
  description: The file written.
  returned: always
  type: str
samples:
  description: How many samples (lines with a value) the file holds.
  returned: always
  type: int
  sample: 14
"""

import datetime
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.mesh_file_set import write_atomic
from ansible.module_utils.mesh_pki_metrics import render_metrics


def _current(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def write(module: AnsibleModule, path: str, text: str) -> None:
    """Replace path by rename from a temporary file beside it (not named *.prom: the textfile
    collector never reads a part), readable by the node exporter."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    write_atomic(path, text, 0o644, replace=module.atomic_move)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            proxies=dict(type="dict", required=True),
        ),
        add_file_common_args=True,
        supports_check_mode=True,
    )
    # Readable by the exporter, whoever runs it (the files options' mode would otherwise follow the umask).
    if module.params["mode"] is None:
        module.params["mode"] = "0644"
    path = module.params["path"]
    for proxy, info in module.params["proxies"].items():
        if info is not None and not isinstance(info, dict):
            module.fail_json(msg=f"proxies.{proxy}: expected mesh_cert_info's result (a dict), got {type(info).__name__}")
    try:
        text = render_metrics(module.params["proxies"], datetime.datetime.now(datetime.timezone.utc))
    except (KeyError, TypeError, ValueError) as error:
        module.fail_json(msg=f"proxies: not mesh_cert_info results ({type(error).__name__}: {error})")
    before = _current(path)
    changed = before != text
    if changed and not module.check_mode:
        write(module, path, text)
    if os.path.exists(path):
        changed = module.set_fs_attributes_if_different(module.load_file_common_arguments(module.params, path=path), changed)
    result = dict(changed=changed, path=path, samples=sum(1 for line in text.splitlines() if line and not line.startswith("#")))
    if module._diff:
        result["diff"] = {"before": before or "", "after": text, "before_header": path, "after_header": path}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
