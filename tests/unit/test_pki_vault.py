"""meshwright.pki.vault: the CA's keys encrypted as ansible-vault encrypts files. The
`ansible-vault` command reads what it writes and writes what it reads (run as a command:
importing Ansible's controller code here would change how the in-process module tests see
warnings); passwords come from files or scripts as Ansible reads them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from meshwright.pki import csr
from meshwright.pki.vault import Vault, VaultError, is_encrypted, read_password_file

KEY = csr.make_private_key()
ANSIBLE_VAULT = os.path.join(os.path.dirname(sys.executable), "ansible-vault")


def ansible_vault(*args: str) -> str:
    ran = subprocess.run([ANSIBLE_VAULT, *args], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    return ran.stdout


def test_ansible_vault_reads_what_meshwright_writes_and_the_other_way_round(tmp_path):
    (tmp_path / "pw").write_text("correct horse\n")
    ours = Vault(b"correct horse", "test")
    sealed = ours.encrypt(KEY)
    assert sealed.startswith(b"$ANSIBLE_VAULT;1.1;AES256\n") and b"PRIVATE KEY" not in sealed
    assert max(len(line) for line in sealed.splitlines()) == 80 and is_encrypted(sealed)
    (tmp_path / "ours.pem").write_bytes(sealed)
    assert ansible_vault("view", "--vault-password-file", str(tmp_path / "pw"), str(tmp_path / "ours.pem")).encode() == KEY
    (tmp_path / "theirs.pem").write_bytes(KEY)
    ansible_vault("encrypt", "--vault-password-file", str(tmp_path / "pw"), str(tmp_path / "theirs.pem"))
    assert ours.decrypt((tmp_path / "theirs.pem").read_bytes(), "theirs.pem") == KEY
    assert ours.encrypt(KEY) != sealed  # a new salt each time
    assert not is_encrypted(KEY)


def test_a_wrong_password_or_a_damaged_file_is_an_error_naming_the_file():
    sealed = Vault(b"right", "a").encrypt(KEY)
    with pytest.raises(VaultError, match=r"^/ca/root/key.pem: the vault password from /etc/pw does not decrypt it \(a wrong password\?\)$"):
        Vault(b"wrong", "/etc/pw").decrypt(sealed, "/ca/root/key.pem")
    with pytest.raises(VaultError, match="^/ca/root/key.pem: a damaged ansible-vault file$"):
        Vault(b"right", "a").decrypt(sealed[:-40] + b"zz\n", "/ca/root/key.pem")
    with pytest.raises(VaultError, match="not an ansible-vault 1.1/1.2 AES256 file"):
        Vault(b"right", "a").decrypt(b"$ANSIBLE_VAULT;1.0;DES\n00\n", "k")


def test_password_files_and_scripts_are_read_as_ansible_reads_them(tmp_path):
    plain = tmp_path / "pw"
    plain.write_text("  s3cret\n")
    assert read_password_file(str(plain)) == b"s3cret"
    script = tmp_path / "pw.sh"
    script.write_text("#!/bin/sh\necho from-a-script\n")
    os.chmod(script, 0o700)
    assert read_password_file(str(script)) == b"from-a-script"
    failing = tmp_path / "fail.sh"
    failing.write_text("#!/bin/sh\necho locked >&2\nexit 3\n")
    os.chmod(failing, 0o700)
    with pytest.raises(VaultError, match=r"the vault password script .*fail.sh failed \(exit code 3\): locked"):
        read_password_file(str(failing))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(VaultError, match="the vault password file .*empty is empty"):
        read_password_file(str(tmp_path / "empty"))
    with pytest.raises(VaultError, match="the vault password file .*missing was not found"):
        read_password_file(str(tmp_path / "missing"))
