"""Protocol names are read in any case, as Istio's protocol.Parse does: `tcp`, `http2`,
`grpc`, `https` in ServiceEntry ports, Gateway servers and Sidecar listeners mean what
their upper-case names mean."""

from __future__ import annotations

import os
import re

import pytest

from meshwright.check.pipeline import validate_mesh
from meshwright.cli import main
from meshwright.model.load import load_paths
from tests.golden.golden import CASES_DIR, case_names, render_all
from tests.unit.validation_cases import BASE

PROTOCOL = re.compile(r"(protocol: )(HTTP2|HTTPS|HTTP|GRPC|TCP|TLS)\b")


def lower_case_protocols(text: str) -> str:
    """Every `protocol: NAME` of a mesh file in lower case but the first letter of every
    other one ("Http2"), so both spellings are exercised."""
    count = iter(range(10**6))
    return PROTOCOL.sub(lambda m: m.group(1) + (m.group(2).lower() if next(count) % 2 == 0 else m.group(2).capitalize()), text)


@pytest.mark.parametrize("case", case_names())
def test_every_golden_case_renders_the_same_with_protocol_names_in_other_cases(case, tmp_path):
    with open(os.path.join(CASES_DIR, case, "mesh.yaml")) as handle:
        text = handle.read()
    changed = lower_case_protocols(text)
    assert changed != text, "the case names a protocol"
    (tmp_path / "upper.yaml").write_text(text)
    (tmp_path / "lower.yaml").write_text(changed)
    upper = render_all([str(tmp_path / "upper.yaml")], str(tmp_path / "upper"))
    lower = render_all([str(tmp_path / "lower.yaml")], str(tmp_path / "lower"))
    assert lower == upper


def test_a_wrong_protocol_name_is_reported_as_written(tmp_path, capsys):
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "case.yaml").write_text(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: cache, namespace: default}\n"
        "spec:\n  hosts: [cache.default.svc.cluster.local]\n  ports: [{number: 6379, name: redis, protocol: tpc}]\n"
        "  endpoints: [{address: 10.0.0.9}]\n"
    )
    assert main(["validate", "--envoy", "none", str(tmp_path)]) == 1
    first = capsys.readouterr().err.splitlines()[0]
    assert first == (
        f"{tmp_path / 'case.yaml'}:6: ServiceEntry/default/cache: spec.ports[0].protocol: "
        "'tpc' is not valid: expected one of HTTP, HTTP2, GRPC, TCP, HTTPS, TLS (in any case) (did you mean TCP?)"
    )


SERVICE_ENTRY = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: external, namespace: default}}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{{number: 443, name: tls, protocol: {protocol}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: default}}
spec:
  servers:
  - port: {{number: 8443, name: tls, protocol: {protocol}}}
    hosts: [api.example.com]
    tls: {{mode: SIMPLE, serverCertificate: /etc/certs/edge.pem, privateKey: /etc/certs/edge-key.pem}}
"""


@pytest.mark.parametrize("protocol", ["HTTPS", "TLS"])
def test_tls_protocol_names_get_the_same_verdict_in_any_case(tmp_path, protocol):
    """`https` and `tls` are what HTTPS and TLS are, accepted or refused alike (the message
    quoting the name as written)."""
    verdicts = {}
    for written in (protocol, protocol.lower(), protocol.capitalize()):
        folder = tmp_path / written
        folder.mkdir()
        (folder / "mesh.yaml").write_text(SERVICE_ENTRY.format(protocol=written))
        _, problems = validate_mesh(load_paths([str(folder)]))
        verdicts[written] = [(p.line, p.resource, p.path, p.message.replace(repr(written), repr(protocol))) for p in problems]
    assert verdicts[protocol.lower()] == verdicts[protocol] == verdicts[protocol.capitalize()]
