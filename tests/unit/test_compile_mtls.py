"""Client side of mesh mTLS, as Istio compiles it: auto mTLS (no DestinationRule tls) reaches
endpoints that are sidecars accepting mTLS with the proxy's certificate, verifying the
server's SPIFFE ID, and everything else in plaintext; DestinationRule ISTIO_MUTUAL forces it;
tls DISABLE turns it off. Certificates come through SDS files that delivery renders."""

from __future__ import annotations

import os

import yaml

from meshwright.check.envoy_proto import check_resource
from meshwright.compile.envoy_values import ADS
from meshwright.compile.secrets import secret_references
from meshwright.deliver.files import render_files
from tests.unit.security_mesh import cluster_named, compiled, load_mesh

HTTP_CLUSTER = "outbound|80||server.default.svc.cluster.local"
SERVER_IDS = ["spiffe://cluster.local/ns/default/sa/default", "spiffe://cluster.local/ns/default/sa/server"]


def rule(tls: str, subsets: str = "") -> str:
    return f"""
    apiVersion: networking.istio.io/v1
    kind: DestinationRule
    metadata: {{name: server, namespace: default}}
    spec:
      host: server
      trafficPolicy: {{tls: {tls}}}
      {subsets}
    """


def upstream_context(socket: dict) -> dict:
    assert socket["name"] == "envoy.transport_sockets.tls"
    return socket["typed_config"]


def endpoint_metadata(config, cluster_name: str) -> dict:
    assignment = next(a for a in config.endpoints if a["cluster_name"] == cluster_name)
    return {e["endpoint"]["address"]["socket_address"]["address"]: e.get("metadata") for group in assignment["endpoints"] for e in group["lb_endpoints"]}


def test_auto_mtls_to_sidecars_with_their_spiffe_ids(tmp_path):
    mesh = load_mesh(tmp_path)
    config = compiled(mesh, "client.default")
    cluster = cluster_named(config, HTTP_CLUSTER)
    istio, plain = cluster["transport_socket_matches"]
    assert istio["match"] == {"tlsMode": "istio"} and plain["match"] == {}
    assert plain["transport_socket"]["name"] == "envoy.transport_sockets.raw_buffer"
    context = upstream_context(istio["transport_socket"])
    assert context["sni"] == "outbound_.80_._.server.default.svc.cluster.local"
    common = context["common_tls_context"]
    assert common["tls_certificate_sds_secret_configs"] == [{"name": "default", "sds_config": ADS}]
    validation = common["combined_validation_context"]
    assert validation["validation_context_sds_secret_config"] == {"name": "ROOTCA", "sds_config": ADS}
    assert [m["matcher"]["exact"] for m in validation["default_validation_context"]["match_typed_subject_alt_names"]] == SERVER_IDS
    assert {m["san_type"] for m in validation["default_validation_context"]["match_typed_subject_alt_names"]} == {"URI"}
    tagged = {"filter_metadata": {"envoy.transport_socket_match": {"tlsMode": "istio"}}}
    assert endpoint_metadata(config, HTTP_CLUSTER) == {"10.0.0.1": tagged, "10.0.0.2": tagged}


def test_no_mtls_to_endpoints_without_a_sidecar(tmp_path):
    """An endpoint of a ServiceEntry (no WorkloadEntry, so no sidecar) is reached in plaintext."""
    mesh = load_mesh(tmp_path)
    config = compiled(mesh, "client.default")
    cluster = cluster_named(config, "outbound|80||legacy.default.svc.cluster.local")
    assert "transport_socket_matches" not in cluster and "transport_socket" not in cluster
    assert endpoint_metadata(config, "outbound|80||legacy.default.svc.cluster.local") == {"10.0.0.9": None}


def test_no_mtls_to_a_sidecar_whose_port_is_disabled(tmp_path):
    """Istio's auto mTLS looks at the server's PeerAuthentication: DISABLE on server-1's port
    leaves that endpoint in plaintext while server-2 still gets mTLS."""
    mesh = load_mesh(tmp_path, """
    apiVersion: security.istio.io/v1
    kind: PeerAuthentication
    metadata: {name: server-1, namespace: default}
    spec:
      selector: {matchLabels: {version: v1}}
      portLevelMtls: {8080: {mode: DISABLE}}
    """)
    config = compiled(mesh, "client.default")
    metadata = endpoint_metadata(config, HTTP_CLUSTER)
    assert metadata["10.0.0.1"] is None and metadata["10.0.0.2"] is not None


def test_istio_mutual_sends_every_endpoint_mtls_with_the_subset_sni(tmp_path):
    mesh = load_mesh(tmp_path, rule("{mode: ISTIO_MUTUAL}", "subsets: [{name: v1, labels: {version: v1}}]"))
    config = compiled(mesh, "client.default")
    cluster = cluster_named(config, "outbound|80|v1|server.default.svc.cluster.local")
    assert "transport_socket_matches" not in cluster
    context = upstream_context(cluster["transport_socket"])
    assert context["sni"] == "outbound_.80_.v1_.server.default.svc.cluster.local"
    assert context["common_tls_context"]["alpn_protocols"] == ["istio-peer-exchange", "istio"]
    assert endpoint_metadata(config, "outbound|80|v1|server.default.svc.cluster.local") == {"10.0.0.1": None}


def test_istio_mutual_with_given_subject_alt_names_and_sni(tmp_path):
    mesh = load_mesh(tmp_path, rule("{mode: ISTIO_MUTUAL, sni: server.internal, subjectAltNames: ['spiffe://cluster.local/ns/default/sa/server']}"))
    context = upstream_context(cluster_named(compiled(mesh, "client.default"), HTTP_CLUSTER)["transport_socket"])
    assert context["sni"] == "server.internal"
    names = context["common_tls_context"]["combined_validation_context"]["default_validation_context"]["match_typed_subject_alt_names"]
    assert names == [{"san_type": "URI", "matcher": {"exact": "spiffe://cluster.local/ns/default/sa/server"}}]


def test_tls_disable_turns_auto_mtls_off(tmp_path):
    mesh = load_mesh(tmp_path, rule("{mode: DISABLE}"))
    config = compiled(mesh, "client.default")
    cluster = cluster_named(config, HTTP_CLUSTER)
    assert "transport_socket_matches" not in cluster and "transport_socket" not in cluster
    assert set(endpoint_metadata(config, HTTP_CLUSTER).values()) == {None}


def test_without_workload_identity_clusters_stay_plaintext(tmp_path):
    mesh = load_mesh(tmp_path, identity=False)
    config = compiled(mesh, "client.default")
    cluster = cluster_named(config, HTTP_CLUSTER)
    assert "transport_socket_matches" not in cluster
    assert render_files(config, mesh.settings, "/etc/meshwright/proxy").keys().isdisjoint({"sds-default.yaml", "sds-rootca.yaml"})


def test_secrets_are_files_in_the_certs_directory_next_to_the_config(tmp_path):
    """sds-default.yaml and sds-rootca.yaml name cert-chain.pem, key.pem and root-cert.pem in
    <config dir>/../certs and watch that directory; every TLS context reads them from there."""
    mesh = load_mesh(tmp_path)
    files = render_files(compiled(mesh, "client.default"), mesh.settings, "/etc/meshwright/proxy")
    default = yaml.safe_load(files["sds-default.yaml"])["resources"][0]
    root = yaml.safe_load(files["sds-rootca.yaml"])["resources"][0]
    assert default["name"] == "default" and root["name"] == "ROOTCA"
    assert default["tls_certificate"] == {
        "certificate_chain": {"filename": "/etc/meshwright/certs/cert-chain.pem"},
        "private_key": {"filename": "/etc/meshwright/certs/key.pem"},
        "watched_directory": {"path": "/etc/meshwright/certs"},
    }
    assert root["validation_context"] == {"trusted_ca": {"filename": "/etc/meshwright/certs/root-cert.pem"}, "watched_directory": {"path": "/etc/meshwright/certs"}}
    for secret in (default, root):
        assert check_resource("envoy.extensions.transport_sockets.tls.v3.Secret", {k: v for k, v in secret.items() if k != "@type"}) is None
    references = secret_references(yaml.safe_load(files["cds.yaml"]))
    assert references and {r["name"]: r["sds_config"]["path_config_source"]["path"] for r in references} == {
        "default": "/etc/meshwright/proxy/sds-default.yaml", "ROOTCA": "/etc/meshwright/proxy/sds-rootca.yaml",
    }


def test_certificates_dir_may_be_absolute(tmp_path):
    mesh = load_mesh(tmp_path, "apiVersion: meshwright.io/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\nspec: {certificates: {dir: /var/run/secrets/mesh}}\n", identity=False)
    files = render_files(compiled(mesh, "client.default"), mesh.settings, "/etc/meshwright/proxy")
    assert os.path.dirname(yaml.safe_load(files["sds-default.yaml"])["resources"][0]["tls_certificate"]["private_key"]["filename"]) == "/var/run/secrets/mesh"
