"""Delivery xds in the Ansible path (mesh_render's xds and xds_servers, deliver.bundle.xds_bundle):
a proxy's files are its xDS bootstrap alone, the same text `meshwright xds-bootstrap` writes,
and a mesh or a request that cannot give one is refused naming the proxy."""

from __future__ import annotations

import os

import pytest

from meshwright.cli import main as meshwright_main
from meshwright.deliver.bundle import RenderError, bundle_proxies, load_mesh, xds_bundle

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEED = os.path.join(ROOT, "examples", "seed", "mesh")
CONFIG_DIR = "/srv/mesh/order-1/etc/meshwright/proxy"
SERVERS = [("127.0.0.1", 15012), ("10.0.0.3", 15012)]


def test_the_bundle_is_the_bootstrap_that_meshwright_xds_bootstrap_writes(tmp_path):
    mesh = load_mesh([SEED])
    bundle = xds_bundle(mesh, bundle_proxies(mesh, {"order-1.default": CONFIG_DIR})["order-1.default"], SERVERS)
    out = tmp_path / "bootstrap.yaml"
    assert meshwright_main(["xds-bootstrap", "--mesh", SEED, "--proxy", "order-1.default", "--xds", "127.0.0.1:15012",
                            "--xds", "10.0.0.3:15012", "--certs-dir", bundle.identity["certs_dir"], "--out", str(out)]) == 0
    assert bundle.files == {"bootstrap.yaml": out.read_text()}
    assert bundle.validation_bootstrap == out.read_text()
    assert bundle.identity["certs_dir"] == "/srv/mesh/order-1/etc/meshwright/certs"  # as file delivery's: the agent writes there


def test_delta_asks_for_incremental_xds():
    mesh = load_mesh([SEED])
    bundle = xds_bundle(mesh, bundle_proxies(mesh, {"order-1.default": CONFIG_DIR})["order-1.default"], SERVERS, delta=True)
    assert "api_type: DELTA_GRPC" in bundle.files["bootstrap.yaml"]


PLAINTEXT_MESH = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client, namespace: default}
spec: {address: 127.0.0.1, labels: {app: client}, serviceAccount: client}
"""


def test_a_mesh_without_certificates_is_refused_naming_the_proxy(tmp_path):
    (tmp_path / "mesh.yaml").write_text(PLAINTEXT_MESH)
    mesh = load_mesh([str(tmp_path / "mesh.yaml")])
    plain = bundle_proxies(mesh, {"client.default": CONFIG_DIR})["client.default"]
    with pytest.raises(RenderError, match=r"^proxy client.default: delivery xds needs the mesh's certificates \(MeshConfig certificates\)"):
        xds_bundle(mesh, plain, SERVERS)


def test_no_control_plane_is_refused_naming_the_proxy():
    mesh = load_mesh([SEED])
    with pytest.raises(RenderError, match="^proxy order-1.default: delivery xds needs at least one control plane instance"):
        xds_bundle(mesh, bundle_proxies(mesh, {"order-1.default": CONFIG_DIR})["order-1.default"], [])
