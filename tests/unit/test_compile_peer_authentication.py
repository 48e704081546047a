"""PeerAuthentication as Istio applies it to a workload's inbound ports: the most specific
policy that sets a mode wins (port level > workload selector > namespace > mesh-wide in
istio-system > MeshConfig defaultMtlsMode), UNSET inherits; and what each mode makes of the
inbound listener (STRICT: mTLS only; PERMISSIVE: mTLS or plaintext; DISABLE: plaintext)."""

from __future__ import annotations

import pytest

from meshwright.compile.peer_authentication import mtls_mode
from tests.unit.security_mesh import compiled, listener_on, load_mesh

SERVER = ("default", (("app", "server"), ("version", "v1")))


def policy(name: str, namespace: str, mode: str | None = None, selector: dict | None = None, ports: dict | None = None) -> str:
    spec = {}
    if selector:
        spec["selector"] = {"matchLabels": selector}
    if mode:
        spec["mtls"] = {"mode": mode}
    if ports:
        spec["portLevelMtls"] = {port: {"mode": m} for port, m in ports.items()}
    return f"apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec: {spec}\n"


MESH_DEFAULT = "apiVersion: meshwright.io/v1alpha1\nkind: MeshConfig\nmetadata: {{name: mesh}}\nspec: {{certificates: {{}}, defaultMtlsMode: {}}}\n"

# (case, policies, MeshConfig defaultMtlsMode or None, expected mode on 8080, on 9000)
PRECEDENCE = [
    ("no policy: PERMISSIVE, Istio's default", [], None, "PERMISSIVE", "PERMISSIVE"),
    ("MeshConfig defaultMtlsMode", [], "DISABLE", "DISABLE", "DISABLE"),
    ("mesh-wide policy in istio-system", [policy("default", "istio-system", "STRICT")], None, "STRICT", "STRICT"),
    ("namespace over mesh-wide", [policy("default", "istio-system", "STRICT"), policy("default", "default", "PERMISSIVE")], None, "PERMISSIVE", "PERMISSIVE"),
    ("namespace UNSET inherits mesh-wide", [policy("default", "istio-system", "STRICT"), policy("default", "default", "UNSET")], None, "STRICT", "STRICT"),
    ("namespace without mtls inherits", [policy("default", "istio-system", "DISABLE"), policy("default", "default")], None, "DISABLE", "DISABLE"),
    ("workload over namespace", [policy("default", "default", "STRICT"), policy("server", "default", "DISABLE", {"app": "server"})], None, "DISABLE", "DISABLE"),
    ("workload UNSET inherits namespace", [policy("default", "default", "STRICT"), policy("server", "default", "UNSET", {"app": "server"})], None, "STRICT", "STRICT"),
    ("port level over workload", [policy("server", "default", "STRICT", {"app": "server"}, {9000: "DISABLE"})], None, "STRICT", "DISABLE"),
    ("port level over namespace when workload is UNSET", [policy("default", "default", "PERMISSIVE"), policy("server", "default", None, {"app": "server"}, {9000: "STRICT"})], None, "PERMISSIVE", "STRICT"),
    ("port level UNSET inherits workload", [policy("server", "default", "DISABLE", {"app": "server"}, {9000: "UNSET"})], None, "DISABLE", "DISABLE"),
    ("selector that does not match", [policy("default", "default", "STRICT"), policy("other", "default", "DISABLE", {"app": "client"})], None, "STRICT", "STRICT"),
    ("another namespace's policy", [policy("default", "shop", "STRICT")], None, "PERMISSIVE", "PERMISSIVE"),
    ("istio-system policy with a selector is not mesh-wide", [policy("server", "istio-system", "STRICT", {"app": "server"})], None, "PERMISSIVE", "PERMISSIVE"),
]


@pytest.mark.parametrize("case, policies, default, on_http, on_tcp", PRECEDENCE, ids=[row[0] for row in PRECEDENCE])
def test_precedence(tmp_path, case, policies, default, on_http, on_tcp):
    texts = list(policies)
    if default:
        texts.append(MESH_DEFAULT.format(default))
    mesh = load_mesh(tmp_path, *texts, identity=default is None)
    assert (mtls_mode(mesh, *SERVER, 8080), mtls_mode(mesh, *SERVER, 9000)) == (on_http, on_tcp)


def test_without_workload_identity_every_port_is_plaintext(tmp_path):
    """Meshes without MeshConfig certificates keep their plaintext listeners unchanged."""
    mesh = load_mesh(tmp_path, policy("default", "default", "PERMISSIVE"), identity=False)
    assert mtls_mode(mesh, *SERVER, 8080) == "DISABLE"
    http = listener_on(compiled(mesh, "server-1.default"), 8080)
    assert "transport_socket" not in http["filter_chains"][0] and "listener_filters" not in http


def test_strict_listener_requires_a_mesh_client_certificate(tmp_path):
    mesh = load_mesh(tmp_path, policy("default", "default", "STRICT"))
    http = listener_on(compiled(mesh, "server-1.default"), 8080)
    [chain] = http["filter_chains"]
    tls = chain["transport_socket"]["typed_config"]
    assert tls["@type"].endswith("DownstreamTlsContext") and tls["require_client_certificate"] is True
    assert tls["common_tls_context"]["tls_certificate_sds_secret_configs"][0]["name"] == "default"
    assert tls["common_tls_context"]["validation_context_sds_secret_config"]["name"] == "ROOTCA"
    assert "listener_filters" not in http  # one chain: nothing to choose


def test_permissive_listener_takes_mtls_and_plaintext(tmp_path):
    """PERMISSIVE: the TLS inspector sends TLS to the mTLS chain and the rest to a plaintext
    chain with the same filters (the TCP port too)."""
    mesh = load_mesh(tmp_path)
    config = compiled(mesh, "server-1.default")
    for port in (8080, 9000):
        listener = listener_on(config, port)
        assert [f["name"] for f in listener["listener_filters"]] == ["envoy.filters.listener.tls_inspector"]
        tls_chain, plain_chain = listener["filter_chains"]
        assert tls_chain["filter_chain_match"] == {"transport_protocol": "tls"}
        assert tls_chain["transport_socket"]["typed_config"]["require_client_certificate"] is True
        assert plain_chain["filter_chain_match"] == {"transport_protocol": "raw_buffer"} and "transport_socket" not in plain_chain
        assert tls_chain["filters"] == plain_chain["filters"]


def test_disable_on_one_port(tmp_path):
    mesh = load_mesh(tmp_path, policy("server", "default", "STRICT", {"app": "server"}, {9000: "DISABLE"}))
    config = compiled(mesh, "server-1.default")
    assert "transport_socket" in listener_on(config, 8080)["filter_chains"][0]
    [plain] = listener_on(config, 9000)["filter_chains"]
    assert "transport_socket" not in plain and "filter_chain_match" not in plain
