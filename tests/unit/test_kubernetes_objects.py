"""Files that mix Kubernetes objects with Istio resources, as Istio's samples do (a Service, a
ServiceAccount and a Deployment beside the VirtualService): `meshwright validate` skips the
Kubernetes objects with a warning per kind and file, and the file still validates. What is
mesh config stays checked: unknown kinds of Istio's and meshwright's groups, the Kubernetes
Gateway API and Lists are errors."""

from __future__ import annotations

import pytest

from meshwright.cli import main
from tests.unit.validation_cases import BASE

# Istio's bookinfo shape: the Kubernetes objects of reviews-v1 around a VirtualService.
MIXED = """\
apiVersion: v1
kind: Service
metadata:
  name: reviews
  labels: {app: reviews, service: reviews}
spec:
  ports:
  - {port: 9080, name: http}
  selector: {app: reviews}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: bookinfo-reviews
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: reviews-v1
spec:
  replicas: 1
  template:
    spec:
      containers:
      - {name: reviews, image: docker.io/istio/examples-bookinfo-reviews-v1:1.20.1}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: reviews-v2
spec: {}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {key: value}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: ingress-cert}
spec: {}
"""


def line_of(text: str, line: str, occurrence: int = 1) -> int:
    """The number of the occurrence-th line of text that is line."""
    numbers = [number for number, found in enumerate(text.splitlines(), 1) if found == line]
    return numbers[occurrence - 1]


def run(argv, capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def mesh_dir(tmp_path):
    (tmp_path / "base.yaml").write_text(BASE)
    return tmp_path


def test_kubernetes_objects_are_skipped_with_a_warning_per_kind_and_file(mesh_dir, capsys):
    path = mesh_dir / "reviews.yaml"
    path.write_text(MIXED)
    code, out, err = run(["validate", "--envoy", "none", str(mesh_dir)], capsys)
    assert code == 0, err
    assert out.startswith("6 resources valid")  # the base's five and the VirtualService
    assert err.splitlines() == [
        f"{path}:{line_of(MIXED, 'kind: Service')}: Service/default/reviews: kind: warning: Service (v1) is a Kubernetes object, not mesh config: skipped",
        f"{path}:{line_of(MIXED, 'kind: ServiceAccount')}: ServiceAccount/default/bookinfo-reviews: kind: warning: ServiceAccount (v1) is a Kubernetes object, not mesh config: skipped",
        f"{path}:{line_of(MIXED, 'kind: Deployment')}: Deployment/default/reviews-v1: kind: warning: Deployment (apps/v1) is a Kubernetes object, not mesh config: skipped (and 1 more Deployment in this file)",
        f"{path}:{line_of(MIXED, 'kind: ConfigMap')}: ConfigMap/default/settings: kind: warning: ConfigMap (v1) is a Kubernetes object, not mesh config: skipped",
        f"{path}:{line_of(MIXED, 'kind: Certificate')}: Certificate/default/ingress-cert: kind: warning: Certificate (cert-manager.io/v1) is a Kubernetes object, not mesh config: skipped",
    ]


def test_the_istio_resources_of_a_mixed_file_are_still_checked(mesh_dir, capsys):
    path = mesh_dir / "reviews.yaml"
    path.write_text(MIXED.replace("subset: v1}", "subset: v9}"))
    code, _, err = run(["validate", "--envoy", "none", str(mesh_dir)], capsys)
    assert code == 1
    errors = [line for line in err.splitlines() if "warning:" not in line]
    assert errors[0].startswith(f"{path}:{line_of(MIXED, '    - destination: {host: reviews, subset: v1}')}: VirtualService/default/reviews: spec.http[0].route[0].destination.subset: ")
    assert len(errors) == 2 and errors[-1].endswith("found; nothing was written.")  # the one error and the summary


@pytest.mark.parametrize(("document", "message"), [
    ("apiVersion: networking.istio.io/v1\nkind: ProxyConfig\nmetadata: {name: p}\nspec: {}\n",
     "kind: unknown kind: 'ProxyConfig' is not valid"),
    ("apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: p}\nspec: {}\n",
     "kind: unknown kind: 'WasmPlugin' is not valid"),
    ("apiVersion: meshwright.io/v1alpha1\nkind: MeshConfg\nmetadata: {name: p}\nspec: {}\n",
     "kind: unknown kind: 'MeshConfg' is not valid: expected one of"),
    ("apiVersion: v1\nkind: Nope\nmetadata: {name: p}\nspec: {}\n",
     "kind: unknown kind: 'Nope' is not valid"),
    # An Istio kind under a Kubernetes group is a mistake in apiVersion, not a Kubernetes object.
    ("apiVersion: apps/v1\nkind: VirtualService\nmetadata: {name: p}\nspec: {hosts: [reviews], http: [{route: [{destination: {host: reviews}}]}]}\n",
     "apiVersion: 'apps/v1' is not an apiVersion of VirtualService"),
    ("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: p}\nspec: {}\n",
     "kind: HTTPRoute of the Kubernetes Gateway API is not supported by meshwright yet (route with an Istio Gateway and VirtualServices bound to it"),
    ("apiVersion: v1\nkind: List\nmetadata: {name: p}\nitems: []\n",
     "kind: a List is not read: write each of its items as a document of its own, separated by ---"),
], ids=["unknown Istio networking kind", "Istio kind meshwright lacks", "unknown meshwright kind", "unknown core kind",
        "Istio kind with a Kubernetes apiVersion", "Gateway API", "List"])
def test_mesh_config_meshwright_does_not_read_is_still_an_error(mesh_dir, capsys, document, message):
    path = mesh_dir / "other.yaml"
    path.write_text(document)
    code, _, err = run(["validate", "--envoy", "none", str(mesh_dir)], capsys)
    assert code == 1
    first = err.splitlines()[0]
    assert first.startswith(f"{path}:") and message in first, first
