# -*- coding: utf-8 -*-
"""The vault option of the controller actions that read or write the mesh CA's keys."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  vault_password_file:
    description:
      - A file holding the vault password of the CA's keys (an executable file is run and its output is the password,
        as Ansible does). The keys are encrypted at rest by Ansible's own vault and decrypted in memory only.
      - Without it, the run's vault secrets (C(--ask-vault-pass), C(--vault-id), C(--vault-password-file),
        C(ANSIBLE_VAULT_PASSWORD_FILE)); with none, keys are kept in plaintext (C(0600)).
      - With secrets, M(meshwright.mesh.mesh_ca) encrypts keys it finds in plaintext, in place.
    type: path
"""
