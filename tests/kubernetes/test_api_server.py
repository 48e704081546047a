"""The test API server is the real one: it serves namespaces and enforces RBAC (a service
account's token is refused what it may not do)."""

from __future__ import annotations

import pytest
from kubernetes import client


def test_api_server_serves_namespaces_and_refuses_what_rbac_does_not_allow(api_server):
    core = client.CoreV1Api(api_server.api_client())
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="smoke")))
    core.create_namespaced_service_account("smoke", client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader")))
    token = core.create_namespaced_service_account_token("reader", "smoke", client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[]))).status.token

    assert "smoke" in {ns.metadata.name for ns in core.list_namespace().items}
    with pytest.raises(client.ApiException) as refused:
        client.CoreV1Api(api_server.api_client(token)).list_namespaced_service("smoke")
    assert refused.value.status == 403
    assert "system:serviceaccount:smoke:reader" in refused.value.body
