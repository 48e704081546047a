"""Gateway TLS in compiled config: tls matches narrowed by `gateways` (the sidecars' half and
the egress gateway's half of Istio's egress gateway task), servers of one port that name
the same host (the first takes it: Envoy refuses two chains with the same match), and
passthrough routes only from VirtualServices exported to the gateway proxy's namespace."""

from __future__ import annotations

import textwrap

import pytest

from meshwright.check.pipeline import validate_mesh
from meshwright.compile.build import compile_proxy
from meshwright.compile.proxy import find_proxy
from meshwright.model.load import load_paths

EGRESS = """\
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress:
  - port: {number: 9443, protocol: TLS, name: tls}
    hosts: ["./*", "istio-system/*"]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client, namespace: default}
spec: {address: 10.0.0.1, labels: {app: client}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: egressgateway, namespace: istio-system}
spec:
  hosts: [istio-egressgateway.istio-system.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 443, name: tls, protocol: TLS}]
  endpoints: [{address: 10.0.0.9}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cnn, namespace: default}
spec:
  hosts: [edition.cnn.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: egress, namespace: default}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: [edition.cnn.com]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cnn, namespace: default}
spec:
  hosts: [edition.cnn.com]
  gateways: [mesh, egress]
  tls:  # the gateway's match first: on sidecars, it must not take the name
  - match: [{gateways: [egress], port: 443, sniHosts: [edition.cnn.com]}]
    route:
    - destination: {host: edition.cnn.com, port: {number: 443}}
  - match: [{gateways: [mesh], sniHosts: [edition.cnn.com]}]
    route:
    - destination: {host: istio-egressgateway.istio-system.svc.cluster.local, port: {number: 443}}
"""


def compile_mesh(tmp_path, text: str):
    (tmp_path / "mesh.yaml").write_text(textwrap.dedent(text))
    mesh, problems = validate_mesh(load_paths([str(tmp_path)]))
    assert not problems, "\n".join(str(p) for p in problems)
    return mesh


def warnings_of(mesh) -> list[str]:
    return [str(w).split(": ", 2)[2] for w in mesh.warnings]


def sni_routes(mesh, proxy_id: str, listener_name: str) -> list[tuple[list[str], str]]:
    """(server names, cluster) of each chain of a listener of the proxy."""
    config = compile_proxy(mesh, find_proxy(mesh, proxy_id))
    listener = next(l for l in config.listeners if l["name"] == listener_name)
    return [(chain.get("filter_chain_match", {}).get("server_names"), chain["filters"][0]["typed_config"].get("cluster")) for chain in listener["filter_chains"]]


def test_a_match_for_the_mesh_routes_sidecars_and_a_match_for_the_gateway_routes_it(tmp_path):
    mesh = compile_mesh(tmp_path, EGRESS)
    assert warnings_of(mesh) == []
    sidecar = sni_routes(mesh, "client.default", "127.0.0.1_9443")
    assert (["edition.cnn.com"], "outbound|443||istio-egressgateway.istio-system.svc.cluster.local") in sidecar
    assert (["edition.cnn.com"], "outbound|443||edition.cnn.com") not in sidecar
    assert sni_routes(mesh, "egress.default", "0.0.0.0_443") == [(["edition.cnn.com"], "outbound|443||edition.cnn.com")]


def test_servers_of_one_port_naming_one_host_give_it_to_the_first(tmp_path):
    """A PASSTHROUGH server and a SIMPLE one both name edition.cnn.com on port 443: the
    passthrough (first) keeps it, the SIMPLE server keeps only its other name."""
    mesh = compile_mesh(tmp_path, EGRESS.replace("""\
    tls: {mode: PASSTHROUGH}
""", """\
    tls: {mode: PASSTHROUGH}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [edition.cnn.com, www.cnn.com]
    tls: {mode: SIMPLE, serverCertificate: /etc/certs/cnn.pem, privateKey: /etc/certs/cnn-key.pem}
"""))
    chains = sni_routes(mesh, "egress.default", "0.0.0.0_443")
    assert [names for names, _ in chains] == [["edition.cnn.com"], ["www.cnn.com"]]
    assert chains[0][1] == "outbound|443||edition.cnn.com"
    assert warnings_of(mesh) == [
        "spec.servers[1].hosts[0]: warning: servers[0] also takes 'edition.cnn.com' on port 443: connections for it go to that server (the first), none to this one"
    ]


def _egress_gateway_in_istio_system(export_to: str) -> str:
    """EGRESS with its Gateway in istio-system (its standalone proxy's namespace) and the
    VirtualService, in default, exported as export_to says."""
    return (EGRESS.replace("metadata: {name: egress, namespace: default}", "metadata: {name: egress, namespace: istio-system}")
            .replace("gateways: [mesh, egress]", f"gateways: [mesh, istio-system/egress]\n  exportTo: {export_to}")
            .replace("{gateways: [egress],", "{gateways: [istio-system/egress],"))


def test_passthrough_routes_only_from_virtual_services_exported_to_the_gateways_namespace(tmp_path):
    """exportTo ["."] keeps the VirtualService's tls routes from a gateway proxy in another
    namespace (nothing to pass through: no listener); exported there, they route it."""
    (tmp_path / "hidden").mkdir()
    (tmp_path / "shown").mkdir()
    hidden = compile_mesh(tmp_path / "hidden", _egress_gateway_in_istio_system('["."]'))
    listeners = compile_proxy(hidden, find_proxy(hidden, "egress.istio-system")).listeners
    assert "0.0.0.0_443" not in [l["name"] for l in listeners]
    assert (["edition.cnn.com"], "outbound|443||istio-egressgateway.istio-system.svc.cluster.local") in sni_routes(hidden, "client.default", "127.0.0.1_9443")
    shown = compile_mesh(tmp_path / "shown", _egress_gateway_in_istio_system('[".", istio-system]'))
    assert sni_routes(shown, "egress.istio-system", "0.0.0.0_443") == [(["edition.cnn.com"], "outbound|443||edition.cnn.com")]


CREDENTIAL_GATEWAY = """\
apiVersion: meshwright.io/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec: {credentials: {dir: /etc/meshwright/credentials}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [httpbin.example.com]
    tls: SETTINGS
"""


def _transport_socket(tmp_path, tls: str) -> dict:
    tmp_path.mkdir()
    mesh = compile_mesh(tmp_path, CREDENTIAL_GATEWAY.replace("SETTINGS", tls))
    config = compile_proxy(mesh, find_proxy(mesh, "ingress.istio-system"))
    return config.listeners[0]["filter_chains"][0]["transport_socket"]


@pytest.mark.parametrize("mode, files", [
    ("SIMPLE", "serverCertificate: /etc/meshwright/credentials/httpbin-credential/tls.crt, "
               "privateKey: /etc/meshwright/credentials/httpbin-credential/tls.key"),
    ("MUTUAL", "serverCertificate: /etc/meshwright/credentials/httpbin-credential/tls.crt, "
               "privateKey: /etc/meshwright/credentials/httpbin-credential/tls.key, "
               "caCertificates: /etc/meshwright/credentials/httpbin-credential/ca.crt"),
])
def test_credential_name_compiles_to_the_files_of_its_folder(tmp_path, mode, files):
    """credentialName NAME is the folder NAME of credentials.dir with the keys of a Kubernetes
    TLS secret as files: the same TLS context as the file fields naming them."""
    by_name = _transport_socket(tmp_path / "name", f"{{mode: {mode}, credentialName: httpbin-credential}}")
    by_files = _transport_socket(tmp_path / "files", f"{{mode: {mode}, {files}}}")
    assert by_name == by_files
    common = by_name["typed_config"]["common_tls_context"]
    assert common["tls_certificates"] == [{
        "certificate_chain": {"filename": "/etc/meshwright/credentials/httpbin-credential/tls.crt"},
        "private_key": {"filename": "/etc/meshwright/credentials/httpbin-credential/tls.key"},
    }]
    assert ("validation_context" in common) == (mode == "MUTUAL")
