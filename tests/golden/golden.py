"""Golden compiler cases, emissary-style: cases/<case>/mesh.yaml beside expected/<proxy>/*.yaml,
the files `meshwright render` writes for every proxy of that mesh.

Set MESHWRIGHT_UPDATE_GOLDEN=1 to rewrite the expected files from the current compiler
(then read the diff: it is the change in behaviour).
"""

from __future__ import annotations

import contextlib
import io
import os

from meshwright.check.pipeline import validate_mesh
from meshwright.cli import main
from meshwright.compile.proxy import list_proxies
from meshwright.deliver.file_set import MANIFEST, read_manifest
from meshwright.model.load import load_paths

CASES_DIR = os.path.join(os.path.dirname(__file__), "cases")
UPDATE = os.environ.get("MESHWRIGHT_UPDATE_GOLDEN") == "1"
# Where the files live on the proxy's host: fixed, so the rendered paths do not depend on
# where the test runs.
CONFIG_DIR = "/var/lib/meshwright/{proxy}"


def case_names() -> list[str]:
    return sorted(name for name in os.listdir(CASES_DIR) if os.path.isfile(os.path.join(CASES_DIR, name, "mesh.yaml")))


def proxy_ids(mesh_paths: list[str]) -> list[str]:
    mesh, problems = validate_mesh(load_paths(mesh_paths))
    assert not problems, "\n".join(str(p) for p in problems)
    return [proxy.id for proxy in list_proxies(mesh)]


def render(mesh_paths: list[str], proxy: str, out_dir: str) -> dict[str, bytes]:
    """`meshwright render` of one proxy into out_dir; returns filename -> bytes written."""
    argv = ["render", "--proxy", proxy, "--out", out_dir, "--config-dir", CONFIG_DIR.format(proxy=proxy), "--envoy", "none"]
    for path in mesh_paths:
        argv += ["--mesh", path]
    stderr = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
        code = main(argv)
    assert code == 0, f"render {proxy} exited {code}:\n{stderr.getvalue()}"
    files = {}
    for name in sorted(set(os.listdir(out_dir)) - {MANIFEST}):
        with open(os.path.join(out_dir, name), "rb") as handle:
            files[name] = handle.read()
    # The manifest is the render's own bookkeeping: the names of exactly these files.
    assert read_manifest(out_dir) == sorted(files), f"{out_dir}/{MANIFEST} does not list the files rendered"
    return files


def render_all(mesh_paths: list[str], out_dir: str) -> dict[str, dict[str, bytes]]:
    """proxy id -> its rendered files, for every proxy of the mesh."""
    return {proxy: render(mesh_paths, proxy, os.path.join(out_dir, proxy)) for proxy in proxy_ids(mesh_paths)}
