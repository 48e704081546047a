"""`meshwright status` and `meshwright proxy-config` against in-process control planes
(serve/status.py, serve/proxy_config_view.py): what an instance reports of a stream (its
instance, states, Envoy version), the merged view of several instances, the diff against a
config_dump, bootstraps that name several instances, and malformed xDS requests refused with
a log line while the server keeps serving (real Envoy: tests/integration/test_control_plane_ha.py)."""

from __future__ import annotations

import contextlib
import datetime
import io
import json

import grpc
import yaml
from envoy.type.v3 import semantic_version_pb2

from meshwright.cli import main
from meshwright.compile.envoy_values import CLUSTER
from meshwright.compile.xds_bootstrap import XDS_CLUSTER, XdsServer
from meshwright.serve.bootstrap import xds_bootstrap
from meshwright.serve.proxy_config_view import ENDPOINT_DEFAULTS, config_diff, envoy_resources, without_defaults
from meshwright.serve.status import MergedStatus, status_table
from tests.harness import free_port
from tests.unit.test_serve_ads import Client, Lab, subscribe_all, wait_for

NOW = datetime.datetime(2026, 12, 7, 12, 0, tzinfo=datetime.timezone.utc)


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


class StatusLab(Lab):
    """test_serve_ads's Lab with its status endpoint on a free port."""

    def __init__(self, tmp_path):
        super().__init__(tmp_path)
        from meshwright.serve.server import status_server
        from meshwright.serve.status import StatusEndpoint
        self.endpoint = StatusEndpoint(self.plane, f"127.0.0.1:{self.running.grpc_port}")
        self.http = status_server(self.endpoint, "127.0.0.1", free_port())
        self.status_port = self.http.server_address[1]

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        super().close()


def envoy_client(lab: Lab, version=(1, 40, 0)) -> Client:
    client = Client(lab)
    client.node.user_agent_name = "envoy"
    client.node.user_agent_build_version.version.CopyFrom(
        semantic_version_pb2.SemanticVersion(major_number=version[0], minor_number=version[1], patch=version[2]))
    return client


def test_status_shows_the_instance_states_and_envoy_version_of_a_stream(tmp_path):
    lab = StatusLab(tmp_path)
    try:
        client = envoy_client(lab)
        subscribe_all(client)
        code, out, _ = run(["status", "--server", f"127.0.0.1:{lab.status_port}"])
        assert code == 0
        row = [line.split() for line in out.splitlines() if line.startswith("client.default")]
        assert row == [["client.default", f"127.0.0.1:{lab.running.grpc_port}", "SYNCED", "SYNCED", "SYNCED", "SYNCED", "-", "-", "1.40.0"]]
        code, out, _ = run(["status", "--server", f"127.0.0.1:{lab.status_port}", "--json"])
        merged = json.loads(out)
        assert merged["unreachable"] == [] and [i["instance"] for i in merged["instances"]] == [f"127.0.0.1:{lab.running.grpc_port}"]
        client.close()
    finally:
        lab.close()


def test_status_of_two_instances_when_one_is_down_names_it_and_shows_the_other(tmp_path):
    lab = StatusLab(tmp_path)
    down = free_port()
    try:
        code, out, _ = run(["status", "--server", f"127.0.0.1:{down},127.0.0.1:{lab.status_port}"])
        assert code == 0
        assert f"instance UNREACHABLE: 127.0.0.1:{down}: no status from meshwright serve there" in out
        assert f"instance 127.0.0.1:{lab.running.grpc_port}: mesh generation 1" in out.splitlines()
        code, _, err = run(["status", "--server", f"127.0.0.1:{down}", "--server", f"127.0.0.1:{down}"])
        assert code == 2 and err.startswith(f"error: --server 127.0.0.1:{down}: no status from meshwright serve there")
    finally:
        lab.close()


def test_proxy_config_reads_what_the_instance_sends(tmp_path):
    lab = StatusLab(tmp_path)
    try:
        code, out, _ = run(["proxy-config", "client.default", "listeners", "--server", f"127.0.0.1:{lab.status_port}"])
        assert code == 0 and out.splitlines()[0].split() == ["NAME", "ADDRESS", "FILTER", "CHAINS", "VERSION"]
        code, out, _ = run(["proxy-config", "client.default", "clusters", "--server", f"127.0.0.1:{lab.status_port}", "-o", "yaml"])
        names = {cluster["name"] for cluster in yaml.safe_load(out)}
        assert code == 0 and "outbound|9080||reviews.default.svc.cluster.local" in names
        code, _, err = run(["proxy-config", "client.default", "clusters", "--server", f"127.0.0.1:{lab.status_port}", "--diff",
                            "--admin", f"127.0.0.1:{free_port()}"])
        assert code == 2 and "no config_dump from the Envoy of client.default there" in err
    finally:
        lab.close()


def report(instance: str, streams: dict, certificates: dict | None = None, rejection=None) -> dict:
    return {"instance": instance, "generation": 3, "rejection": rejection, "refusals": ["ipv4:127.0.0.1:5: unknown node id 'x'"],
            "certificates": certificates or {}, "proxies": [{"proxy": name, "streams": s} for name, s in streams.items()]}


def stream(instance: str, states: dict, error: str = "", expires: str | None = None) -> dict:
    return {"instance": instance, "envoy_version": "1.40.0", "client_certificate_expires": expires,
            "types": {kind: {"state": state, "error": error if state == "NACK" else ""} for kind, state in states.items()}}


def test_merged_status_puts_each_proxy_on_its_instance_with_the_latest_certificate():
    a = report("10.0.0.1:15012", {"client.default": [stream("10.0.0.1:15012", {"clusters": "NACK", "listeners": "SYNCED"}, "bad timeout",
                                                                  expires="2026-12-07T13:00:00+00:00")], "server.default": []},
               rejection={"problems": ["mesh.yaml:3: VirtualService/default/r: weights sum to 0"]})
    b = report("10.0.0.2:15012", {"client.default": [], "server.default": []},
               certificates={"client.default": "2026-12-08T12:00:00+00:00", "server.default": "2026-12-07T11:00:00+00:00"})
    merged = MergedStatus([a, b], ["10.0.0.3:15014: no status from meshwright serve there: refused"])
    lines = status_table(merged, NOW)
    assert lines[1].split() == ["client.default", "10.0.0.1:15012", "NACK", "SYNCED", "-", "-", "-", "2026-12-08T12:00:00Z", "(24h00m)", "1.40.0"]
    assert lines[2].split() == ["server.default", "-", "-", "-", "-", "-", "-", "2026-12-07T11:00:00Z", "(EXPIRED)", "-"]
    assert "instance 10.0.0.1:15012: mesh generation 3" in lines and "    mesh.yaml:3: VirtualService/default/r: weights sum to 0" in lines
    assert "client.default CDS NACK (10.0.0.1:15012): bad timeout" in lines
    assert lines[-1] == "instance UNREACHABLE: 10.0.0.3:15014: no status from meshwright serve there: refused"
    assert merged.as_json()["proxies"][0]["certificate_expires"] == "2026-12-08T12:00:00+00:00"


CLUSTER_A = {"name": "a", "type": "EDS", "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}}, "connect_timeout": "5s"}


def test_config_diff_names_what_differs_and_what_only_one_side_holds():
    held = {**CLUSTER_A, "connect_timeout": "10s"}
    lines, differ = config_diff("clusters", {"a": CLUSTER_A, "b": {"name": "b", "type": "STATIC"}},
                                {"a": held, "c": {"name": "c", "type": "STATIC"}}, "envoy 127.0.0.1:15000")
    assert differ
    assert lines[0] == "clusters: 0 the same, 1 differ, 1 only sent by the control plane, 1 only in Envoy"
    assert "--- control plane: clusters a" in lines and "+++ envoy 127.0.0.1:15000: clusters a" in lines
    assert '-  "connect_timeout": "5s",' in lines and '+  "connect_timeout": "10s",' in lines
    assert lines[-2:] == ["only sent by the control plane (Envoy does not hold it): clusters b",
                          "only in Envoy (the control plane does not send it): clusters c"]
    same, differ = config_diff("clusters", {"a": CLUSTER_A}, {"a": {**CLUSTER_A, "connect_timeout": "5.000s"}}, "envoy")
    assert (same, differ) == (["clusters: 1 the same, 0 differ, 0 only sent by the control plane, 0 only in Envoy"], False)


def test_envoy_defaults_in_its_endpoint_dump_are_no_difference_but_a_changed_weight_is():
    sent = {"cluster_name": "a", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "10.0.0.1", "port_value": 80}}},
                                                                  "load_balancing_weight": 1}]}]}
    held = json.loads(json.dumps(sent))
    held["policy"] = {"overprovisioning_factor": 140}
    held["endpoints"][0].update(locality={}, load_balancing_weight=0)
    held["endpoints"][0]["lb_endpoints"][0].update(health_status="HEALTHY")
    assert without_defaults(held, sent, ENDPOINT_DEFAULTS) == sent
    dump = {"configs": [{"dynamic_endpoint_configs": [{"endpoint_config": held}]}]}
    assert config_diff("endpoints", {"a": sent}, envoy_resources(dump, "endpoints"), "envoy")[1] is False
    held["endpoints"][0]["lb_endpoints"][0]["load_balancing_weight"] = 5
    assert config_diff("endpoints", {"a": sent}, envoy_resources(dump, "endpoints"), "envoy")[1] is True


def test_a_bootstrap_names_every_instance_and_reconnects_quickly(tmp_path):
    lab = Lab(tmp_path)
    try:
        bootstrap = xds_bootstrap(lab.plane.estate.mesh, "client.default",
                                  XdsServer((("10.0.0.1", 15012), ("10.0.0.2", 15012), ("10.0.0.3", 15013)), "/etc/meshwright/certs"))
        cluster = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == XDS_CLUSTER][0]
        addresses = [e["endpoint"]["address"]["socket_address"] for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]]
        assert [(a["address"], a["port_value"]) for a in addresses] == [("10.0.0.1", 15012), ("10.0.0.2", 15012), ("10.0.0.3", 15013)]
        retry = bootstrap["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]["retry_policy"]
        assert retry == {"retry_back_off": {"base_interval": "0.1s", "max_interval": "2s"}}
    finally:
        lab.close()


def test_a_malformed_xds_request_is_refused_with_a_log_line_and_others_are_served(tmp_path):
    """Bytes that are no DiscoveryRequest (first request, and later on a good stream): one log
    line each, the stream ends (INTERNAL), no traceback; a well-formed stream is served meanwhile."""
    lab = Lab(tmp_path)
    try:
        raw = lab.channel.stream_stream("/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
                                        request_serializer=lambda b: b, response_deserializer=lambda b: b)
        try:
            list(raw(iter([b"\xff\xff\xff not protobuf"]), timeout=3))
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.INTERNAL
        good = Client(lab)
        got = subscribe_all(good)
        assert got[CLUSTER].resources
        line = [l for l in lab.log.getvalue().splitlines() if l.startswith("refused a malformed xDS request")]
        assert line == ["refused a malformed xDS request (16 bytes, not a DiscoveryRequest): Error parsing message with type "
                        "'envoy.service.discovery.v3.DiscoveryRequest': Wire format was corrupt"]
        assert "Traceback" not in lab.log.getvalue()
        delta = lab.channel.stream_stream("/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources",
                                          request_serializer=lambda b: b, response_deserializer=lambda b: b)
        try:
            list(delta(iter([b"\x0a\xff"]), timeout=3))
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.INTERNAL
        wait_for(lambda: "not a DeltaDiscoveryRequest" in lab.log.getvalue())
        lab.apply(timeout="7s")  # an edit still reaches the good stream
        assert good.receive().type_url
        good.close()
    finally:
        lab.close()


def test_a_secret_envoy_loaded_is_the_same_as_its_file_and_a_stale_one_is_told_in_words(tmp_path):
    """Envoy dumps the files a secret names as their content (its key redacted): the same when
    the file holds what Envoy loaded; after a renewal Envoy missed, the serials and expiries differ."""
    import base64

    from meshwright.pki import ca
    from meshwright.pki.ca import certificate_pem
    old, new = (certificate_pem(ca.make_root("cluster.local", common_name=name).certificate) for name in ("old", "new"))
    chain, key = tmp_path / "cert-chain.pem", tmp_path / "key.pem"
    chain.write_bytes(old)
    key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nKEYBYTES123\n-----END PRIVATE KEY-----\n")
    sent = {"name": "default", "tls_certificate": {"certificate_chain": {"filename": str(chain)}, "private_key": {"filename": str(key)}}}
    held = {"name": "default", "tls_certificate": {"certificate_chain": {"inline_bytes": base64.b64encode(old).decode()},
                                                   "private_key": {"inline_bytes": base64.b64encode(b"[redacted]").decode()}}}
    assert config_diff("secrets", {"default": sent}, {"default": held}, "envoy")[1] is False
    chain.write_bytes(new)
    lines, differ = config_diff("secrets", {"default": sent}, {"default": held}, "envoy")
    text = "\n".join(lines)
    assert differ and "KEYBYTES123" not in text and "PRIVATE KEY" not in text
    assert '+      "loaded": "certificate serial ' in text and f'+      "file": "{chain}: certificate serial ' in text


def test_the_secrets_the_bootstrap_reads_from_files_are_not_counted_as_only_in_envoy():
    """Envoy's dump holds the xds-grpc cluster's secrets (file-default, file-rootca, from the files
    beside the certificate) beside what the control plane sends: a mesh without workload identity
    sends no secret, and its proxy's Envoy holds none of the control plane's."""
    def entry(name: str) -> dict:
        return {"name": name, "version_info": "", "secret": {"name": name, "validation_context": {"trusted_ca": {"filename": "/c/root-cert.pem"}}}}
    dump = {"configs": [{"@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
                         "dynamic_active_secrets": [entry("file-default"), entry("file-rootca")]}]}
    assert envoy_resources(dump, "secrets") == {}
    assert config_diff("secrets", {}, envoy_resources(dump, "secrets"), "envoy")[1] is False
    dump["configs"][0]["dynamic_active_secrets"].append(entry("ROOTCA"))
    assert list(envoy_resources(dump, "secrets")) == ["ROOTCA"]


def test_delta_status_is_synced_again_when_a_nacked_change_is_reverted(tmp_path):
    """Delta: the proxy NACKs an endpoint change, which is then reverted: it holds what is
    current again (nothing is sent), and status says SYNCED, not NACK forever."""
    from google.rpc import status_pb2

    from meshwright.compile.envoy_values import CLUSTER_LOAD_ASSIGNMENT
    from tests.unit.test_serve_ads import states
    lab = Lab(tmp_path)
    try:
        client = Client(lab, delta=True)
        client.send(type_url=CLUSTER, delta=True)
        clusters = client.receive()
        client.send(type_url=CLUSTER, response_nonce=clusters.nonce, delta=True)
        client.send(type_url=CLUSTER_LOAD_ASSIGNMENT, resource_names_subscribe=["outbound|9080||reviews.default.svc.cluster.local"])
        endpoints = client.receive()
        client.send(type_url=CLUSTER_LOAD_ASSIGNMENT, response_nonce=endpoints.nonce, delta=True)
        lab.apply(address="10.0.0.3")
        update = client.receive()
        client.send(type_url=CLUSTER_LOAD_ASSIGNMENT, response_nonce=update.nonce, delta=True,
                    error_detail=status_pb2.Status(code=3, message="endpoint rejected"))
        wait_for(lambda: states(lab).get("endpoints") == "NACK")
        lab.apply(address="10.0.0.1")  # back to what the proxy holds
        wait_for(lambda: states(lab) == {"clusters": "SYNCED", "endpoints": "SYNCED"})
        assert client.nothing()
        client.close()
    finally:
        lab.close()


def test_an_instance_is_named_by_its_xds_address_or_by_its_host_on_every_interface():
    import socket

    from meshwright.serve.server import instance_name
    assert instance_name("10.0.0.2", 15012) == "10.0.0.2:15012"
    assert instance_name("::1", 15012) == "[::1]:15012"
    assert instance_name("0.0.0.0", 15012) == instance_name("::", 15012) == f"{socket.gethostname()}:15012"
