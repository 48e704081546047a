"""The identity modules, run as Ansible runs them: the mesh CA on the controller (mesh_ca),
the key and CSR on the host (mesh_workload_csr), signing only for the proxy's own SPIFFE ID
(mesh_workload_sign), installing in one step (mesh_workload_cert), reading it back
(mesh_cert_info). Istio's Citadel flow: the private key never leaves the host, and the CA
signs a workload only for the identity of its WorkloadEntry."""

from __future__ import annotations

import datetime
import json
import os
import re
import stat
import subprocess
import sys

import pytest
from cryptography import x509

from meshwright.pki import workload
from meshwright.pki.ca_folder import CaFolder
from tests.modules.conftest import ROOT, run_module

SEED = os.path.join(ROOT, "examples", "seed", "mesh")
PAYMENT_ID = "spiffe://cluster.local/ns/default/sa/payment-service"
ORDER_ID = "spiffe://cluster.local/ns/default/sa/order-service"


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def no_private_key_in(*results: dict) -> bool:
    return all("PRIVATE KEY" not in json.dumps(result) for result in results)


@pytest.fixture
def ca(tmp_path):
    path = str(tmp_path / "ca")
    result = run_module("mesh_ca", path=path, intermediates=["local"])
    assert result["changed"] and not result.get("failed"), result
    return path


def test_mesh_ca_check_apply_rerun(tmp_path):
    path = str(tmp_path / "ca")
    checked = run_module("mesh_ca", check=True, diff=True, path=path, intermediates=["local"])
    assert checked["changed"] and checked["actions"] == ["make root CA (new)", "make intermediate CA 'local'"]
    assert not os.path.exists(path)
    applied = run_module("mesh_ca", path=path, intermediates=["local"])
    assert applied["changed"]
    assert applied["root"]["subject"] == "CN=meshwright root CA,O=cluster.local"
    assert applied["intermediates"]["local"]["issuer"] == applied["root"]["subject"]
    assert x509.load_pem_x509_certificate(applied["bundle"].encode()).serial_number == int(applied["root"]["serial"], 16)
    assert mode(path) == 0o700
    assert mode(os.path.join(path, "root", "key.pem")) == 0o600
    assert mode(os.path.join(path, "intermediates", "local", "key.pem")) == 0o600
    assert {mode(os.path.join(path, folder)) for folder in ("root", "intermediates", "intermediates/local")} == {0o700}
    again = run_module("mesh_ca", check=True, diff=True, path=path, intermediates=["local"])
    assert not again["changed"] and again["diff"]["before"] == again["diff"]["after"]
    again = run_module("mesh_ca", path=path, intermediates=["local"])
    assert not again["changed"] and again["root"]["serial"] == applied["root"]["serial"]
    assert no_private_key_in(checked, applied, again)


def test_mesh_ca_never_replaces_a_root_by_accident(ca, tmp_path):
    before = run_module("mesh_ca", path=ca)
    kept = run_module("mesh_ca", path=ca, trust_domain="example.org")
    assert not kept["changed"] and kept["root"]["serial"] == before["root"]["serial"]
    assert "it is for trust domain 'cluster.local', not 'example.org'; kept as it is (regenerate: never)" in json.dumps(kept["warnings"])
    failed = run_module("mesh_ca", path=ca, trust_domain="example.org", regenerate="fail")
    assert failed["failed"] and "does not match" in failed["msg"]
    replaced = run_module("mesh_ca", path=ca, trust_domain="example.org", intermediates=["local"], regenerate="partial_idempotence")
    assert replaced["changed"] and replaced["root"]["serial"] != before["root"]["serial"]
    assert replaced["intermediates"]["local"]["issuer"] == "CN=meshwright root CA,O=example.org"
    assert not run_module("mesh_ca", path=ca, trust_domain="example.org", intermediates=["local"], regenerate="partial_idempotence")["changed"]


def test_mesh_ca_imports_a_root_once_and_refuses_another(ca, tmp_path):
    other = str(tmp_path / "other")
    run_module("mesh_ca", path=other, intermediates=["site"])
    fresh = str(tmp_path / "fresh")
    files = {"certificate": os.path.join(other, "root", "cert.pem"), "private_key": os.path.join(other, "root", "key.pem")}
    intermediate = {"site": {"certificate": os.path.join(other, "intermediates", "site", "cert.pem"),
                             "private_key": os.path.join(other, "intermediates", "site", "key.pem")}}
    imported = run_module("mesh_ca", path=fresh, **{"import": {"root": files, "intermediates": intermediate}})
    assert imported["actions"] == ["import root CA", "import intermediate CA 'site'"], imported
    assert imported["root"]["fingerprint"] == run_module("mesh_ca", path=other)["root"]["fingerprint"]
    assert not run_module("mesh_ca", path=fresh, **{"import": {"root": files}})["changed"]
    refused = run_module("mesh_ca", path=ca, **{"import": {"root": files}})
    assert refused["failed"] and "not replaced by accident" in refused["msg"]
    # A root kept offline: only its certificate here, with a site intermediate it issued.
    offline = str(tmp_path / "offline")
    kept = run_module("mesh_ca", path=offline, intermediates=["site"],
                      **{"import": {"root": {"certificate": files["certificate"]}, "intermediates": intermediate}})
    assert kept["actions"] == ["import root CA", "import intermediate CA 'site'"], kept
    assert not os.path.exists(os.path.join(offline, "root", "key.pem"))
    made = csr_for(str(tmp_path / "certs"), PAYMENT_ID)
    signed = run_module("mesh_workload_sign", ca_dir=offline, mesh=[SEED], csrs={"payment-1.default": made["csr"]}, intermediate="site")
    assert signed["chains"]["payment-1.default"]["spiffe_id"] == PAYMENT_ID
    no_key = run_module("mesh_ca", path=offline, intermediates=["site", "other"])
    assert no_key["failed"] and "has no private key here (imported without it): import intermediate 'other' signed by it" in no_key["msg"]
    assert no_private_key_in(imported, refused, kept, signed, no_key)


def csr_for(certs_dir: str, spiffe_id: str, **options) -> dict:
    result = run_module("mesh_workload_csr", certs_dir=certs_dir, spiffe_id=spiffe_id, **options)
    assert not result.get("failed"), result
    return result


def sign(ca: str, csrs: dict) -> dict:
    return run_module("mesh_workload_sign", ca_dir=ca, mesh=[SEED], csrs=csrs, intermediate="local")


def test_key_stays_on_the_host_and_the_signed_chain_is_installed_once(ca, tmp_path):
    certs = str(tmp_path / "payment-1" / "certs")
    checked = run_module("mesh_workload_csr", check=True, certs_dir=certs, spiffe_id=PAYMENT_ID)
    assert checked["reason"] == "no certificate yet" and checked["csr"] and not os.path.exists(certs)
    made = csr_for(certs, PAYMENT_ID)
    assert made["changed"] and made["new_key"] and made["reason"] == "no certificate yet"
    pending = os.path.join(certs, "..pending", "key.pem")
    assert mode(pending) == 0o600
    assert x509.load_pem_x509_csr(made["csr"].encode()).is_signature_valid

    signed = sign(ca, {"payment-1.default": made["csr"]})
    assert signed["changed"]  # a certificate issued (nothing is written on the controller)
    assert not sign(ca, {})["changed"]  # nothing to sign, nothing issued
    chain = signed["chains"]["payment-1.default"]
    assert chain["spiffe_id"] == PAYMENT_ID and chain["intermediate"] == "local"

    check = run_module("mesh_workload_cert", check=True, diff=True, certs_dir=certs, chain=chain["chain"], bundle=signed["bundle"])
    assert check["changed"] and not os.path.exists(os.path.join(certs, "cert-chain.pem"))
    assert check["diff"]["before"] == {} and check["diff"]["after"]["serial"] == chain["serial"]
    installed = run_module("mesh_workload_cert", diff=True, certs_dir=certs, chain=chain["chain"], bundle=signed["bundle"])
    assert installed["changed"] and installed["certificate"]["serial"] == chain["serial"]
    assert mode(os.path.join(certs, "key.pem")) == 0o600 and not os.path.exists(pending)
    assert not run_module("mesh_workload_cert", certs_dir=certs, chain=chain["chain"], bundle=signed["bundle"])["changed"]

    # Not due: no CSR. Forced with a new key: a new pending key; the installed one stays until the swap.
    ca_state = run_module("mesh_ca", path=ca, intermediates=["local"])
    due = csr_for(certs, PAYMENT_ID, issuer=ca_state["intermediates"]["local"]["certificate"], bundle=ca_state["bundle"])
    assert (due["changed"], due["csr"], due["reason"], due["new_key"]) == (False, None, None, False)
    old_key = open(os.path.join(certs, "key.pem"), "rb").read()
    forced = csr_for(certs, PAYMENT_ID, renew="always", new_key=True)
    assert forced["reason"] == "renewal forced" and forced["new_key"]
    assert open(os.path.join(certs, "key.pem"), "rb").read() == old_key
    renewed = sign(ca, {"payment-1.default": {"csr": forced["csr"], "intermediate": "local"}})["chains"]["payment-1.default"]
    swapped = run_module("mesh_workload_cert", diff=True, certs_dir=certs, chain=renewed["chain"], bundle=signed["bundle"])
    assert swapped["changed"] and swapped["diff"]["before"]["serial"] == chain["serial"] and swapped["diff"]["after"]["serial"] == renewed["serial"]
    assert open(os.path.join(certs, "key.pem"), "rb").read() != old_key
    # The old chain is for neither the installed key nor a pending one.
    stale = run_module("mesh_workload_cert", certs_dir=certs, chain=chain["chain"], bundle=signed["bundle"])
    assert stale["failed"] and "neither the installed key nor a pending one" in stale["msg"]
    assert no_private_key_in(checked, made, signed, check, installed, due, forced, swapped, stale)


def test_certificates_belong_to_the_proxy_user(ca, tmp_path):
    """Envoy runs as its own user, which must read the key: the three files are given to it
    (key 0600), a re-run changes nothing, another owner is given the same files in place, and
    a user the host does not have is a clear error. (The tests run as root, as CI does.)"""
    import pwd
    certs = str(tmp_path / "certs")
    made = csr_for(certs, PAYMENT_ID)
    signed = sign(ca, {"payment-1.default": made["csr"]})
    chain = signed["chains"]["payment-1.default"]["chain"]
    nobody = pwd.getpwnam("nobody")
    installed = run_module("mesh_workload_cert", certs_dir=certs, chain=chain, bundle=signed["bundle"], owner="nobody")
    assert installed["changed"]
    files = {name: os.stat(os.path.join(certs, name)) for name in ("key.pem", "cert-chain.pem", "root-cert.pem")}
    assert {name: (info.st_uid, info.st_gid) for name, info in files.items()} == dict.fromkeys(files, (nobody.pw_uid, nobody.pw_gid))
    assert stat.S_IMODE(files["key.pem"].st_mode) == 0o600
    assert not run_module("mesh_workload_cert", certs_dir=certs, chain=chain, bundle=signed["bundle"], owner="nobody")["changed"]
    version = os.readlink(os.path.join(certs, "..data"))
    given = run_module("mesh_workload_cert", certs_dir=certs, chain=chain, bundle=signed["bundle"], owner="root")
    assert given["changed"] and os.stat(os.path.join(certs, "key.pem")).st_uid == 0
    assert os.readlink(os.path.join(certs, "..data")) == version  # same files, not a new version
    unknown = run_module("mesh_workload_cert", certs_dir=certs, chain=chain, bundle=signed["bundle"], owner="no-such-user")
    assert unknown["failed"] and "owner 'no-such-user' is not a user on this host" in unknown["msg"]


def test_sign_refuses_a_csr_for_another_identity(ca, tmp_path):
    """payment-1's host asks for order-service's identity: refused, nothing signed."""
    made = csr_for(str(tmp_path / "certs"), ORDER_ID)
    refused = sign(ca, {"payment-1.default": made["csr"]})
    assert refused["failed"]
    assert refused["msg"] == (f"refused to sign the CSR of payment-1.default: the CSR asks for {ORDER_ID}, but this workload's identity is "
                              f"{PAYMENT_ID} (from its WorkloadEntry's namespace and serviceAccount)")
    assert "chains" not in refused
    unknown = sign(ca, {"nobody.default": made["csr"]})
    assert unknown["failed"] and "no proxy named 'nobody.default'" in unknown["msg"]
    missing = run_module("mesh_workload_sign", ca_dir=ca, mesh=[SEED], csrs={"order-1.default": made["csr"]}, intermediate="elsewhere")
    assert missing["failed"] and "no intermediate 'elsewhere'" in missing["msg"]


PLAN = {"payment-1": {"proxy": "payment-1.default", "site": "local", "spiffe_id": PAYMENT_ID},
        "order-1": {"proxy": "order-1.default", "site": "local", "spiffe_id": ORDER_ID}}


def sign_planned(ca: str, csrs: dict, plan: dict = PLAN) -> dict:
    return run_module("mesh_workload_sign", ca_dir=ca, mesh=[SEED], csrs=csrs, plan=plan)


def tampered(csr_pem: str) -> str:
    """The CSR with one bit of its self-signature flipped (no proof that it holds the key)."""
    import base64
    body = "".join(line for line in csr_pem.splitlines() if "-----" not in line)
    der = bytearray(base64.b64decode(body))
    der[-1] ^= 0x01
    encoded = base64.b64encode(bytes(der)).decode()
    return "-----BEGIN CERTIFICATE REQUEST-----\n" + "\n".join(encoded[i:i + 64] for i in range(0, len(encoded), 64)) + "\n-----END CERTIFICATE REQUEST-----\n"


def test_sign_with_the_inventory_plan_refuses_what_a_host_claims_beyond_it(ca, tmp_path):
    """Issue 10 item 4: the host payment-1 returns facts making it order-1.default at site
    '../root' (the root's own folder). Signing goes by the plan made from the inventory before
    any host ran a task: every such request is refused with the host named; its own identity is
    signed, keyed by the host."""
    own = csr_for(str(tmp_path / "own"), PAYMENT_ID)["csr"]
    other = csr_for(str(tmp_path / "other"), ORDER_ID)["csr"]
    claims = sign_planned(ca, {"payment-1": {"csr": other, "proxy": "order-1.default", "intermediate": "../root"}})
    assert claims["failed"] and claims["host"] == "payment-1" and "chains" not in claims
    assert claims["msg"] == ("refused to sign the CSR of host payment-1: it claims proxy order-1.default at site ../root, but the inventory "
                             "gives it proxy payment-1.default at site local (a host's facts never choose its identity)")
    asks = sign_planned(ca, {"payment-1": {"csr": other, "proxy": "payment-1.default", "intermediate": "local"}})
    assert asks["failed"] and asks["msg"] == (f"refused to sign the CSR of host payment-1 (proxy payment-1.default, site local): the CSR asks for "
                                              f"{ORDER_ID}, but this workload's identity is {PAYMENT_ID} (from its WorkloadEntry's namespace and serviceAccount)")
    forged = sign_planned(ca, {"payment-1": tampered(own)})
    assert forged["failed"] and forged["msg"] == ("refused to sign the CSR of host payment-1 (proxy payment-1.default, site local): "
                                                  "the CSR's signature does not verify with its own public key")
    other_key = csr_for(str(tmp_path / "own2"), PAYMENT_ID)
    swapped = sign_planned(ca, {"payment-1": {"csr": own, "public_key_sha256": other_key["public_key_sha256"]}})
    assert swapped["failed"] and swapped["msg"].startswith("refused to sign the CSR of host payment-1 (proxy payment-1.default, site local): "
                                                           "the CSR is for the public key ")
    assert f"not the key the host reports holding ({other_key['public_key_sha256'][:16]}...)" in swapped["msg"]
    stranger = sign_planned(ca, {"intruder": own})
    assert stranger["failed"] and stranger["msg"] == "refused to sign the CSR of host intruder: the signing plan (made from the inventory) gives it no identity"
    rooted = sign_planned(ca, {"payment-1": own}, plan={"payment-1": dict(PLAN["payment-1"], site="../root")})
    assert rooted["failed"] and rooted["msg"].startswith("refused to sign the CSR of host payment-1 (proxy payment-1.default, site ../root): "
                                                         "site '../root': a site (intermediate) name must be a DNS-1123 label")
    own_key = csr_for(str(tmp_path / "own"), PAYMENT_ID)["public_key_sha256"]  # the same pending key again
    signed = sign_planned(ca, {"payment-1": {"csr": own, "proxy": "payment-1.default", "intermediate": "local", "public_key_sha256": own_key}})
    assert not signed.get("failed"), signed
    assert list(signed["chains"]) == ["payment-1"] and signed["chains"]["payment-1"]["spiffe_id"] == PAYMENT_ID
    assert signed["chains"]["payment-1"]["proxy"] == "payment-1.default"


def test_render_makes_the_signing_plan_from_the_inventory(tmp_path):
    proxies = {"payment-1.default": "/srv/payment-1/proxy", "ingress.default": "/srv/ingress/proxy"}
    rendered = run_module("mesh_render", mesh=[SEED], proxies=proxies, hosts={"payment-1": "payment-1.default", "edge": "ingress.default"},
                          sites={"payment-1": "eu-west"})
    assert rendered["identities"] == {
        "edge": {"proxy": "ingress.default", "site": "default", "spiffe_id": "spiffe://cluster.local/ns/default/sa/ingress-service-account"},
        "payment-1": {"proxy": "payment-1.default", "site": "eu-west", "spiffe_id": PAYMENT_ID},
    }
    bad = run_module("mesh_render", mesh=[SEED], proxies=proxies, hosts={"payment-1": "payment-1.default"}, sites={"payment-1": "../root"})
    assert bad["failed"] and bad["msg"] == ("sites.payment-1: site '../root' must be a DNS-1123 label (at most 63 lower-case letters, digits "
                                            "and '-', starting and ending with a letter or digit)")
    unknown = run_module("mesh_render", mesh=[SEED], proxies=proxies, hosts={"payment-1": "order-1.default"})
    assert unknown["failed"] and unknown["msg"] == "hosts.payment-1: proxy 'order-1.default' is not one of the rendered proxies (proxies)"


def test_mesh_ca_refuses_a_site_that_is_a_path(ca, tmp_path):
    for site in ("../root", "../../x"):
        refused = run_module("mesh_ca", path=ca, intermediates=[site])
        assert refused["failed"] and refused["msg"].startswith(f"site {site!r}: a site (intermediate) name must be a DNS-1123 label")
    assert sorted(os.listdir(ca)) == [".meshwright.lock", "intermediates", "root"] and not (tmp_path / "x").exists()
    fresh = str(tmp_path / "fresh")
    refused = run_module("mesh_ca", path=fresh, intermediates=["../root"], **{"import": {"intermediates": {"../x": {"certificate": "/c", "private_key": "/k"}}}})
    assert refused["failed"] and refused["msg"].startswith("site '../root'") and not os.path.exists(fresh)


def test_a_second_run_on_the_ca_or_a_certs_folder_fails_naming_the_holder(ca, tmp_path):
    """Two deploys at once: the second waits for the lock, then fails saying who holds it."""
    certs = str(tmp_path / "certs")
    os.makedirs(certs)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); from meshwright.pki.folder_lock import folder_lock\n"
                               "with folder_lock(sys.argv[2]), folder_lock(sys.argv[3]):\n    print('held', flush=True); time.sleep(60)",
                               os.path.join(ROOT, "src"), ca, certs], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        ca_run = run_module("mesh_ca", path=ca, intermediates=["local"], lock_timeout=0.3)
        assert ca_run["failed"] and f"{ca} is locked by another meshwright run (pid {holder.pid} on " in ca_run["msg"], ca_run
        signing = run_module("mesh_workload_sign", ca_dir=ca, mesh=[SEED], csrs={}, lock_timeout=0.3)
        assert signing["failed"] and f"{ca} is locked by another meshwright run (pid {holder.pid} on " in signing["msg"]
        csr_run = run_module("mesh_workload_csr", certs_dir=certs, spiffe_id=PAYMENT_ID, lock_timeout=0.3)
        assert csr_run["failed"] and f"{certs} is locked by another meshwright run (pid {holder.pid} on " in csr_run["msg"]
        cert_run = run_module("mesh_workload_cert", certs_dir=certs, bundle="x", lock_timeout=0.3)
        assert cert_run["failed"] and "waited 0.3 s" in cert_run["msg"]
    finally:
        holder.kill()
        holder.wait()
    assert run_module("mesh_ca", path=ca, intermediates=["local"], lock_timeout=0.3)["changed"] is False


def test_a_lost_ca_folder_is_refused_when_hosts_trust_another_root(ca, tmp_path):
    """Issue 10 item 14: hosts hold certificates from the CA at `ca`; its folder is lost (a
    new, empty path). Making a new root then is refused, naming the hosts, unless asked for."""
    bundle = run_module("mesh_ca", path=ca)["bundle"]
    lost = str(tmp_path / "lost")
    refused = run_module("mesh_ca", path=lost, intermediates=["local"], hosts_trust={"payment-1": bundle, "order-1": bundle, "fresh": ""})
    assert refused["failed"], refused
    assert refused["msg"].startswith(f"the mesh CA at {lost} has no root CA, but hosts already hold certificates from a mesh CA (order-1 trusts ")
    assert "the CA folder looks lost" in refused["msg"] and "-e mesh_ca_new_root=true (mesh_ca new_root: true)" in refused["msg"]
    assert "fresh" not in refused["msg"] and not os.path.exists(os.path.join(lost, "root"))
    other = str(tmp_path / "other")
    run_module("mesh_ca", path=other, intermediates=["local"])
    foreign = run_module("mesh_ca", path=other, intermediates=["local"], hosts_trust={"payment-1": bundle})
    assert foreign["failed"] and f"the mesh CA at {other} holds none of the roots they trust" in foreign["msg"]
    asked = run_module("mesh_ca", path=lost, intermediates=["local"], hosts_trust={"payment-1": bundle}, new_root=True)
    assert asked["changed"] and asked["actions"][0] == "make root CA (new)"
    # Hosts that trust the CA's root (also beside another, as during a root rotation) are fine.
    both = bundle + run_module("mesh_ca", path=other)["bundle"]
    assert not run_module("mesh_ca", path=other, intermediates=["local"], hosts_trust={"payment-1": both}).get("failed")
    assert not run_module("mesh_ca", path=ca, intermediates=["local"], hosts_trust={"payment-1": bundle}).get("failed")


def install_new(ca: str, certs: str, proxy: str, spiffe_id: str, **csr_options) -> dict:
    made = csr_for(certs, spiffe_id, **csr_options)
    signed = sign(ca, {proxy: made["csr"]})
    assert not signed.get("failed"), signed
    result = run_module("mesh_workload_cert", certs_dir=certs, chain=signed["chains"][proxy]["chain"], bundle=signed["bundle"])
    assert result["changed"], result
    return signed["chains"][proxy]


def test_root_rotation_steps_keep_both_roots_trusted_until_the_end(ca, tmp_path):
    certs = str(tmp_path / "certs")
    first = install_new(ca, certs, "order-1.default", ORDER_ID)
    old_root = run_module("mesh_ca", path=ca)["root"]
    begun = run_module("mesh_ca", path=ca, intermediates=["local"], rotate="root_begin")
    assert begun["rotation"] == "root_begun" and len(x509.load_pem_x509_certificates(begun["bundle"].encode())) == 2
    assert not run_module("mesh_ca", path=ca, intermediates=["local"], rotate="root_begin")["changed"]  # resumable
    # The bundle alone changes on the host: the proxy trusts both roots, its chain stays.
    bundled = run_module("mesh_workload_cert", certs_dir=certs, bundle=begun["bundle"])
    assert bundled["changed"] and bundled["certificate"]["serial"] == first["serial"] and len(bundled["certificate"]["roots"]) == 2
    switched = run_module("mesh_ca", path=ca, intermediates=["local"], rotate="root_switch")
    assert switched["rotation"] == "root_switched" and switched["previous_root"]["fingerprint"] == old_root["fingerprint"]
    assert switched["intermediates"]["local"]["issuer"] == switched["root"]["subject"]
    assert switched["root"]["fingerprint"] != old_root["fingerprint"]
    assert not run_module("mesh_ca", path=ca, intermediates=["local"], rotate="root_switch")["changed"]  # resumable
    due = csr_for(certs, ORDER_ID, issuer=switched["intermediates"]["local"]["certificate"], bundle=switched["bundle"])
    assert due["reason"] == "the certificate was not issued by the current intermediate CA"
    install_new(ca, certs, "order-1.default", ORDER_ID, issuer=switched["intermediates"]["local"]["certificate"], new_key=True)
    finished = run_module("mesh_ca", path=ca, intermediates=["local"], rotate="root_finish")
    assert finished["rotation"] == "none" and finished["previous_root"] is None
    assert finished["bundle"] == switched["root"]["certificate"]
    # A plain run after the rotation changes nothing.
    assert not run_module("mesh_ca", path=ca, intermediates=["local"])["changed"]


def test_intermediate_rotation_makes_workloads_due(ca, tmp_path):
    certs = str(tmp_path / "certs")
    install_new(ca, certs, "payment-2.default", PAYMENT_ID)
    rotated = run_module("mesh_ca", path=ca, intermediates=["local"], rotate="intermediates")
    assert rotated["changed"] and rotated["actions"] == ["make intermediate CA 'local' (rotation)"]
    due = csr_for(certs, PAYMENT_ID, issuer=rotated["intermediates"]["local"]["certificate"], bundle=rotated["bundle"])
    assert due["reason"] == "the certificate was not issued by the current intermediate CA"


def test_cert_info_reports_the_installed_certificate_and_warns_near_expiry(ca, tmp_path):
    certs = str(tmp_path / "certs")
    missing = run_module("mesh_cert_info", certs_dir=certs)
    assert missing["certificate"] is None and missing["alerts"] == [f"no certificate in {certs}"]
    chain = install_new(ca, certs, "payment-1.default", PAYMENT_ID)
    info = run_module("mesh_cert_info", certs_dir=certs)
    assert not info["changed"] and info["alerts"] == [] and info["key_matches"] and not info["pending_key"]
    certificate = info["certificate"]
    assert (certificate["spiffe_id"], certificate["serial"], certificate["issuer"]) == (PAYMENT_ID, chain["serial"], "CN=local,O=cluster.local")
    assert 29.9 < certificate["days_left"] <= 30 and not certificate["needs_renewal"]
    assert len(certificate["bundle_fingerprint"]) == 64
    near = run_module("mesh_cert_info", certs_dir=certs, warn_days=31)
    assert len(near["alerts"]) == 1 and f"certificate {chain['serial']} ({PAYMENT_ID}) expires in" in near["alerts"][0]
    assert no_private_key_in(info, near)


def test_render_says_which_identity_each_proxy_needs_and_where_its_certificates_go(tmp_path):
    """With MeshConfig certificates (the seed mesh: `certificates: {}`), every proxy gets the
    SPIFFE ID of its WorkloadEntry (a standalone gateway: <name>-service-account) and a certs
    folder beside its config folder (the default ../certs)."""
    rendered = run_module("mesh_render", mesh=[SEED], proxies={"payment-1.default": "/srv/payment-1/proxy", "ingress.default": "/srv/ingress/proxy"})
    assert rendered["proxies"]["payment-1.default"]["identity"] == {"spiffe_id": PAYMENT_ID, "certs_dir": "/srv/payment-1/certs"}
    assert rendered["proxies"]["ingress.default"]["identity"] == {"spiffe_id": "spiffe://cluster.local/ns/default/sa/ingress-service-account",
                                                                   "certs_dir": "/srv/ingress/certs"}
    plain = run_module("mesh_render", mesh=[os.path.join(ROOT, "examples", "basic", "mesh.yaml")], proxies={"frontend.default": str(tmp_path)})
    assert plain["proxies"]["frontend.default"]["identity"] is None


def test_a_certificate_past_two_thirds_of_its_life_is_renewed(ca, tmp_path):
    """Istio renews at two thirds of a certificate's life: one signed 21 days ago for 30 days
    is due, with the reason; one signed 19 days ago is not."""
    certs = str(tmp_path / "certs")
    made = csr_for(certs, PAYMENT_ID)
    issuer = CaFolder(ca).intermediate("local")
    for days_ago, due in ((19, False), (21, True)):
        chain = workload.sign_csr(made["csr"].encode(), PAYMENT_ID, issuer, now=datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=days_ago))
        run_module("mesh_workload_cert", certs_dir=certs, chain=chain.decode(), bundle=CaFolder(ca).bundle().decode())
        result = csr_for(certs, PAYMENT_ID, issuer=issuer.certificate_pem().decode())
        assert (result["csr"] is not None) == due, (days_ago, result)
        if due:
            assert result["reason"].startswith("past two thirds of its life (expires ")


HOST_PLAYBOOK = """\
- name: A proxy's certificate as on a real host (its own Python, the distribution's cryptography)
  hosts: localhost
  gather_facts: false
  vars:
    ansible_python_interpreter: /usr/bin/python3
  tasks:
    - name: Keep the mesh CA
      meshwright.mesh.mesh_ca: {path: "{{ work }}/ca", intermediates: [local]}
      vars: {ansible_python_interpreter: "{{ ansible_playbook_python }}"}
      register: ca
    - name: Make a CSR when due
      meshwright.mesh.mesh_workload_csr:
        certs_dir: "{{ work }}/certs"
        spiffe_id: spiffe://cluster.local/ns/default/sa/payment-service
        issuer: "{{ ca.intermediates.local.certificate }}"
        bundle: "{{ ca.bundle }}"
      register: request
    - name: Sign it
      meshwright.mesh.mesh_workload_sign:
        ca_dir: "{{ work }}/ca"
        mesh: ["{{ mesh }}"]
        csrs: {payment-1.default: "{{ request.csr }}"}
        intermediate: local
      vars: {ansible_python_interpreter: "{{ ansible_playbook_python }}"}
      when: request.csr is not none and not ansible_check_mode
      register: signed
    - name: Install it
      meshwright.mesh.mesh_workload_cert:
        certs_dir: "{{ work }}/certs"
        chain: "{{ signed.chains['payment-1.default'].chain if signed.chains is defined else omit }}"
        bundle: "{{ ca.bundle }}"
    - name: Read it back
      meshwright.mesh.mesh_cert_info: {certs_dir: "{{ work }}/certs"}
      register: info
    - name: Check it
      ansible.builtin.assert:
        that:
          - info.certificate.spiffe_id == 'spiffe://cluster.local/ns/default/sa/payment-service'
          - info.key_matches
          - info.alerts == []
"""


def test_host_modules_run_on_the_hosts_own_python_under_ansible_playbook(tmp_path):
    """The host side (key, CSR, install, info) on the system Python with Debian's
    python3-cryptography (38), the controller side on the virtualenv's: apply, then a re-run
    and a --check --diff run that change nothing."""
    (tmp_path / "play.yml").write_text(HOST_PLAYBOOK)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    extra = json.dumps({"work": str(tmp_path / "host"), "mesh": SEED})

    def play(*args):
        result = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", "-c", "local",
                                 str(tmp_path / "play.yml"), "-e", extra, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-4000:]
        return int(re.search(r"localhost\s+:\s+ok=\d+\s+changed=(\d+)", output).group(1)), output

    changed, _ = play()
    assert changed == 4  # the CA, the key, the certificate issued, the certificate installed
    assert mode(str(tmp_path / "host" / "certs" / "..data" / "key.pem")) == 0o600
    assert play()[0] == 0
    changed, output = play("--check", "--diff")
    assert changed == 0 and "PRIVATE KEY" not in output
