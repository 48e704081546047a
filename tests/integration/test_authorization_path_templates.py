"""AuthorizationPolicy path templates, as Istio supports them (`{*}`: one path segment,
`{**}`: any number of them, last), compiled to Envoy's URI template matcher in RBAC, on real
Envoy with real requests.

`api` has a sidecar whose inbound listener (Sidecar ingress) forwards to the app; an ALLOW
policy lets in /api/{*}/status and /files/{**}, a DENY policy refuses /files/{*}/secret, and
every other request gets the sidecar's 403 without reaching the app.
"""

from __future__ import annotations

import pytest

from tests.harness import free_offset, free_port, request

MESH = """
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: api
  namespace: default
  annotations: {{meshwright.io/port-offset: "{offset}"}}
spec: {{address: 127.0.0.1, labels: {{app: api}}}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: api, namespace: default}}
spec:
  workloadSelector:
    labels: {{app: api}}
  ingress:
  - port: {{number: {inbound}, protocol: HTTP, name: http}}
    bind: 127.0.0.1
    defaultEndpoint: 127.0.0.1:{app}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: api-paths, namespace: default}}
spec:
  selector: {{matchLabels: {{app: api}}}}
  action: ALLOW
  rules:
  - to:
    - operation:
        methods: ["GET"]
        paths: ["/api/{{*}}/status", "/files/{{**}}"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: no-secrets, namespace: default}}
spec:
  selector: {{matchLabels: {{app: api}}}}
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/files/{{*}}/secret"]
"""


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    from tests.integration.conftest import MeshLab

    lab = MeshLab(tmp_path_factory.mktemp("path-templates"))
    app = lab.backend("api", "api-app", "v1")
    offset, inbound = free_offset(), free_port()
    lab.write_mesh(MESH.format(offset=offset, inbound=inbound, app=app.port))
    lab.proxy("api.default", 15000 + offset)
    yield inbound
    lab.close()


@pytest.mark.parametrize("path, status", [
    ("/api/v1/status", 200),            # {*}: one segment
    ("/api/orders/status", 200),
    ("/api/v1/v2/status", 403),         # two segments
    ("/api/status", 403),               # none
    ("/api/v1/status/more", 403),
    ("/files/a", 200),                  # {**}: any number of segments
    ("/files/a/b/c.txt", 200),
    ("/files/a/secret", 403),           # the DENY template
    ("/files/a/b/secret", 200),         # ... matches one segment before /secret only
    ("/other", 403),
])
def test_path_templates_allow_and_deny_by_segment(api, path, status):
    got, body, _ = request(api, path)
    assert got == status, (path, body)
    if status == 200:
        assert body["service"] == "api" and body["path"] == path
    else:
        assert body == {"raw": "RBAC: access denied"}
