"""Egress TLS in compiled config: tls routes by the client's labels, and the trust store TLS
origination uses without caCertificates."""

from __future__ import annotations

import textwrap

from meshwright.check.pipeline import validate_mesh
from meshwright.compile.build import compile_proxy
from meshwright.compile.proxy import find_proxy
from meshwright.model.load import load_paths

MESH = """\
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress:
  - port: {number: 9443, protocol: TLS, name: tls}
    hosts: ["./*"]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: canary-client, namespace: default}
spec: {address: 10.0.0.1, labels: {app: client, track: canary}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: stable-client, namespace: default}
spec: {address: 10.0.0.2, labels: {app: client, track: stable}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com, api-canary.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}, {number: 80, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com]
  tls:
  - match:
    - sniHosts: [api.example.com]
      sourceLabels: {track: canary}
    route:
    - destination: {host: api-canary.example.com, port: {number: 443}}
"""


def compile_mesh(tmp_path, *texts: str):
    for index, text in enumerate((MESH,) + texts):
        (tmp_path / f"{index}.yaml").write_text(textwrap.dedent(text))
    mesh, problems = validate_mesh(load_paths([str(tmp_path)]))
    assert not problems, "\n".join(str(p) for p in problems)
    return mesh


def sni_routes(mesh, proxy_id: str) -> dict[str, str]:
    """server name -> cluster on the proxy's TLS egress listener."""
    config = compile_proxy(mesh, find_proxy(mesh, proxy_id))
    listener = next(l for l in config.listeners if l["name"] == "127.0.0.1_9443")
    return {name: chain["filters"][0]["typed_config"]["cluster"] for chain in listener["filter_chains"] for name in chain["filter_chain_match"]["server_names"]}


def test_tls_route_applies_only_to_clients_with_its_source_labels(tmp_path):
    """The two clients differ only in a label a tls route's sourceLabels names: each gets its
    own routes (they must not share one compiled class)."""
    mesh = compile_mesh(tmp_path)
    assert sni_routes(mesh, "canary-client.default") == {"api.example.com": "outbound|443||api-canary.example.com", "api-canary.example.com": "outbound|443||api-canary.example.com"}
    assert sni_routes(mesh, "stable-client.default") == {"api-canary.example.com": "outbound|443||api-canary.example.com", "api.example.com": "outbound|443||api.example.com"}


def test_a_virtual_service_with_only_tls_routes_leaves_http_ports_to_the_default_route(tmp_path):
    mesh = compile_mesh(tmp_path, """\
    apiVersion: networking.istio.io/v1
    kind: Sidecar
    metadata: {name: plain, namespace: default}
    spec:
      workloadSelector: {labels: {track: stable}}
      egress:
      - port: {number: 9080, protocol: HTTP, name: http}
        hosts: ["./api.example.com"]
    """)
    config = compile_proxy(mesh, find_proxy(mesh, "stable-client.default"))
    (host,) = next(r for r in config.routes if r["name"] == "9080")["virtual_hosts"]
    assert [route["route"]["cluster"] for route in host["routes"]] == ["outbound|80||api.example.com"]


def test_origination_without_ca_certificates_trusts_the_system_bundle_or_the_mesh_configs(tmp_path):
    rule = """\
    apiVersion: networking.istio.io/v1
    kind: DestinationRule
    metadata: {name: api, namespace: default}
    spec:
      host: api.example.com
      trafficPolicy: {tls: {mode: SIMPLE}}
    """

    def trusted(mesh) -> str:
        config = compile_proxy(mesh, find_proxy(mesh, "stable-client.default"))
        cluster = next(c for c in config.clusters if c["name"] == "outbound|80||api.example.com")
        return cluster["transport_socket"]["typed_config"]["common_tls_context"]["validation_context"]["trusted_ca"]["filename"]

    assert trusted(compile_mesh(tmp_path, rule)) == "/etc/ssl/certs/ca-certificates.crt"
    (tmp_path / "mesh-config.yaml").write_text(textwrap.dedent("""\
    apiVersion: meshwright.io/v1alpha1
    kind: MeshConfig
    metadata: {name: mesh}
    spec: {systemCaCertificates: /etc/pki/tls/certs/ca-bundle.crt}
    """))
    assert trusted(compile_mesh(tmp_path, rule)) == "/etc/pki/tls/certs/ca-bundle.crt"
