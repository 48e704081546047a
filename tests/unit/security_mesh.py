"""A small mesh with workload identity for the security tests: a client and two server
workloads behind `server` (HTTP 8080 and TCP 9000 on their sidecars' inbound listeners),
a `legacy` service without sidecars, and a MeshConfig that turns identity on."""

from __future__ import annotations

import textwrap

from meshwright.check.pipeline import validate_mesh
from meshwright.compile.build import compile_proxy
from meshwright.compile.proxy import find_proxy
from meshwright.model.load import load_paths

IDENTITY = """\
apiVersion: meshwright.io/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec:
  certificates: {}
"""

WORKLOADS = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: server, namespace: default}
spec:
  hosts: [server.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}, {number: 9000, name: tcp, protocol: TCP}]
  workloadSelector: {labels: {app: server}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: default}
spec:
  hosts: [legacy.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.9}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: server-1, namespace: default}
spec: {address: 10.0.0.1, labels: {app: server, version: v1}, serviceAccount: server}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: server-2, namespace: default}
spec: {address: 10.0.0.2, labels: {app: server, version: v2}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client, namespace: default}
spec: {address: 10.0.0.3, labels: {app: client}, serviceAccount: client}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: server, namespace: default}
spec:
  workloadSelector: {labels: {app: server}}
  ingress:
  - port: {number: 8080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:18080
  - port: {number: 9000, protocol: TCP, name: tcp}
    defaultEndpoint: 127.0.0.1:19000
"""


def load_mesh(tmp_path, *texts: str, identity: bool = True):
    """Validate WORKLOADS plus texts (and the identity MeshConfig); the mesh, or fail with the problems."""
    files = ([IDENTITY] if identity else []) + [WORKLOADS] + [textwrap.dedent(t) for t in texts]
    for index, text in enumerate(files):
        (tmp_path / f"{index:02d}.yaml").write_text(text)
    mesh, problems = validate_mesh(load_paths([str(tmp_path)]))
    assert not problems, "\n".join(str(p) for p in problems)
    return mesh


def compiled(mesh, proxy_id: str):
    return compile_proxy(mesh, find_proxy(mesh, proxy_id))


def listener_on(config, port: int) -> dict:
    return next(l for l in config.listeners if l["address"]["socket_address"]["port_value"] == port)


def cluster_named(config, name: str) -> dict:
    return next(c for c in config.clusters if c["name"] == name)
