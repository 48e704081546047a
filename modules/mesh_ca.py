#!/usr/bin/python
# -*- coding: utf-8 -*-
# meshwright: the mesh CA on the controller (root, one intermediate per site, rotations).

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh_ca
short_description: Keep the mesh CA (a root and one intermediate per site) in a folder on the controller
description:
  - Makes the mesh's root CA and one intermediate CA per site (cluster, data centre) under O(path), as Istio's
    plug-in CA layout does; workload certificates are signed by the intermediates (M(mesh_workload_sign)).
  - Keys are ECDSA P-256, written C(0600) in C(0700) folders, and never returned or printed; the module returns
    certificate summaries and the trust bundle (public).
  - With O(vault_password_file), every key is stored encrypted as C(ansible-vault encrypt) writes it (format 1.1,
    AES256) and decrypted in memory only; keys found in plaintext are encrypted in place (reported as changed
    once). A password that does not open a key is an error naming the file, before anything is written.
  - Existing material is handled by O(regenerate), careful by default - a root is never replaced by accident.
  - Whatever O(regenerate) says, an intermediate is renewed (new key, signed by the root) once it is past two thirds
    of its life, expired, or not limited to the trust domain by a URI name constraint (C(spiffe://<trust domain>)
    only); its workloads then renew their certificates. A root past two thirds of its life is a warning.
  - Each root or intermediate is written into a new folder renamed into place - an interruption leaves the old key
    and certificate or the new ones, never a mix. One run at a time - see O(lock_timeout).
  - O(rotate) runs one step of a rotation. Each step can be run again after an interruption; rotate-certs.yml
    runs them in order with the proxies' certificates in between.
  - Runs on the controller with the Python that has the C(meshwright) package.
requirements:
  - meshwright (on the controller)
options:
  path:
    description: The CA folder on the controller (created C(0700)).
    type: path
    required: true
  trust_domain:
    description: The mesh's trust domain (the MeshConfig's C(trustDomain)); the root's organization.
    type: str
    default: cluster.local
  intermediates:
    description:
      - Sites that need an intermediate CA (made when missing). Each is a DNS-1123 label (it names the
        intermediate's folder); anything else, such as C(../root), is refused before anything is read or written.
    type: list
    elements: str
    default: []
  regenerate:
    description:
      - What to do with a root or intermediate that exists already.
      - V(never) keeps it as it is (a warning says when it does not match, for example an expired one); an
        intermediate that the current root did not issue is an error even so.
      - V(fail) fails when it does not match the options (trust domain, site name, expiry, issuer).
      - V(partial_idempotence) replaces it when it does not match.
      - V(always) replaces it on every run (not idempotent; every proxy then needs new certificates).
      - The same policy decides whether O(import) may replace a different root or intermediate.
    type: str
    choices: [never, fail, partial_idempotence, always]
    default: never
  import:
    description:
      - Existing CA material to take, from files on the controller; the same material again changes nothing.
      - Without the root's key the CA can only sign with imported intermediates.
    type: dict
    suboptions:
      root:
        description: The root CA.
        type: dict
        suboptions:
          certificate: {description: PEM certificate file., type: path, required: true}
          private_key: {description: PEM private key file (unencrypted); may be left out., type: path}
      intermediates:
        description: Site name to C({certificate, private_key}) files of an intermediate issued by the root.
        type: dict
  rotate:
    description:
      - V(none) only makes what is missing.
      - V(intermediates) makes a new intermediate for every site in O(intermediates) (its workloads then renew).
      - V(root_begin) makes the next root; the trust bundle holds both roots from then on.
      - V(root_switch) makes the next root the root (the old one stays in the bundle) and reissues every
        intermediate from it.
      - V(root_finish) drops the old root from the bundle (once every proxy holds a chain from the new root).
    type: str
    choices: [none, intermediates, root_begin, root_switch, root_finish]
    default: none
  vault_password_file:
    description:
      - A file holding the vault password that encrypts the CA's keys at rest (an executable file is run and its
        output is the password, as Ansible does). Without it, the environment's C(ANSIBLE_VAULT_PASSWORD_FILE).
      - Keys in O(import) may be vault-encrypted with the same password.
      - M(mesh_workload_sign) needs the same password to sign.
    type: path
  hosts_trust:
    description:
      - Inventory host name to the trust bundle (PEM) its proxy has installed already, read from the hosts before
        anything changes (the mesh_ca role reads them).
      - When a host trusts none of the roots this CA holds (root, next or previous root), the CA folder looks lost
        or is another mesh's, and the module fails naming the hosts before anything is written, rather than make a
        new root and move the proxies to it one by one (breaking mTLS between them mid-run), unless O(new_root).
    type: dict
  new_root:
    description: Go on although hosts trust roots this CA does not hold (a new root on purpose, see O(hosts_trust)).
    type: bool
    default: false
  lock_timeout:
    description:
      - One run at a time in the CA folder - the module holds an exclusive lock (C(.meshwright.lock) in O(path),
        which names the holder - pid, host, command). A second run waits up to this many seconds, then fails
        naming the holder. Check mode takes a shared lock instead - it waits for a writer and changes nothing.
    type: float
    default: 300
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details: The same decisions, with nothing written; the result shows what would be.
  diff_mode:
    support: full
    details: Subjects, serials and expiry of the roots and intermediates before and after; never keys.
  platform:
    platforms: posix
author:
  - meshwright maintainers
"""

EXAMPLES = r"""
- name: Make the mesh CA (once; later runs change nothing)
  mesh_ca:
    path: /srv/meshwright/ca
    trust_domain: cluster.local
    intermediates: [eu-west, us-east]
  delegate_to: localhost
  run_once: true
  vars:
    ansible_python_interpreter: "{{ meshwright_controller_python }}"
  register: mesh_ca_state

- name: Take the company's root and the site intermediate it issued
  mesh_ca:
    path: /srv/meshwright/ca
    import:
      root: {certificate: /secure/root-cert.pem}
      intermediates:
        eu-west: {certificate: /secure/eu-west-cert.pem, private_key: /secure/eu-west-key.pem}
  delegate_to: localhost
  run_once: true

- name: Keep the CA's keys encrypted with ansible-vault (plaintext keys are encrypted on this run)
  mesh_ca:
    path: /srv/meshwright/ca
    intermediates: [eu-west, us-east]
    vault_password_file: /secure/mesh-ca-vault-password
  delegate_to: localhost
  run_once: true

- name: Begin a root rotation (every trust bundle then holds the old and the new root)
  mesh_ca:
    path: /srv/meshwright/ca
    rotate: root_begin
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
root:
  description: The root CA (subject, issuer, serial, fingerprint, not_before, not_after, certificate PEM).
  returned: success
  type: dict
next_root:
  description: The next root during a root rotation (between V(root_begin) and V(root_switch)), else null.
  returned: success
  type: dict
previous_root:
  description: The old root after V(root_switch), until V(root_finish), else null.
  returned: success
  type: dict
intermediates:
  description: Site name to its intermediate's summary (as O(root)).
  returned: success
  type: dict
bundle:
  description: The trust bundle every proxy gets (PEM, each root once, oldest first).
  returned: success
  type: str
rotation:
  description: C(none), C(root_begun) or C(root_switched).
  returned: success
  type: str
actions:
  description: What was done (or would be, in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: ["encrypt the key of root with ansible-vault", "make intermediate CA 'local'"]
"""

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib

try:
    from meshwright.pki.ca_folder import REGENERATE, CaError, CaFolder, check_site
    from meshwright.pki.vault import Vault, VaultError
except ImportError:
    CaFolder = None
    REGENERATE = ("never", "fail", "partial_idempotence", "always")


def _read(module, path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        module.fail_json(msg=f"cannot read {path}: {error}")


def import_material(module, folder, changes):
    material = module.params["import"] or {}
    regenerate = module.params["regenerate"]
    root = material.get("root")
    if root:
        key = _read(module, root["private_key"]) if root.get("private_key") else None
        changes.append(folder.import_root(_read(module, root["certificate"]), key, regenerate))
    for name, files in sorted((material.get("intermediates") or {}).items()):
        if not isinstance(files, dict) or not files.get("certificate") or not files.get("private_key"):
            module.fail_json(msg=f"import.intermediates.{name} needs certificate and private_key (file paths)")
        changes.append(folder.import_intermediate(name, _read(module, files["certificate"]), _read(module, files["private_key"]), regenerate))


def run(module, folder):
    params = module.params
    rotate, names = params["rotate"], params["intermediates"]
    folder.check_hosts_trust({str(host): str(bundle).encode() for host, bundle in (params["hosts_trust"] or {}).items()}, params["new_root"])
    changes = [folder.encrypt_keys()]
    import_material(module, folder, changes)
    # A root switch goes first: an interrupted one leaves no root until it is resumed.
    if rotate == "root_switch":
        changes.append(folder.switch_root(names, params["trust_domain"]))
    changes.append(folder.ensure(params["trust_domain"], names, params["regenerate"]))
    if rotate == "intermediates":
        changes.append(folder.rotate_intermediates(names, params["trust_domain"]))
    elif rotate == "root_begin":
        changes.append(folder.begin_root_rotation(params["trust_domain"]))
    elif rotate == "root_finish":
        changes.append(folder.finish_root_rotation())
    return changes


def diff_view(report):
    """The report without PEM: who, which serial, until when."""
    def brief(entry):
        return None if entry is None else {key: entry[key] for key in ("subject", "serial", "not_after")}
    return {
        "root": brief(report["root"]), "next_root": brief(report["next_root"]), "previous_root": brief(report["previous_root"]),
        "intermediates": {name: brief(entry) for name, entry in report["intermediates"].items()},
    }


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            trust_domain=dict(type="str", default="cluster.local"),
            intermediates=dict(type="list", elements="str", default=[]),
            regenerate=dict(type="str", choices=list(REGENERATE), default="never"),
            rotate=dict(type="str", choices=["none", "intermediates", "root_begin", "root_switch", "root_finish"], default="none"),
            vault_password_file=dict(type="path", no_log=False, fallback=(env_fallback, ["ANSIBLE_VAULT_PASSWORD_FILE"])),  # a path, not the secret
            lock_timeout=dict(type="float", default=300.0),
            hosts_trust=dict(type="dict"),
            new_root=dict(type="bool", default=False),
            **{"import": dict(type="dict", options=dict(
                root=dict(type="dict", options=dict(certificate=dict(type="path", required=True), private_key=dict(type="path"))),
                intermediates=dict(type="dict"),
            ))},
        ),
        supports_check_mode=True,
    )
    if CaFolder is None:
        module.fail_json(msg=missing_required_lib("meshwright", reason="to keep the mesh CA on the controller"))
    try:
        # Site names are folders of the CA: checked before the folder is even locked.
        for name in module.params["intermediates"] + sorted(((module.params["import"] or {}).get("intermediates") or {})):
            check_site(name)
        vault = Vault.from_file(module.params["vault_password_file"]) if module.params["vault_password_file"] else None
        # Reading every certificate and key first: a key the password does not open fails here, before any write.
        folder = CaFolder(module.params["path"], check_mode=module.check_mode, vault=vault)
        with folder.locked(module.params["lock_timeout"]):
            before = CaFolder(module.params["path"], vault=vault).report()
            changes = run(module, folder)
            report = folder.report()
    except (CaError, VaultError) as error:
        module.fail_json(msg=str(error))
    for change in changes:
        for warning in change.warnings:
            module.warn(warning)
    actions = [action for change in changes for action in change.actions]
    result = dict(changed=bool(actions), actions=actions, **report)
    if module._diff:
        result["diff"] = {"before": diff_view(before), "after": diff_view(report)}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
