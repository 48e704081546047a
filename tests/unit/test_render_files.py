"""What `meshwright render` writes (issue #10, items 9 and 21): only into folders it may use,
removing only files it wrote itself, and in the order the xDS protocol needs."""

from __future__ import annotations

import os

import pytest

from meshwright.cli import main
from meshwright.deliver.file_set import MANIFEST, WRITE_ORDER, write_files

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASIC = os.path.join(ROOT, "examples", "basic", "mesh.yaml")
PROXY = "frontend.default"


def basic_mesh(tmp_path, mesh_config: str = "") -> str:
    text = open(BASIC).read().replace("  accessLogFile: /dev/stdout\n", f"  accessLogFile: /dev/stdout\n{mesh_config}")
    path = tmp_path / "mesh.yaml"
    path.write_text(text)
    return str(path)


def render(mesh: str, out, *extra: str) -> int:
    return main(["render", "--envoy", "none", "--mesh", mesh, "--proxy", PROXY, "--out", str(out), *extra])


def test_render_removes_only_the_files_it_wrote(tmp_path, capsys):
    """A user's rds-my-notes.yaml looks like a route file: it stays. A route file of the last
    render that is no longer rendered goes."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "rds-my-notes.yaml").write_text("my notes\n")
    (out / "stale-looking.yaml").write_text("mine too\n")
    mesh = basic_mesh(tmp_path)
    assert render(mesh, out) == 0
    assert (out / MANIFEST).read_text() == "bootstrap.yaml\ncds.yaml\nlds.yaml\nrds-15301.yaml\n"
    moved = open(mesh).read() + "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: frontend, namespace: default}\nspec:\n" \
        "  workloadSelector: {labels: {app: frontend}}\n  egress:\n  - port: {number: 9001, protocol: HTTP, name: http}\n    bind: 127.0.0.1\n    hosts: [\"./*\"]\n"
    open(mesh, "w").write(moved)
    assert render(mesh, out) == 0
    assert sorted(os.listdir(out)) == [MANIFEST, "bootstrap.yaml", "cds.yaml", "lds.yaml", "rds-9001.yaml", "rds-my-notes.yaml", "stale-looking.yaml"]
    assert (out / "rds-my-notes.yaml").read_text() == "my notes\n"


def test_an_edited_manifest_cannot_remove_anything_else(tmp_path):
    victim = tmp_path / "victim.yaml"
    victim.write_text("keep\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).write_text(f"../victim.yaml\n{victim}\n.hidden\nsub/dir\n")
    assert write_files(str(out), {"cds.yaml": "x\n"}) == ["cds.yaml"]
    assert victim.read_text() == "keep\n" and (out / MANIFEST).read_text() == "cds.yaml\n"


def test_files_are_written_in_the_order_of_the_xds_protocol(tmp_path, monkeypatch):
    """Secrets before the clusters that use them, clusters before the routes that name them,
    routes before listeners, the bootstrap last: seen in the order of the renames."""
    renamed = []
    real_replace = os.replace

    def recording_replace(source, target):
        renamed.append(os.path.basename(target))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", recording_replace)
    assert render(basic_mesh(tmp_path, "  certificates: {}\n"), tmp_path / "proxy" / "config") == 0
    files = [name for name in renamed if name != MANIFEST]
    assert files == ["sds-default.yaml", "sds-rootca.yaml", "cds.yaml", "rds-15301.yaml", "lds.yaml", "bootstrap.yaml"]
    assert [name.split(".")[0].split("-")[0] for name in files] == ["sds", "sds", "cds", "rds", "lds", "bootstrap"]
    assert renamed[0] == MANIFEST  # every file is listed before it is written
    assert WRITE_ORDER.index("cds.") < WRITE_ORDER.index("rds-")


@pytest.mark.parametrize("certificates,config_dir,code,message", [
    ("{dir: ../../etc/ssl}", None, 1, "mesh.yaml:10: MeshConfig/default/mesh: spec.certificates.dir: '../../etc/ssl' leaves the meshwright root"),
    ("{dir: /etc/ssl/private}", "/etc/meshwright/proxy", 1,
     "error: certificates.dir '/etc/ssl/private' is /etc/ssl/private, outside /etc/meshwright (the parent of the config directory /etc/meshwright/proxy)"),
    ("{}", "/proxy", 1, "error: the config directory /proxy is directly under /"),
    ("{}", "etc/meshwright/proxy", 2, "error: --config-dir: the config directory 'etc/meshwright/proxy' must be an absolute path"),
    ("{}", "/etc/meshwright/../../tmp/proxy", 2, "without '.' or '..' parts"),
])
def test_certificates_stay_under_the_config_dirs_parent(tmp_path, capsys, certificates, config_dir, code, message):
    out = tmp_path / "out"
    extra = ["--config-dir", config_dir] if config_dir else []
    assert render(basic_mesh(tmp_path, f"  certificates: {certificates}\n"), out, *extra) == code
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_the_default_certificates_folder_and_one_inside_the_root_are_fine(tmp_path, capsys):
    for certificates in ("{}", "{dir: /etc/meshwright/certs}", "{dir: certs}"):
        out = tmp_path / certificates.strip("{}").replace("/", "_").replace(": ", "-")
        assert render(basic_mesh(tmp_path, f"  certificates: {certificates}\n"), out, "--config-dir", "/etc/meshwright/proxy") == 0, capsys.readouterr().err
