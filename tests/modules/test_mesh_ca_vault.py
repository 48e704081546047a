"""The mesh CA's keys encrypted at rest with ansible-vault (mesh_ca vault_password_file):
written encrypted, 0600, never printed; signing decrypts in memory; plaintext keys are
encrypted in place once; a wrong password names the file and changes nothing; the
`ansible-vault` command reads and writes the same files."""

from __future__ import annotations

import glob
import json
import os
import re
import stat
import subprocess
import sys

import pytest

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.modules.conftest import ROOT, run_module

SEED = os.path.join(ROOT, "examples", "seed", "mesh")
PAYMENT_ID = "spiffe://cluster.local/ns/default/sa/payment-service"
PASSWORD = "mesh-ca-test-password"
BIN = os.path.dirname(sys.executable)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def key_files(ca: str) -> list[str]:
    return sorted(glob.glob(os.path.join(ca, "**", "key.pem"), recursive=True))


def snapshot(ca: str) -> dict:
    return {path: open(path, "rb").read() for path in sorted(glob.glob(os.path.join(ca, "**", "*.pem"), recursive=True))}


def password_file(tmp_path, password: str = PASSWORD, name: str = "vault-pass") -> str:
    path = tmp_path / name
    path.write_text(password + "\n")
    os.chmod(path, 0o600)
    return str(path)


def csr(tmp_path) -> str:
    made = run_module("mesh_workload_csr", certs_dir=str(tmp_path / "certs"), spiffe_id=PAYMENT_ID)
    assert not made.get("failed"), made
    return made["csr"]


def secrets_in(*results) -> bool:
    text = json.dumps(results)
    return "PRIVATE KEY" in text or PASSWORD in text


def test_a_ca_made_with_a_vault_password_keeps_its_keys_encrypted_and_signs(tmp_path):
    ca, vault = str(tmp_path / "ca"), password_file(tmp_path)
    checked = run_module("mesh_ca", check=True, path=ca, intermediates=["local"], vault_password_file=vault)
    assert checked["changed"] and not os.path.exists(ca)
    made = run_module("mesh_ca", path=ca, intermediates=["local"], vault_password_file=vault)
    assert made["actions"] == ["make root CA (new)", "make intermediate CA 'local'"], made
    assert key_files(ca) == [os.path.join(ca, "intermediates", "local", "key.pem"), os.path.join(ca, "root", "key.pem")]
    for path in key_files(ca):
        data = open(path, "rb").read()
        assert data.startswith(b"$ANSIBLE_VAULT;1.1;AES256\n") and b"PRIVATE KEY" not in data and mode(path) == 0o600
        # The ansible-vault command opens it: the key of the certificate beside it.
        viewed = subprocess.run([os.path.join(BIN, "ansible-vault"), "view", "--vault-password-file", vault, path],
                                capture_output=True, timeout=120, check=True).stdout
        key = serialization.load_pem_private_key(viewed, password=None)
        certificate = x509.load_pem_x509_certificate(open(os.path.join(os.path.dirname(path), "cert.pem"), "rb").read())
        assert key.public_key() == certificate.public_key()

    # Signing decrypts the intermediate's key in memory.
    signed = run_module("mesh_workload_sign", ca_dir=ca, mesh=[SEED], csrs={"payment-1.default": csr(tmp_path)},
                        intermediate="local", vault_password_file=vault)
    assert signed["chains"]["payment-1.default"]["spiffe_id"] == PAYMENT_ID, signed
    leaf = x509.load_pem_x509_certificate(signed["chains"]["payment-1.default"]["chain"].encode())
    assert leaf.issuer.rfc4514_string() == made["intermediates"]["local"]["subject"]

    # Unchanged on a re-run (check mode too): the encrypted files stay as they are.
    before = snapshot(ca)
    assert not run_module("mesh_ca", check=True, diff=True, path=ca, intermediates=["local"], vault_password_file=vault)["changed"]
    again = run_module("mesh_ca", path=ca, intermediates=["local"], vault_password_file=vault)
    assert not again["changed"] and snapshot(ca) == before
    # Without the password the keys cannot be used, and the message says which file and what to give.
    unsigned = run_module("mesh_workload_sign", ca_dir=ca, mesh=[SEED], csrs={"payment-1.default": csr(tmp_path)}, intermediate="local")
    assert unsigned["failed"] and unsigned["msg"].startswith(f"{ca}/intermediates/local/key.pem is encrypted with ansible-vault: give its vault password (--ask-vault-pass, --vault-id")
    # A rotation writes the new intermediate's key encrypted too.
    rotated = run_module("mesh_ca", path=ca, intermediates=["local"], rotate="intermediates", vault_password_file=vault)
    assert rotated["changed"] and open(os.path.join(ca, "intermediates", "local", "key.pem"), "rb").read().startswith(b"$ANSIBLE_VAULT;1.1;AES256\n")
    begun = run_module("mesh_ca", path=ca, rotate="root_begin", vault_password_file=vault)
    assert begun["rotation"] == "root_begun" and open(os.path.join(ca, "root-next", "key.pem"), "rb").read().startswith(b"$ANSIBLE_VAULT;1.1;AES256\n")
    assert not secrets_in(checked, made, signed, again, unsigned, rotated, begun)


def test_a_wrong_password_is_an_error_naming_the_file_and_changes_nothing(tmp_path):
    ca = str(tmp_path / "ca")
    run_module("mesh_ca", path=ca, intermediates=["local"], vault_password_file=password_file(tmp_path))
    before = snapshot(ca)
    wrong = password_file(tmp_path, "not-the-password", "wrong-pass")
    for result, file in ((run_module("mesh_ca", path=ca, intermediates=["local", "eu-west"], vault_password_file=wrong), "root"),
                         (run_module("mesh_ca", path=ca, intermediates=["local"], rotate="intermediates", vault_password_file=wrong), "root"),
                         (run_module("mesh_workload_sign", ca_dir=ca, mesh=[SEED], csrs={"payment-1.default": csr(tmp_path)},
                                     intermediate="local", vault_password_file=wrong), "intermediates/local")):
        assert result["failed"] and result["msg"] == f"{ca}/{file}/key.pem: the vault password from {wrong} does not decrypt it (a wrong password?)", result
        assert not secrets_in(result) and "not-the-password" not in json.dumps(result)
    assert snapshot(ca) == before and not os.path.exists(os.path.join(ca, "intermediates", "eu-west"))
    missing = run_module("mesh_ca", path=ca, vault_password_file=str(tmp_path / "nowhere"))
    assert missing["failed"] and missing["msg"] == f"the vault password file {tmp_path}/nowhere: The vault password file {tmp_path}/nowhere was not found"


def test_plaintext_keys_are_encrypted_in_place_once_and_ansible_vault_files_are_read(tmp_path):
    ca, vault = str(tmp_path / "ca"), password_file(tmp_path)
    plain = run_module("mesh_ca", path=ca, intermediates=["local", "eu-west"])
    certificates = {path: data for path, data in snapshot(ca).items() if path.endswith("cert.pem")}
    # One key encrypted by the ansible-vault command itself, the others left in plaintext.
    local_key = os.path.join(ca, "intermediates", "local", "key.pem")
    encrypted = subprocess.run([os.path.join(BIN, "ansible-vault"), "encrypt", "--vault-password-file", vault, local_key],
                               capture_output=True, text=True, timeout=120)
    assert encrypted.returncode == 0, encrypted.stderr
    checked = run_module("mesh_ca", check=True, path=ca, intermediates=["local", "eu-west"], vault_password_file=vault)
    assert checked["changed"] and checked["actions"] == ["encrypt the key of root with ansible-vault",
                                                         "encrypt the key of intermediates/eu-west with ansible-vault"], checked
    assert not open(os.path.join(ca, "root", "key.pem"), "rb").read().startswith(b"$ANSIBLE_VAULT")
    done = run_module("mesh_ca", path=ca, intermediates=["local", "eu-west"], vault_password_file=vault)
    assert done["actions"] == checked["actions"]
    assert all(open(path, "rb").read().startswith(b"$ANSIBLE_VAULT;1.1;AES256\n") and mode(path) == 0o600 for path in key_files(ca))
    # The same CA: certificates untouched, and a second run changes nothing.
    assert {path: data for path, data in snapshot(ca).items() if path.endswith("cert.pem")} == certificates
    assert done["root"]["serial"] == plain["root"]["serial"]
    assert not run_module("mesh_ca", path=ca, intermediates=["local", "eu-west"], vault_password_file=vault)["changed"]
    # ansible-vault shows what meshwright encrypted.
    viewed = subprocess.run([os.path.join(BIN, "ansible-vault"), "view", "--vault-password-file", vault, os.path.join(ca, "root", "key.pem")],
                            capture_output=True, text=True, timeout=120)
    assert viewed.returncode == 0 and viewed.stdout.startswith("-----BEGIN PRIVATE KEY-----"), viewed.stderr
    assert not secrets_in(plain, checked, done)


PLAYBOOK = """\
- name: The mesh CA and signing with the run's vault password (ANSIBLE_VAULT_PASSWORD_FILE)
  hosts: localhost
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Keep the mesh CA
      ansible.builtin.include_role:
        name: meshwright.mesh.mesh_ca
      vars:
        mesh_ca_dir: "{{ work }}/ca"
        mesh_ca_intermediates: [local]
    - name: Sign a CSR
      meshwright.mesh.mesh_workload_sign:
        ca_dir: "{{ work }}/ca"
        mesh: ["{{ mesh }}"]
        csrs: {payment-1.default: "{{ csr }}"}
        intermediate: local
      register: signed
    - name: Check it
      ansible.builtin.assert:
        that: signed.chains['payment-1.default'].spiffe_id == 'spiffe://cluster.local/ns/default/sa/payment-service'
"""


@pytest.mark.parametrize("given_by", ["ANSIBLE_VAULT_PASSWORD_FILE", "--vault-id"])
def test_the_role_and_signing_take_the_runs_vault_secrets(tmp_path, given_by):
    """The run's vault secrets, as for the rest of the run (Ansible's own vault, in the controller
    actions): the role encrypts, signing decrypts and issues (a change), a second run changes only
    by signing again, and the output holds no key or password."""
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    vault = password_file(tmp_path)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    vault_args = ["--vault-id", f"ca@{vault}"] if given_by == "--vault-id" else []
    if given_by == "ANSIBLE_VAULT_PASSWORD_FILE":
        env["ANSIBLE_VAULT_PASSWORD_FILE"] = vault
    extra = json.dumps({"work": str(tmp_path), "mesh": SEED, "csr": csr(tmp_path)})

    def play():
        result = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local", str(tmp_path / "play.yml"),
                                 "-e", extra, "-v", *vault_args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-4000:]
        assert "PRIVATE KEY" not in output and PASSWORD not in output
        return int(re.search(r"localhost\s+:\s+ok=\d+\s+changed=(\d+)", output).group(1))

    assert play() == 2  # the CA made, a certificate issued
    header = b"$ANSIBLE_VAULT;1.2;AES256;ca\n" if given_by == "--vault-id" else b"$ANSIBLE_VAULT;1.1;AES256\n"
    assert all(open(path, "rb").read().startswith(header) for path in key_files(str(tmp_path / "ca")))
    assert play() == 1  # the CA as it was; the CSR signed again
