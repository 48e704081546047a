"""One real Kubernetes API server (../shared/envtest) for every test of this folder that asks
for it: started once (about 8 s, 290 MB), stopped by PID at the end. Tests keep to namespaces
of their own."""

from __future__ import annotations

import pytest

from tests.kubernetes.api_server import start_api_server, stop_api_server


@pytest.fixture(scope="session")
def api_server():
    api = start_api_server()
    try:
        yield api
    finally:
        stop_api_server(api)
