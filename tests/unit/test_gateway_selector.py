"""Which proxy serves a Gateway: the WorkloadEntries its selector picks in any namespace
(Istio's default, PILOT_SCOPE_GATEWAY_TO_NAMESPACE=false); a standalone proxy only when it
picks none."""

from __future__ import annotations

from meshwright.check.pipeline import validate_mesh
from meshwright.compile.proxy import list_proxies
from meshwright.model.load import load_paths

MESH = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ingressgateway, namespace: istio-system}
spec: {address: 10.0.0.1, labels: {istio: ingressgateway}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ingressgateway-2, namespace: edge}
spec: {address: 10.0.0.2, labels: {istio: ingressgateway}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway, namespace: bookinfo}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: egress, namespace: bookinfo}
spec:
  selector: {istio: egressgateway}
  servers: [{port: {number: 8081, name: http, protocol: HTTP}, hosts: ["*"]}]
"""


def test_a_selector_picks_gateway_workloads_in_every_namespace(tmp_path):
    (tmp_path / "mesh.yaml").write_text(MESH)
    mesh, problems = validate_mesh(load_paths([str(tmp_path)]))
    assert not problems, "\n".join(map(str, problems))
    proxies = {proxy.id: (proxy.kind, proxy.gateways) for proxy in list_proxies(mesh)}
    assert proxies == {
        # Both ingress gateway workloads serve the Gateway of namespace bookinfo, in their own namespaces.
        "ingressgateway.istio-system": ("gateway", ("bookinfo/bookinfo-gateway",)),
        "ingressgateway-2.edge": ("gateway", ("bookinfo/bookinfo-gateway",)),
        # No workload is labelled istio: egressgateway: that Gateway is a standalone proxy.
        "egress.bookinfo": ("gateway", ("bookinfo/egress",)),
    }
