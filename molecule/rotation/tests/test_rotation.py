"""A root rotation on systemd hosts under load (issue #5): `rotate_certs.yml -e rotate=root`
while a client on payment-1 sends GETs to http://gateway/order, a path with mutual TLS on every
hop (gateway -> order-1 -> payment-1 or payment-2). Not one request fails: each proxy first
trusts both roots, then gets a certificate from the new root, and only when every proxy holds
one does the old root leave the bundles; Envoy reloads certificates and bundles from its
watched folder, without a restart.

What each proxy uses is read from Envoy itself (admin /certs: the serials of the chain it
presents and of the roots it trusts), and the chain's signatures are checked against the new
root from the files Envoy reads.
"""

from __future__ import annotations

import json
import os

from cryptography import x509

ROTATE = "meshwright.mesh.rotate_certs"  # from the installed collection
CERTS = "/etc/meshwright/certs"
HOSTS = ["gateway", "order-1", "payment-1", "payment-2"]


def envoy_certs(host) -> tuple[set[int], set[int]]:
    """(serials of the chain the proxy presents, serials of the roots it trusts), from Envoy's
    admin /certs, over every TLS context it has (inbound and outbound)."""
    contexts = json.loads(host.check_output("curl -sS --max-time 5 http://127.0.0.1:15000/certs"))["certificates"]
    chain = {int(c["serial_number"], 16) for context in contexts for c in context["cert_chain"] or []}
    roots = {int(c["serial_number"], 16) for context in contexts for c in context["ca_cert"] or []}
    return chain, roots


def pem_file(host, name: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(host.file(f"{CERTS}/{name}").content)


def test_the_mesh_starts_with_one_root_everywhere(mesh_hosts):
    """Every proxy presents a chain and trusts one root, the same on every host."""
    certs = {name: envoy_certs(host) for name, host in mesh_hosts.items()}
    assert all(chain for chain, _ in certs.values()), certs
    assert len({frozenset(roots) for _, roots in certs.values()}) == 1 and len(certs["gateway"][1]) == 1, certs


def test_root_rotation_under_load_fails_no_request(mesh_hosts, playbook, constant_load):
    """After the rotation every proxy presents a new chain that the new root signed, trusts the
    new root only, and no request through the gateway failed on the way."""
    before = {name: envoy_certs(host) for name, host in mesh_hosts.items()}
    [old_root] = before["gateway"][1]
    assert all(roots == {old_root} for _, roots in before.values()), f"precondition: one root everywhere: {before}"

    with constant_load(mesh_hosts["payment-1"], "http://gateway/order") as load:
        # Batches of a canary and then three proxies: each step in two batches.
        run = playbook(ROTATE, "-e", "rotate=root", "-e", "batch=3", timeout=1200)
    # Shown in the verify output (-r P): the numbers behind "no request failed".
    print(f"root rotation: {load.succeeded} requests answered 200, {load.failed} failed, in {load.counts['seconds']} s")
    assert run.returncode == 0, run
    assert load.failed == 0 and load.succeeded > 200, load.counts

    after = {name: envoy_certs(host) for name, host in mesh_hosts.items()}
    [new_root] = after["gateway"][1]
    assert new_root != old_root
    for name, host in mesh_hosts.items():
        chain, roots = after[name]
        assert roots == {new_root}, f"{name} trusts {roots}, not only the new root {new_root}"
        assert not chain & before[name][0], f"{name} still presents a certificate from before: {chain & before[name][0]}"
        # The files Envoy reads: the certificate it presents, with an intermediate that the new
        # root (the only one of the bundle) signed.
        leaf, intermediate = pem_file(host, "cert-chain.pem")
        [root] = pem_file(host, "root-cert.pem")
        assert chain == {leaf.serial_number}, name
        assert root.serial_number == new_root, name
        intermediate.verify_directly_issued_by(root)
        leaf.verify_directly_issued_by(intermediate)
    # The CA on the controller keeps the new root and its intermediates only (beside the lock
    # file that keeps two runs out of it at once).
    ca_dir = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "ca")
    assert sorted(set(os.listdir(ca_dir)) - {".meshwright.lock"}) == ["intermediates", "root"]
