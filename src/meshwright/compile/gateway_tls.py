"""The TLS a gateway server terminates (Istio's ServerTLSSettings) as an Envoy
DownstreamTlsContext.

SIMPLE presents the server's certificate; MUTUAL also requires a client certificate that
chains to caCertificates, OPTIONAL_MUTUAL checks one only when the client sends it;
ISTIO_MUTUAL presents the gateway's own certificate from the mesh CA and requires a client
certificate from it. subjectAltNames, verifyCertificateSpki/Hash and caCrl narrow the client
certificates accepted; min/maxProtocolVersion and cipherSuites replace the defaults.

credentialName NAME (Istio's Kubernetes TLS secret) names the folder NAME in the MeshConfig's
credentials.dir, holding the files `kubectl create secret tls/generic` gives the keys of:
tls.crt, tls.key and, for the modes that check clients, ca.crt. It compiles to exactly what
serverCertificate, privateKey and caCertificates naming those files compile to.
credentialNames (several credentials) and tlsCertificates (several file pairs) give several
certificates, Istio's RSA and ECDSA pair: Envoy presents the one the client supports.
"""

from __future__ import annotations

import os

from meshwright.compile.envoy_values import DOWNSTREAM_TLS, is_cipher_suite, subject_alt_name_matchers, tls_params, typed
from meshwright.compile.secrets import DEFAULT_SECRET, ROOT_SECRET, sds_secret_config

# Istio's protocol names -> Envoy's; TLS_AUTO keeps the defaults (tls_params).
ENVOY_TLS_VERSIONS = {"TLSV1_0": "TLSv1_0", "TLSV1_1": "TLSv1_1", "TLSV1_2": "TLSv1_2", "TLSV1_3": "TLSv1_3"}
REQUIRED_CLIENT_CERTIFICATE = ("MUTUAL", "ISTIO_MUTUAL")
CHECKED_CLIENT_CERTIFICATE = ("MUTUAL", "OPTIONAL_MUTUAL", "ISTIO_MUTUAL")
HTTP_ALPN = ["h2", "http/1.1"]
# The keys of a Kubernetes TLS secret, as files of its folder.
CREDENTIAL_FILES = {"serverCertificate": "tls.crt", "privateKey": "tls.key", "caCertificates": "ca.crt"}


def _credential_folder(credentials_dir: str, name: str) -> str:
    return os.path.join(credentials_dir, name)


def server_certificates(tls: dict, credentials_dir: str) -> list[tuple[str, str]]:
    """(certificate chain, private key) files of every certificate the server presents: one
    credential (credentialName) or several (credentialNames, Istio's RSA and ECDSA pair), the
    tlsCertificates entries, or serverCertificate and privateKey. Envoy picks among several by
    what the client supports."""
    names = tls.get("credentialNames") or ([tls["credentialName"]] if "credentialName" in tls else [])
    if names:
        return [(os.path.join(_credential_folder(credentials_dir, name), CREDENTIAL_FILES["serverCertificate"]),
                 os.path.join(_credential_folder(credentials_dir, name), CREDENTIAL_FILES["privateKey"])) for name in names]
    if "tlsCertificates" in tls:
        return [(entry["serverCertificate"], entry["privateKey"]) for entry in tls["tlsCertificates"]]
    return [(tls["serverCertificate"], tls["privateKey"])]


def client_ca_file(tls: dict, credentials_dir: str) -> str | None:
    """The file of the CAs that sign the clients' certificates: the first credential's ca.crt
    (credentialName, credentialNames), else caCertificates, else the tlsCertificates entries'
    (validation makes them one file)."""
    names = tls.get("credentialNames") or ([tls["credentialName"]] if "credentialName" in tls else [])
    if names:
        return os.path.join(_credential_folder(credentials_dir, names[0]), CREDENTIAL_FILES["caCertificates"])
    if "caCertificates" in tls:
        return tls["caCertificates"]
    return next((entry["caCertificates"] for entry in tls.get("tlsCertificates") or [] if "caCertificates" in entry), None)


def server_tls_params(tls: dict) -> dict:
    params = tls_params()
    if tls.get("minProtocolVersion") in ENVOY_TLS_VERSIONS:
        params["tls_minimum_protocol_version"] = ENVOY_TLS_VERSIONS[tls["minProtocolVersion"]]
    if tls.get("maxProtocolVersion") in ENVOY_TLS_VERSIONS:
        params["tls_maximum_protocol_version"] = ENVOY_TLS_VERSIONS[tls["maxProtocolVersion"]]
    # Unknown names are left out (validation warned), duplicates too; none left: the defaults.
    suites = [name for name in dict.fromkeys(tls.get("cipherSuites") or []) if is_cipher_suite(name)]
    if suites:
        params["cipher_suites"] = suites
    return params


def client_certificate_checks(tls: dict) -> dict:
    """The CertificateValidationContext fields besides the trusted CA."""
    checks: dict = {}
    if tls.get("subjectAltNames"):
        checks["match_typed_subject_alt_names"] = subject_alt_name_matchers(tls["subjectAltNames"])
    if tls.get("verifyCertificateSpki"):
        checks["verify_certificate_spki"] = list(tls["verifyCertificateSpki"])
    if tls.get("verifyCertificateHash"):
        checks["verify_certificate_hash"] = list(tls["verifyCertificateHash"])
    if tls.get("caCrl"):
        checks["crl"] = {"filename": tls["caCrl"]}
    return checks


def _certificates(tls: dict, credentials_dir: str) -> dict:
    """The common_tls_context fields for the server's certificate and the client's check."""
    if tls["mode"] == "ISTIO_MUTUAL":
        return {
            "tls_certificate_sds_secret_configs": [sds_secret_config(DEFAULT_SECRET)],
            "combined_validation_context": {
                "default_validation_context": client_certificate_checks(tls),
                "validation_context_sds_secret_config": sds_secret_config(ROOT_SECRET),
            },
        }
    out: dict = {"tls_certificates": [{"certificate_chain": {"filename": chain}, "private_key": {"filename": key}}
                                      for chain, key in server_certificates(tls, credentials_dir)]}
    if tls["mode"] in CHECKED_CLIENT_CERTIFICATE:
        out["validation_context"] = {"trusted_ca": {"filename": client_ca_file(tls, credentials_dir)}, **client_certificate_checks(tls)}
    return out


def server_tls_socket(tls: dict, http: bool, credentials_dir: str = "") -> dict:
    """The transport socket of a server that terminates TLS (http: it serves HTTP, so it
    offers h2 and http/1.1 by ALPN; credentials_dir: the MeshConfig's, for credentialName)."""
    common: dict = {"tls_params": server_tls_params(tls), **_certificates(tls, credentials_dir)}
    if http:
        common["alpn_protocols"] = list(HTTP_ALPN)
    context: dict = {"common_tls_context": common}
    if tls["mode"] in REQUIRED_CLIENT_CERTIFICATE:
        context["require_client_certificate"] = True
    return {"name": "envoy.transport_sockets.tls", "typed_config": typed(DOWNSTREAM_TLS, **context)}
