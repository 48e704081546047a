"""Gateway servers that name their certificates by credentialName, as Istio's "Secure
Gateways" task writes them, on real Envoy: the credential is a folder of the MeshConfig's
credentials.dir holding the files `kubectl create secret tls/generic` gives the keys of
(tls.crt, tls.key, ca.crt).

- `meshwright validate` (with envoy --mode validate) accepts the mesh on a machine where the
  folder does not exist: the files are on the gateway's host;
- SIMPLE by credentialName presents the certificate of its folder;
- MUTUAL by credentialName refuses a client without a certificate, or with one from another
  CA, and accepts one signed by the folder's ca.crt.
"""

from __future__ import annotations

import shutil

import pytest

from meshwright.cli import main as meshwright_main
from tests.harness import free_offset, free_port
from tests.integration.conftest import MeshLab
from tests.integration.test_egress_tls import LocalCa
from tests.integration.test_gateway_tls import REFUSED, tls_get

MESH = """
apiVersion: meshwright.io/v1alpha1
kind: MeshConfig
metadata: {{name: mesh}}
spec:
  credentials: {{dir: {credentials}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: httpbin, namespace: default}}
spec:
  hosts: [httpbin.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8000, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {httpbin}}}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: mygateway
  namespace: istio-system
  annotations: {{meshwright.io/port-offset: "{offset}"}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {https_port}, name: https, protocol: HTTPS}}
    bind: 127.0.0.1
    hosts: [httpbin.example.com]
    tls:
      mode: SIMPLE
      credentialName: httpbin-credential
  - port: {{number: {https_port}, name: https-mutual, protocol: HTTPS}}
    bind: 127.0.0.1
    hosts: [helloworld.example.com]
    tls:
      mode: MUTUAL
      credentialName: helloworld-credential
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: httpbin, namespace: default}}
spec:
  hosts: [httpbin.example.com, helloworld.example.com]
  gateways: [istio-system/mygateway]
  http:
  - route:
    - destination: {{host: httpbin.default.svc.cluster.local}}
"""


def credential(folder, certificate: str, key: str, ca: str | None = None) -> None:
    """A credential folder with the file names of a Kubernetes TLS secret's keys."""
    folder.mkdir(parents=True)
    shutil.copy(certificate, folder / "tls.crt")
    shutil.copy(key, folder / "tls.key")
    if ca:
        shutil.copy(ca, folder / "ca.crt")


class Gateway:
    def __init__(self, tmp_path_factory):
        self.lab = MeshLab(tmp_path_factory.mktemp("gateway-credentials"))
        try:
            self._start(tmp_path_factory)
        except BaseException:
            self.lab.close()
            raise

    def _start(self, tmp_path_factory) -> None:
        self.server_ca = LocalCa(tmp_path_factory.mktemp("server-ca"))
        self.client_ca = LocalCa(tmp_path_factory.mktemp("client-ca"))
        self.stranger_ca = LocalCa(tmp_path_factory.mktemp("stranger-ca"))
        self.httpbin = self.lab.backend("httpbin", "httpbin-1")
        credentials = tmp_path_factory.mktemp("host") / "credentials"
        offset, self.https_port = free_offset(), free_port()
        self.lab.write_mesh(MESH.format(credentials=credentials, httpbin=self.httpbin.port, offset=offset, https_port=self.https_port))
        # Checked where the credentials are not: they live on the gateway's host.
        self.validated_without_files = meshwright_main(["validate", self.lab.mesh_path])
        credential(credentials / "httpbin-credential", *self.server_ca.issue("httpbin", ["httpbin.example.com"]))
        credential(credentials / "helloworld-credential", *self.server_ca.issue("helloworld", ["helloworld.example.com"]), self.client_ca.path)
        self.lab.proxy("mygateway.istio-system", 15000 + offset)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    running = Gateway(tmp_path_factory)
    yield running
    running.lab.close()


def test_validate_does_not_need_the_credential_files(gateway):
    assert gateway.validated_without_files == 0


def test_simple_by_credential_name_presents_the_certificate_of_its_folder(gateway):
    status, body, common_name, _ = tls_get(gateway.https_port, "httpbin.example.com", gateway.server_ca.path)
    assert (status, body["service"], common_name) == (200, "httpbin", "httpbin")


def test_mutual_by_credential_name_accepts_a_client_its_ca_signed(gateway):
    client = gateway.client_ca.issue("client-good", ["client.example.com"])
    status, body, common_name, _ = tls_get(gateway.https_port, "helloworld.example.com", gateway.server_ca.path, client)
    assert (status, body["service"], common_name) == (200, "httpbin", "helloworld")


@pytest.mark.parametrize("who", ["no certificate", "another CA"])
def test_mutual_by_credential_name_refuses_a_client_without_the_right_certificate(gateway, who):
    client = None if who == "no certificate" else gateway.stranger_ca.issue("client-stranger", ["client.example.com"])
    before = gateway.httpbin.count
    with pytest.raises(REFUSED):
        tls_get(gateway.https_port, "helloworld.example.com", gateway.server_ca.path, client)
    assert gateway.httpbin.count == before
