"""One real Kubernetes API server (../shared/envtest) for every test of this folder that asks
for it: started once (about 8 s, 290 MB), stopped by PID at the end. Tests keep to namespaces
of their own."""

from __future__ import annotations

import pytest

from meshwright.cli import main as meshwright_main
from tests.kubernetes.api_server import start_api_server, stop_api_server


@pytest.fixture(scope="session")
def api_server():
    api = start_api_server()
    try:
        yield api
    finally:
        stop_api_server(api)


@pytest.fixture(scope="session")
def crds(api_server, tmp_path_factory):
    """meshwright's CRDs installed (`meshwright crds`, applied and Established); the file."""
    out = tmp_path_factory.mktemp("crds") / "crds.yaml"
    assert meshwright_main(["crds", "--out", str(out)]) == 0
    api_server.kubectl("apply", "--server-side", "-f", str(out))
    api_server.kubectl("wait", "--for=condition=Established", "--timeout=30s", "-f", str(out))
    return out
