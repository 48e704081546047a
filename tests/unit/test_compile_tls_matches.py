"""VirtualService tls matches as Istio's matchTLS reads them (every field given must hold):
sourceNamespace and sourceLabels pick the clients at sidecars, and at a PASSTHROUGH gateway
the gateway's own labels (a match naming other labels gives the gateway no chain)."""

from __future__ import annotations

from meshwright.check.pipeline import validate_mesh
from meshwright.compile.build import compile_proxy
from meshwright.compile.proxy import find_proxy
from meshwright.model.load import load_paths

MESH = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: shop}
spec:
  hosts: [api.example.com, api-canary.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  egress:
  - port: {number: 9443, protocol: TLS, name: tls}
    hosts: ["./*"]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: other}
spec:
  egress:
  - port: {number: 9443, protocol: TLS, name: tls}
    hosts: ["shop/*"]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: orders, namespace: shop}
spec: {address: 10.0.1.1, labels: {app: orders}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: audit, namespace: other}
spec: {address: 10.0.1.2, labels: {app: audit}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  selector: {istio: edge}
  servers:
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: ["*"]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: edge, namespace: shop}
spec: {address: 10.0.9.1, labels: {istio: edge}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: shop}
spec:
  hosts: [api.example.com]
  gateways: [mesh, edge]
  tls:
  - match:
    - {sniHosts: [api.example.com], sourceNamespace: other}
    route:
    - destination: {host: api-canary.example.com, port: {number: 443}}
  - match:
    - {sniHosts: [api.example.com], gateways: [edge], sourceLabels: {istio: other-gateway}}
    route:
    - destination: {host: api-canary.example.com, port: {number: 443}}
"""


def clusters_by_name(tmp_path, proxy_id: str) -> dict[str, str]:
    (tmp_path / "mesh.yaml").write_text(MESH)
    mesh, problems = validate_mesh(load_paths([str(tmp_path / "mesh.yaml")]))
    assert not problems, "\n".join(str(p) for p in problems)
    config = compile_proxy(mesh, find_proxy(mesh, proxy_id))
    return {name: chain["filters"][0]["typed_config"]["cluster"]
            for listener in config.listeners for chain in listener["filter_chains"]
            for name in (chain.get("filter_chain_match") or {}).get("server_names", [])}


def test_source_namespace_picks_the_clients_namespace(tmp_path):
    assert clusters_by_name(tmp_path, "audit.other")["api.example.com"] == "outbound|443||api-canary.example.com"
    assert clusters_by_name(tmp_path, "orders.shop")["api.example.com"] == "outbound|443||api.example.com"


def test_a_gateway_match_for_other_source_labels_gives_the_gateway_no_chain(tmp_path):
    assert "api.example.com" not in clusters_by_name(tmp_path, "edge.shop")
