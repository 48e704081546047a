#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copied from modules/mesh_cert_info.py by tools/sync_collection.py: edit the source, then run it.
# meshwright: what certificate a proxy has on disk and what its Envoy uses.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_cert_info
short_description: Read a proxy's workload certificate from its files and from Envoy's admin /certs
description:
  - Reads the certificate installed in O(certs_dir) (subject, SPIFFE ID, serial, issuer, expiry, days left, whether
    it is due for renewal, the trust bundle's fingerprint and roots), the CA certificates the proxy holds (the
    intermediates of its chain, the roots of its bundle) and, with O(admin_port), the serials Envoy says it uses
    (admin C(/certs)), so a play can check that a new certificate is in use.
  - Warns (in C(alerts) and as task warnings) when the workload certificate has fewer than O(warn_days) days left,
    when an intermediate or root has fewer than O(ca_warn_days), when the installed certificate is not for the
    installed key, and when Envoy does not use the installed certificate.
  - M(meshwright.mesh.mesh_cert_metrics) writes its results as Prometheus metrics.
  - Read-only; it never changes anything and never reads the key's content beyond matching it to the certificate.
  - Runs on the host; needs the standard library and python3-cryptography.
requirements:
  - cryptography >= 38 on the host (Debian and Ubuntu - python3-cryptography)
options:
  certs_dir:
    description: The proxy's certificates folder.
    type: path
    required: true
  admin_port:
    description: The proxy's admin port; when set, Envoy's view is read too.
    type: int
  warn_days:
    description: Warn when the certificate has fewer days left than this.
    type: float
    default: 7
  ca_warn_days:
    description: Warn when an intermediate or root CA certificate the proxy holds has fewer days left than this
      (a root that expires within this many days is a warning on every run).
    type: float
    default: 90
extends_documentation_fragment:
  - action_common_attributes
  - meshwright.mesh.attributes
  - meshwright.mesh.attributes.info_module
  - meshwright.mesh.envoy_admin
author:
  - meshwright maintainers (@meshwright)
"""

EXAMPLES = r"""
- name: Read the proxy's certificate and what Envoy uses
  meshwright.mesh.mesh_cert_info:
    certs_dir: /etc/meshwright/certs
    admin_port: 15000
  register: cert_info

- name: Gate on the new certificate being in use
  ansible.builtin.assert:
    that: cert_info.envoy.in_use
"""

RETURN = r"""
certificate:
  description: The installed certificate (subject, spiffe_id, serial, issuer, not_before, not_after, days_left,
    needs_renewal, renew_after, bundle_fingerprint, roots), or null when there is none.
  returned: always
  type: dict
  sample:
    spiffe_id: spiffe://cluster.local/ns/default/sa/payment-service
    serial: 5f0e64c9a1b2
    issuer: CN=local,O=cluster.local
    not_after: "2026-12-26T09:00:00+00:00"
    days_left: 29.99
    needs_renewal: false
    bundle_fingerprint: 9c1e...
authorities:
  description: The CA certificates the proxy holds - the intermediates of its chain (after the leaf), then the
    roots of its trust bundle - each with kind (V(intermediate) or V(root)), subject, serial, issuer,
    fingerprint, not_before, not_after and days_left.
  returned: always
  type: list
  elements: dict
  sample:
    - {kind: intermediate, subject: "CN=local,O=cluster.local", serial: 3a9f..., not_after: "2027-11-26T09:00:00+00:00", days_left: 729.99}
    - {kind: root, subject: "CN=meshwright root CA,O=cluster.local", serial: 71c2..., not_after: "2035-11-24T09:00:00+00:00", days_left: 3649.99}
key_matches:
  description: Whether the installed key is the certificate's key (null without a certificate).
  returned: always
  type: bool
pending_key:
  description: Whether a key made for a renewal waits for its certificate.
  returned: always
  type: bool
envoy:
  description: With O(admin_port) - C(serials) of the workload certificates Envoy presents (those with a SPIFFE ID),
    C(ca_serials) of the roots it trusts, C(days_until_expiration), and C(in_use) (it presents the installed
    certificate and no other, and trusts exactly the installed bundle's roots); null without O(admin_port) or when
    nothing answers.
  returned: always
  type: dict
alerts:
  description: The warnings, as text (also shown as task warnings).
  returned: always
  type: list
  elements: str
"""

import datetime

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.meshwright.mesh.plugins.module_utils.mesh_envoy_admin import EnvoyAdmin
from ansible_collections.meshwright.mesh.plugins.module_utils.mesh_cryptography import fail_without_cryptography

from ansible_collections.meshwright.mesh.plugins.module_utils.mesh_pki_csr import CRYPTOGRAPHY_IMPORT_ERROR, key_matches_certificate
from ansible_collections.meshwright.mesh.plugins.module_utils.mesh_pki_info import ca_certificates
from ansible_collections.meshwright.mesh.plugins.module_utils.mesh_workload_identity import CertsDir, IdentityError, envoy_certificates


def main():
    module = AnsibleModule(
        argument_spec=dict(
            certs_dir=dict(type="path", required=True),
            admin_port=dict(type="int"),
            admin_address=dict(type="str", default="127.0.0.1"),
            warn_days=dict(type="float", default=7),
            ca_warn_days=dict(type="float", default=90),
        ),
        supports_check_mode=True,
    )
    if CRYPTOGRAPHY_IMPORT_ERROR:  # no python3-cryptography on the host
        fail_without_cryptography(module, CRYPTOGRAPHY_IMPORT_ERROR)
    certs = CertsDir(module.params["certs_dir"])
    now = datetime.datetime.now(datetime.timezone.utc)
    alerts = []
    try:
        certificate = certs.summary(now)
        authorities = ca_certificates(certs.chain, certs.roots, now)
    except ValueError as error:
        module.fail_json(msg=f"cannot read the certificates in {certs.path}: {error}")
    key_matches = None
    if certificate is None:
        alerts.append(f"no certificate in {certs.path}")
    else:
        key_matches = bool(certs.key) and key_matches_certificate(certs.key, certs.chain)
        if not key_matches:
            alerts.append(f"the certificate in {certs.path} is not for the installed key")
        if certificate["days_left"] < module.params["warn_days"]:
            alerts.append(f"certificate {certificate['serial']} ({certificate['spiffe_id']}) expires in {certificate['days_left']} days, on "
                          f"{certificate['not_after']}")
    for authority in authorities:
        if authority["days_left"] < module.params["ca_warn_days"]:
            alerts.append(f"{authority['kind']} CA {authority['subject']} ({authority['serial']}) expires in {authority['days_left']} days, "
                          f"on {authority['not_after']}")
    envoy = None
    if module.params["admin_port"]:
        admin = EnvoyAdmin(module.params["admin_address"], module.params["admin_port"])
        try:
            envoy = envoy_certificates(admin)
        except (OSError, ValueError, IdentityError) as error:
            alerts.append(f"cannot read Envoy's certificates at {admin.base}/certs: {error}")
        if envoy is not None:
            roots = sorted(root["serial"] for root in certificate["roots"]) if certificate else []
            envoy["in_use"] = certificate is not None and envoy["serials"] == [certificate["serial"]] and envoy["ca_serials"] == roots
            if certificate is not None and envoy["serials"] != [certificate["serial"]]:
                alerts.append(f"Envoy presents {', '.join(envoy['serials']) or 'no certificate'}, not the installed {certificate['serial']}")
            elif certificate is not None and envoy["ca_serials"] != roots:
                alerts.append(f"Envoy trusts the roots {', '.join(envoy['ca_serials']) or 'none'}, not the installed bundle's {', '.join(roots)}")
    for alert in alerts:
        module.warn(alert)
    module.exit_json(changed=False, certificate=certificate, authorities=authorities, key_matches=key_matches, pending_key=bool(certs.pending_key),
                     envoy=envoy, alerts=alerts)


if __name__ == "__main__":
    main()
