"""Gateway server TLS as Istio's ServerTLSSettings: what meshwright refuses, and why, at the
field that says it (the modes and fields it compiles are in tests/golden/cases/gateway-tls
and tests/integration/test_gateway_tls.py)."""

from __future__ import annotations

import textwrap

import pytest

from meshwright.check.pipeline import validate_mesh
from meshwright.compile.build import compile_proxy
from meshwright.compile.envoy_values import SERVER_CIPHER_SUITES
from meshwright.compile.proxy import list_proxies
from meshwright.model.load import load_paths

from tests.unit.validation_cases import Case, check_case, validate_texts

GATEWAY = "Gateway/default/ingress"
CREDENTIALS_MESH_CONFIG = """
        apiVersion: meshwright.io/v1alpha1
        kind: MeshConfig
        metadata: {name: mesh}
        spec: {credentials: {dir: /etc/meshwright/credentials}}
        ---"""


def gateway(server: str) -> str:
    """A Gateway with one server (YAML at the server's indentation)."""
    return f"""
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {{name: ingress, namespace: default}}
        spec:
          selector: {{istio: ingressgateway}}
          servers:
{server}
        """


CASES = [
    Case(
        "credentialName without a credentials folder in the MeshConfig",
        gateway("""\
          - port: {number: 443, name: https, protocol: HTTPS}
            hosts: [bookinfo.example.com]
            tls:
              mode: SIMPLE
              credentialName: bookinfo-credential  #!"""),
        GATEWAY, "spec.servers[0].tls.credentialName",
        ("credentialName 'bookinfo-credential' needs a folder of credentials", "add `credentials: {dir: /etc/meshwright/credentials}`",
         "DIR/NAME/tls.crt, DIR/NAME/tls.key"),
    ),
    Case(
        "credentialName that is no Kubernetes secret name (it would leave the folder)",
        CREDENTIALS_MESH_CONFIG + gateway("""\
          - port: {number: 443, name: https, protocol: HTTPS}
            hosts: [bookinfo.example.com]
            tls:
              mode: SIMPLE
              credentialName: ../../etc/ssl  #!"""),
        GATEWAY, "spec.servers[0].tls.credentialName", ("a Kubernetes secret name: a DNS-1123 name",),
    ),
    Case(
        "credentialName beside the files it stands for",
        CREDENTIALS_MESH_CONFIG + gateway("""\
          - port: {number: 443, name: https, protocol: HTTPS}
            hosts: [bookinfo.example.com]
            tls:
              mode: SIMPLE
              credentialName: bookinfo-credential
              serverCertificate: /etc/certs/bookinfo.pem  #!"""),
        GATEWAY, "spec.servers[0].tls.serverCertificate", ("serverCertificate and credentialName both give the gateway's certificate: keep one",),
    ),
    Case(
        "credentialNames with a name that is no Kubernetes secret name",
        CREDENTIALS_MESH_CONFIG + gateway("""\
          - port: {number: 443, name: https, protocol: HTTPS}
            hosts: [bookinfo.example.com]
            tls:
              mode: SIMPLE
              credentialNames:
              - bookinfo-rsa
              - ../bookinfo-ecdsa  #!"""),
        GATEWAY, "spec.servers[0].tls.credentialNames[1]", ("'../bookinfo-ecdsa' is not a Kubernetes secret name",),
    ),
    Case(
        "credentialNames beside credentialName",
        CREDENTIALS_MESH_CONFIG + gateway("""\
          - port: {number: 443, name: https, protocol: HTTPS}
            hosts: [bookinfo.example.com]
            tls:
              mode: SIMPLE
              credentialName: bookinfo-credential
              credentialNames: [bookinfo-rsa, bookinfo-ecdsa]  #!"""),
        GATEWAY, "spec.servers[0].tls.credentialNames", ("credentialNames and credentialName both give the gateway's certificate: keep one",),
    ),
    Case(
        "credentialNames of three credentials",
        CREDENTIALS_MESH_CONFIG + gateway("""\
          - port: {number: 443, name: https, protocol: HTTPS}
            hosts: [bookinfo.example.com]
            tls:
              mode: SIMPLE
              credentialNames: [a, b, c]  #!"""),
        GATEWAY, "spec.servers[0].tls.credentialNames", ("credentialNames gives 3 certificates: Envoy presents one per key type, so at most 2",),
    ),
    Case(
        "a relative credentials folder",
        """
        apiVersion: meshwright.io/v1alpha1
        kind: MeshConfig
        metadata: {name: mesh}
        spec:
          credentials: {dir: credentials}  #!
        """,
        "MeshConfig/default/mesh", "spec.credentials.dir", ("an absolute path without spaces, such as /etc/meshwright/credentials",),
    ),
    Case(
        "tlsCertificates with MUTUAL and no CA for the clients",
        gateway("""\
          - port: {number: 443, name: https, protocol: HTTPS}
            hosts: [bookinfo.example.com]
            tls:  #!
              mode: MUTUAL
              tlsCertificates: [{serverCertificate: /c.pem, privateKey: /k.pem}]"""),
        GATEWAY, "spec.servers[0].tls", ("tls.mode MUTUAL needs caCertificates (a file path on the gateway's host)",),
    ),
    Case(
        "tlsCertificates entries naming different CAs",
        gateway("""\
          - port: {number: 443, name: https, protocol: HTTPS}
            hosts: [bookinfo.example.com]
            tls:
              mode: MUTUAL
              tlsCertificates:  #!
              - {serverCertificate: /rsa.pem, privateKey: /rsa-key.pem, caCertificates: /ca-1.pem}
              - {serverCertificate: /ec.pem, privateKey: /ec-key.pem, caCertificates: /ca-2.pem}"""),
        GATEWAY, "spec.servers[0].tls.tlsCertificates", ("the entries name different caCertificates (/ca-1.pem, /ca-2.pem): Envoy checks clients against one CA file",),
    ),
    Case(
        "AUTO_PASSTHROUGH with a certificate it would never use",
        gateway("""\
          - port: {number: 15443, name: tls, protocol: TLS}
            hosts: ["*.local"]
            tls:
              mode: AUTO_PASSTHROUGH
              credentialName: eastwest-credential  #!"""),
        GATEWAY, "spec.servers[0].tls.credentialName",
        ("credentialName has no use with mode AUTO_PASSTHROUGH (the backend makes the TLS handshake): remove it",),
    ),
    Case(
        "PASSTHROUGH with a certificate it would never use",
        gateway("""\
          - port: {number: 443, name: https, protocol: HTTPS}
            hosts: [nginx.example.com]
            tls:
              mode: PASSTHROUGH
              serverCertificate: /etc/certs/nginx.pem  #!"""),
        GATEWAY, "spec.servers[0].tls.serverCertificate",
        ("serverCertificate has no use with mode PASSTHROUGH (the backend makes the TLS handshake): remove it",),
    ),
    Case(
        "ISTIO_MUTUAL without workload certificates",
        gateway("""\
          - port: {number: 443, name: https, protocol: HTTPS}
            hosts: [internal.example.com]
            tls:
              mode: ISTIO_MUTUAL  #!"""),
        GATEWAY, "spec.servers[0].tls.mode", ("ISTIO_MUTUAL needs workload certificates", "`certificates: {}` in the MeshConfig"),
    ),
    Case(
        "ISTIO_MUTUAL with a certificate file of its own",
        """
        apiVersion: meshwright.io/v1alpha1
        kind: MeshConfig
        metadata: {name: mesh}
        spec: {certificates: {}}
        ---"""
        + gateway("""\
          - port: {number: 443, name: https, protocol: HTTPS}
            hosts: [internal.example.com]
            tls:
              mode: ISTIO_MUTUAL
              caCertificates: /etc/certs/ca.pem  #!"""),
        GATEWAY, "spec.servers[0].tls.caCertificates", ("ISTIO_MUTUAL uses the gateway's certificate from the mesh CA: remove caCertificates",),
    ),
    Case(
        "OPTIONAL_MUTUAL without the CA that checks clients",
        gateway("""\
          - port: {number: 443, name: https, protocol: HTTPS}
            hosts: [public.example.com]
            tls:  #!
              mode: OPTIONAL_MUTUAL
              serverCertificate: /etc/certs/public.pem
              privateKey: /etc/certs/public-key.pem"""),
        GATEWAY, "spec.servers[0].tls", ("tls.mode OPTIONAL_MUTUAL needs caCertificates (a file path on the gateway's host)",),
    ),
    Case(
        "subjectAltNames with SIMPLE, which asks clients for no certificate",
        gateway("""\
          - port: {number: 443, name: https, protocol: HTTPS}
            hosts: [bookinfo.example.com]
            tls:
              mode: SIMPLE
              serverCertificate: /etc/certs/bookinfo.pem
              privateKey: /etc/certs/bookinfo-key.pem
              subjectAltNames: [client.example.com]  #!"""),
        GATEWAY, "spec.servers[0].tls.subjectAltNames", ("subjectAltNames checks clients' certificates, which mode SIMPLE does not ask for", "use mode MUTUAL"),
    ),
    Case(
        "minProtocolVersion above maxProtocolVersion",
        gateway("""\
          - port: {number: 443, name: https, protocol: HTTPS}
            hosts: [bookinfo.example.com]
            tls:
              mode: SIMPLE
              serverCertificate: /etc/certs/bookinfo.pem
              privateKey: /etc/certs/bookinfo-key.pem
              minProtocolVersion: TLSV1_3  #!
              maxProtocolVersion: TLSV1_2"""),
        GATEWAY, "spec.servers[0].tls.minProtocolVersion", ("minProtocolVersion TLSV1_3 is above maxProtocolVersion TLSV1_2",),
    ),
    Case(
        "TLS settings on a plain HTTP server",
        gateway("""\
          - port: {number: 80, name: http, protocol: HTTP}
            hosts: [bookinfo.example.com]
            tls:
              mode: SIMPLE  #!
              serverCertificate: /etc/certs/bookinfo.pem
              privateKey: /etc/certs/bookinfo-key.pem"""),
        GATEWAY, "spec.servers[0].tls.mode", ("an HTTP server is plain text: tls.mode needs protocol HTTPS or TLS",),
    ),
    Case(
        "a TLS server without tls",
        gateway("""\
          - port: {number: 9443, name: tls, protocol: TLS}  #!
            hosts: ["*"]"""),
        GATEWAY, "spec.servers[0].tls", ("a TLS server needs tls.mode", "PASSTHROUGH (VirtualService tls routes pick the backend by SNI) or AUTO_PASSTHROUGH"),
    ),
    Case(
        "a tls match for a gateway the VirtualService is not bound to",
        gateway("""\
          - port: {number: 443, name: https, protocol: HTTPS}
            hosts: [reviews.default.svc.cluster.local]
            tls: {mode: PASSTHROUGH}""")
        + """---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          tls:
          - match:
            - sniHosts: [reviews]
              gateways:
              - ingress  #!
            route:
            - destination: {host: reviews}
        """,
        "VirtualService/default/reviews", "spec.tls[0].match[0].gateways[0]",
        ("'ingress' is not among the gateways this VirtualService is bound to (mesh): add it to spec.gateways",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_gateway_tls_problem(tmp_path, case):
    check_case(tmp_path, case)


def test_an_unknown_cipher_suite_is_left_out_with_a_warning_as_istio_does(tmp_path):
    (tmp_path / "case.yaml").write_text(textwrap.dedent(gateway("""\
          - port: {number: 443, name: https, protocol: HTTPS}
            hosts: [bookinfo.example.com]
            tls:
              mode: SIMPLE
              serverCertificate: /etc/certs/bookinfo.pem
              privateKey: /etc/certs/bookinfo-key.pem
              cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256, TLS_RSA_WITH_RC4_128_SHA]""")))
    mesh, problems = validate_mesh(load_paths([str(tmp_path)]))
    assert not problems
    assert [str(w).split(": ", 2)[2] for w in mesh.warnings] == [
        "spec.servers[0].tls.cipherSuites[1]: warning: 'TLS_RSA_WITH_RC4_128_SHA' is not a cipher suite Envoy knows: it is left out, "
        "as Istio does (known: " + ", ".join(SERVER_CIPHER_SUITES) + ")"
    ]
    listener = compile_proxy(mesh, list_proxies(mesh)[0]).listeners[0]
    params = listener["filter_chains"][0]["transport_socket"]["typed_config"]["common_tls_context"]["tls_params"]
    assert params["cipher_suites"] == ["ECDHE-RSA-AES128-GCM-SHA256"]


def test_the_shapes_of_istio_ingress_tasks_validate(tmp_path):
    """PASSTHROUGH with tls routes bound to the gateway (Istio's "Ingress Gateway without TLS
    Termination"), MUTUAL with subjectAltNames, and httpsRedirect give no problem at all."""
    problems = validate_texts(tmp_path, {"case.yaml": """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: nginx, namespace: default}
        spec:
          hosts: [my-nginx.default.svc.cluster.local]
          location: MESH_INTERNAL
          resolution: STATIC
          ports: [{number: 443, name: https, protocol: https}]
          endpoints: [{address: 10.0.0.1}]
        ---
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: mygateway, namespace: default}
        spec:
          selector: {istio: ingressgateway}
          servers:
          - port: {number: 80, name: http, protocol: HTTP}
            hosts: [nginx.example.com]
            tls: {httpsRedirect: true}
          - port: {number: 443, name: https, protocol: HTTPS}
            tls: {mode: PASSTHROUGH}
            hosts: [nginx.example.com]
          - port: {number: 443, name: https-mtls, protocol: HTTPS}
            hosts: [httpbin.example.com]
            tls:
              mode: MUTUAL
              serverCertificate: /etc/certs/httpbin.pem
              privateKey: /etc/certs/httpbin-key.pem
              caCertificates: /etc/certs/ca.pem
              subjectAltNames: [client.example.com]
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: nginx, namespace: default}
        spec:
          hosts: [nginx.example.com]
          gateways: [mygateway]
          tls:
          - match:
            - port: 443
              sniHosts: [nginx.example.com]
            route:
            - destination: {host: my-nginx, port: {number: 443}}
        """})
    assert problems == []
