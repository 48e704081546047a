# -*- coding: utf-8 -*-
"""The mesh CA's keys at rest, encrypted by Ansible's own vault (ansible-vault's format, its
code): the secrets of the run (--ask-vault-pass, --vault-id, --vault-password-file,
ANSIBLE_VAULT_PASSWORD_FILE), or those of a password file the task names. The core's CaFolder
takes it as its vault (encrypt, decrypt); keys encrypted before (vault 1.1 or 1.2) stay readable."""

from __future__ import annotations

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_native
from ansible.parsing.vault import AnsibleVaultError, VaultLib, get_file_vault_secret, match_encrypt_secret

try:
    from meshwright.pki.ca_folder import CaError
except ImportError:
    pass  # ControllerAction (controller_action.py), which runs the mesh_ca action, names the missing package


class AnsibleVault:
    """encrypt(pem) -> vault text; decrypt(vault text, what) -> pem, CaError naming `what`."""

    def __init__(self, secrets: list, source: str):
        self._lib = VaultLib(secrets)
        self._vault_id, self._secret = match_encrypt_secret(secrets)
        self.source = source  # where the secrets came from, for messages (never a password)

    def encrypt(self, plaintext: bytes) -> bytes:
        return self._lib.encrypt(plaintext, secret=self._secret, vault_id=self._vault_id)

    def decrypt(self, data: bytes, what: str) -> bytes:
        try:
            return self._lib.decrypt(data)
        except AnsibleVaultError as error:
            if "Decryption failed" in str(error) or "no vault secrets" in str(error).lower():
                raise CaError(f"{what}: the vault password from {self.source} does not decrypt it (a wrong password?)") from None
            raise CaError(f"{what}: a damaged ansible-vault file ({to_native(error)})") from None


def task_vault(password_file: str | None, loader) -> AnsibleVault | None:
    """The vault of a task: its password file when it names one, else the run's vault secrets,
    else none (keys stay in plaintext)."""
    if password_file:
        try:
            secret = get_file_vault_secret(filename=password_file, loader=loader)
            secret.load()
        except AnsibleError as error:
            raise CaError(f"the vault password file {password_file}: {to_native(error.message)}") from None
        return AnsibleVault([("default", secret)], password_file)
    secrets = list(getattr(loader, "_vault", None).secrets or []) if getattr(loader, "_vault", None) else []
    if not secrets:
        return None
    return AnsibleVault(secrets, "the run's vault secrets (" + ", ".join(vault_id for vault_id, secret in secrets) + ")")
