"""The mesh CA's private keys at rest, encrypted as ansible-vault encrypts files: format 1.1,
AES256 (AES-256-CTR, HMAC-SHA256, keys from PBKDF2-HMAC-SHA256 over a random salt). A key
file so encrypted is what `ansible-vault encrypt` writes: `ansible-vault view` and `decrypt`
read it with the same password, and the other way round.

Why not ansible's own VaultLib: it is controller code, and a module runs in Ansible's module
wrapper, where importing it fails. This is the same format with python-cryptography (which
ansible-vault uses too); tests check that each reads what the other writes.

A password file is read as Ansible reads one: its content without surrounding whitespace, or,
when it is executable, what it prints.
"""

from __future__ import annotations

import binascii
import os
import subprocess

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

HEADER = b"$ANSIBLE_VAULT"
ITERATIONS = 10000  # ansible-vault's, fixed by the format


class VaultError(Exception):
    """A password that cannot be read or does not open a file (the message says which)."""


def is_encrypted(data: bytes) -> bool:
    return data.lstrip().startswith(HEADER)


def read_password_file(path: str) -> bytes:
    if not os.path.isfile(path):
        raise VaultError(f"the vault password file {path} was not found")
    if os.access(path, os.X_OK):
        ran = subprocess.run([path], capture_output=True, timeout=60, check=False)
        if ran.returncode != 0:
            raise VaultError(f"the vault password script {path} failed (exit code {ran.returncode}): {ran.stderr.decode(errors='replace').strip()}")
        password = ran.stdout.strip()
    else:
        with open(path, "rb") as handle:
            password = handle.read().strip()
    if not password:
        raise VaultError(f"the vault password file {path} is empty")
    return password


def _keys(password: bytes, salt: bytes) -> tuple[bytes, bytes, bytes]:
    """(AES key, HMAC key, counter IV), as ansible-vault derives them."""
    derived = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32 + 32 + 16, salt=salt, iterations=ITERATIONS).derive(password)
    return derived[:32], derived[32:64], derived[64:]


class Vault:
    def __init__(self, password: bytes, source: str):
        self._password = password
        self.source = source  # where the password came from, for messages (never the password)

    @classmethod
    def from_file(cls, path: str) -> "Vault":
        return cls(read_password_file(path), path)

    def encrypt(self, plaintext: bytes) -> bytes:
        salt = os.urandom(32)
        aes_key, hmac_key, iv = _keys(self._password, salt)
        padder = padding.PKCS7(128).padder()
        encryptor = Cipher(algorithms.AES(aes_key), modes.CTR(iv)).encryptor()
        ciphertext = encryptor.update(padder.update(plaintext) + padder.finalize()) + encryptor.finalize()
        mac = HMAC(hmac_key, hashes.SHA256())
        mac.update(ciphertext)
        body = binascii.hexlify(b"\n".join([binascii.hexlify(salt), binascii.hexlify(mac.finalize()), binascii.hexlify(ciphertext)]))
        lines = [HEADER + b";1.1;AES256"] + [body[i:i + 80] for i in range(0, len(body), 80)]
        return b"\n".join(lines) + b"\n"

    def decrypt(self, data: bytes, what: str) -> bytes:
        """The plaintext of an encrypted file; `what` names the file in errors."""
        lines = data.strip().splitlines()
        header = lines[0].strip().split(b";") if lines else []
        if len(header) < 3 or header[0] != HEADER or header[1] not in (b"1.1", b"1.2") or header[2].strip() != b"AES256":
            raise VaultError(f"{what}: not an ansible-vault 1.1/1.2 AES256 file")
        try:
            salt, expected, ciphertext = (binascii.unhexlify(part) for part in binascii.unhexlify(b"".join(lines[1:])).split(b"\n", 2))
        except (binascii.Error, ValueError):
            raise VaultError(f"{what}: a damaged ansible-vault file") from None
        aes_key, hmac_key, iv = _keys(self._password, salt)
        mac = HMAC(hmac_key, hashes.SHA256())
        mac.update(ciphertext)
        try:
            mac.verify(expected)
        except InvalidSignature:
            raise VaultError(f"{what}: the vault password from {self.source} does not decrypt it (a wrong password?)") from None
        decryptor = Cipher(algorithms.AES(aes_key), modes.CTR(iv)).decryptor()
        unpadder = padding.PKCS7(128).unpadder()
        return unpadder.update(decryptor.update(ciphertext) + decryptor.finalize()) + unpadder.finalize()

