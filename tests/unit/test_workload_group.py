"""WorkloadGroup: WorkloadEntries that name their group (istio.io/autoRegistrationGroup, the
annotation Istio puts on the entries it makes from a group) take what they leave out from it:
labels, annotations, ports, serviceAccount, locality. A group nothing names is a warning, a
name of no group an error."""

from __future__ import annotations

import textwrap

from meshwright.check.pipeline import validate_mesh
from meshwright.compile.build import compile_proxy
from meshwright.compile.proxy import find_proxy
from meshwright.model.load import load_paths

GROUP = """\
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: reviews, namespace: bookinfo}
spec:
  metadata:
    labels: {app: reviews, version: v1}
    annotations: {sidecar.istio.io/interceptionMode: REDIRECT}
  template:
    ports: {http: 9080}
    serviceAccount: bookinfo-reviews
    locality: eu-west/zone-a
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews.bookinfo.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client, namespace: bookinfo}
spec: {address: 10.0.0.1, labels: {app: client}}
"""

MEMBER = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: reviews-vm-1
  namespace: bookinfo
  annotations: {istio.io/autoRegistrationGroup: reviews}
spec: {address: 10.0.1.1}
"""


def validated(tmp_path, *texts: str):
    for index, text in enumerate(texts):
        (tmp_path / f"{index}.yaml").write_text(textwrap.dedent(text))
    return validate_mesh(load_paths([str(tmp_path)]))


def test_an_entry_of_a_group_takes_the_groups_labels_annotations_and_template(tmp_path):
    mesh, problems = validated(tmp_path, GROUP, MEMBER)
    assert problems == [] and mesh.warnings == []
    proxy = find_proxy(mesh, "reviews-vm-1.bookinfo")
    assert dict(proxy.labels) == {"app": "reviews", "version": "v1"}
    assert proxy.service_account == "bookinfo-reviews" and proxy.locality == "eu-west/zone-a" and proxy.captures
    # The ServiceEntry's selector picks it by the group's labels, at the template's port.
    config = compile_proxy(mesh, find_proxy(mesh, "client.bookinfo"))
    assignment = next(e for e in config.endpoints if e["cluster_name"] == "outbound|80||reviews.bookinfo.svc.cluster.local")
    endpoint = assignment["endpoints"][0]
    assert endpoint["locality"] == {"region": "eu-west", "zone": "zone-a"}
    assert endpoint["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] == {"address": "10.0.1.1", "port_value": 9080}


def test_what_the_entry_sets_itself_wins(tmp_path):
    mesh, problems = validated(tmp_path, GROUP, """\
    apiVersion: networking.istio.io/v1
    kind: WorkloadEntry
    metadata:
      name: reviews-vm-2
      namespace: bookinfo
      annotations: {istio.io/autoRegistrationGroup: reviews, sidecar.istio.io/interceptionMode: NONE}
    spec: {address: 10.0.1.2, labels: {version: v2}, serviceAccount: canary}
    """)
    assert problems == []
    proxy = find_proxy(mesh, "reviews-vm-2.bookinfo")
    assert dict(proxy.labels) == {"app": "reviews", "version": "v2"}
    assert proxy.service_account == "canary" and not proxy.captures


def test_an_entry_naming_no_group_of_its_namespace_is_an_error(tmp_path):
    _, problems = validated(tmp_path, GROUP, MEMBER.replace("autoRegistrationGroup: reviews", "autoRegistrationGroup: ratings"))
    assert [str(p).split(": ", 1)[1] for p in problems if not p.is_warning] == [
        "WorkloadEntry/bookinfo/reviews-vm-1: metadata.annotations.istio.io/autoRegistrationGroup: "
        "WorkloadGroup bookinfo/ratings does not exist (a WorkloadEntry's group is in its own namespace)"
    ]


def test_a_group_no_entry_names_is_a_warning_never_silence(tmp_path):
    mesh, problems = validated(tmp_path, GROUP)
    assert problems == []
    assert [p.message for p in mesh.warnings] == [
        "no WorkloadEntry names this group, so its template makes nothing: meshwright does not auto-register VMs; "
        "write each VM's WorkloadEntry (its address) with the annotation istio.io/autoRegistrationGroup: reviews"
    ]


def test_an_address_in_the_template_is_refused(tmp_path):
    _, problems = validated(tmp_path, GROUP.replace("ports: {http: 9080}", "address: 10.0.9.9"), MEMBER)
    refused = [str(p) for p in problems if "WorkloadGroup/bookinfo/reviews: spec.template.address" in str(p)]
    assert len(refused) == 1 and "unknown field 'address'" in refused[0] and "each WorkloadEntry of the group gives its own address" in refused[0]


def test_a_probe_is_refused_with_what_to_do_instead(tmp_path):
    _, problems = validated(tmp_path, GROUP.replace("  template:", "  probe: {httpGet: {path: /ready, port: 9080}}\n  template:"), MEMBER)
    assert [p.message for p in problems] == [
        "probe is not supported by meshwright yet (meshwright does not probe VM workloads: Envoy's outlier detection "
        "(a DestinationRule's outlierDetection) takes failing endpoints out)"
    ]
