"""mesh_control_plane_sign, run as Ansible runs it: the control plane's serving certificate is
signed for the control plane's SPIFFE ID only, by its own intermediate, from a CSR whose key
stays on its host; the intermediate's key is returned only when asked (for the CSR service)."""

from __future__ import annotations

import json

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.modules.conftest import run_module

CONTROL_PLANE_ID = "spiffe://cluster.local/ns/meshwright-system/sa/meshwright-control-plane"


def make_ca(tmp_path) -> str:
    path = str(tmp_path / "ca")
    result = run_module("mesh_ca", path=path, intermediates=["local", "control-plane"])
    assert result["changed"] and not result.get("failed"), result
    return path


def csr_for(tmp_path, spiffe_id: str) -> str:
    made = run_module("mesh_workload_csr", certs_dir=str(tmp_path / "certs"), spiffe_id=spiffe_id)
    assert not made.get("failed"), made
    return made["csr"]


def test_signs_the_control_planes_certificate_with_its_intermediate_and_no_key(tmp_path):
    ca = make_ca(tmp_path)
    signed = run_module("mesh_control_plane_sign", ca_dir=ca, trust_domain="cluster.local", csr=csr_for(tmp_path, CONTROL_PLANE_ID))
    assert signed["changed"] and not signed.get("failed"), signed
    leaf, issuer = x509.load_pem_x509_certificates(signed["chain"].encode())
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier) == [CONTROL_PLANE_ID]
    assert issuer.subject.rfc4514_string() == "CN=control-plane,O=cluster.local"
    assert signed["spiffe_id"] == CONTROL_PLANE_ID
    assert signed["signing_chain"].startswith(issuer.public_bytes(Encoding.PEM).decode())
    assert "PRIVATE KEY" not in json.dumps(signed)


def test_returns_the_intermediates_key_only_when_asked(tmp_path):
    ca = make_ca(tmp_path)
    handed = run_module("mesh_control_plane_sign", ca_dir=ca, trust_domain="cluster.local", signing_key=True)
    assert not handed["changed"] and handed["signing_key"].startswith("-----BEGIN PRIVATE KEY-----"), sorted(handed)
    assert "chain" not in handed


def test_refuses_a_csr_for_a_workloads_identity(tmp_path):
    ca = make_ca(tmp_path)
    refused = run_module("mesh_control_plane_sign", ca_dir=ca, trust_domain="cluster.local",
                         csr=csr_for(tmp_path, "spiffe://cluster.local/ns/default/sa/payment-service"))
    assert refused["failed"]
    assert refused["msg"] == ("the CSR asks for spiffe://cluster.local/ns/default/sa/payment-service, but this workload's identity is "
                              f"{CONTROL_PLANE_ID} (from its WorkloadEntry's namespace and serviceAccount)")
    assert "chain" not in refused


def test_a_ca_without_the_intermediate_is_refused_naming_it(tmp_path):
    ca = str(tmp_path / "ca")
    assert not run_module("mesh_ca", path=ca, intermediates=["local"]).get("failed")
    missing = run_module("mesh_control_plane_sign", ca_dir=ca, trust_domain="cluster.local")
    assert missing["failed"] and "has no intermediate 'control-plane' (known: local)" in missing["msg"], missing
