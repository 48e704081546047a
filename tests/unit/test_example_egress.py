"""examples/egress/mesh.yaml, which docs/traffic.md points users to, stays valid and compiles
to what its comments promise: passthrough by SNI and TLS origination on port 80."""

from __future__ import annotations

import os

from meshwright.check.pipeline import validate_mesh
from meshwright.compile.build import compile_proxy
from meshwright.compile.proxy import find_proxy
from meshwright.model.load import load_paths

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "egress", "mesh.yaml")


def test_egress_example_passes_tls_through_by_sni_and_originates_on_port_80():
    mesh, problems = validate_mesh(load_paths([EXAMPLE]))
    assert not problems, "\n".join(str(p) for p in problems)
    config = compile_proxy(mesh, find_proxy(mesh, "sleep.default"))
    tls_listener = next(l for l in config.listeners if l["name"] == "127.0.0.1_9443")
    names = [chain["filter_chain_match"]["server_names"] for chain in tls_listener["filter_chains"]]
    assert names == [["*.wikipedia.org"], ["api.github.com"]]
    assert [f["name"] for f in tls_listener["listener_filters"]] == ["envoy.filters.listener.tls_inspector"]
    origination = next(c for c in config.clusters if c["name"] == "outbound|80||edition.cnn.com")
    context = origination["transport_socket"]["typed_config"]
    assert context["sni"] == "edition.cnn.com"
    assert context["common_tls_context"]["validation_context"]["trusted_ca"] == {"filename": "/etc/ssl/certs/ca-certificates.crt"}
    endpoint = origination["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert endpoint == {"address": "edition.cnn.com", "port_value": 443}
