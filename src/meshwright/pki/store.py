"""Writing PKI material to disk: atomically (a reader never sees half a file) and with
private keys readable by their owner only (0600).

A workload's certs directory holds what Envoy reads through SDS (Istio's file names):
key.pem, cert-chain.pem and root-cert.pem.
"""

from __future__ import annotations

import os

from meshwright.deliver.file_set import write_atomic

KEY_FILE, CHAIN_FILE, ROOTS_FILE = "key.pem", "cert-chain.pem", "root-cert.pem"
KEY_MODE, CERTIFICATE_MODE = 0o600, 0o644


def write_private_key(path: str, key_pem: bytes) -> None:
    write_atomic(path, key_pem.decode("ascii"), mode=KEY_MODE)


def write_certificate(path: str, pem: bytes) -> None:
    write_atomic(path, pem.decode("ascii"), mode=CERTIFICATE_MODE)


def write_workload_certificates(certs_dir: str, key_pem: bytes, chain_pem: bytes, roots_pem: bytes) -> None:
    """The trust bundle first (a new root must be trusted before anything is signed by it),
    then the key, then the chain: Envoy watches the directory and loads the pair once both
    match (a half-updated pair is rejected and the old one kept)."""
    os.makedirs(certs_dir, mode=0o755, exist_ok=True)
    write_certificate(os.path.join(certs_dir, ROOTS_FILE), roots_pem)
    write_private_key(os.path.join(certs_dir, KEY_FILE), key_pem)
    write_certificate(os.path.join(certs_dir, CHAIN_FILE), chain_pem)
