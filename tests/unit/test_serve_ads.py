"""meshwright serve's ADS protocol, driven by an in-process gRPC client that speaks as Envoy
does (the real-Envoy tests are tests/integration/test_control_plane.py): subscriptions,
content-hash versions, nonces, ACK and NACK, push order, endpoint-only pushes, delta xDS,
refused node ids and identities, and the watched folder's debounce."""

from __future__ import annotations

import io
import logging
import os
import queue
import threading
import time

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2
from google.rpc import status_pb2

from meshwright.check.envoy_proto import check_resource
from meshwright.compile.envoy_values import CLUSTER, CLUSTER_LOAD_ASSIGNMENT, LISTENER, ROUTE_CONFIGURATION
from meshwright.compile.xds_bootstrap import XDS_CLUSTER, XdsServer
from meshwright.pki import ca, csr, workload
from meshwright.pki.ca import certificate_pem
from meshwright.serve import server as xds_server
from meshwright.serve.bootstrap import xds_bootstrap
from meshwright.serve.identity import Refused, admitted_proxy
from meshwright.serve.plane import ControlPlane
from meshwright.serve.source import MeshFolder, load_valid
from tests.harness import free_port

MESH = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: reviews}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: reviews-v1, namespace: default}}
spec: {{address: {address}, labels: {{app: reviews, version: v1}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: client, namespace: default}}
spec: {{address: 10.0.0.9, labels: {{app: client}}, serviceAccount: client}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews}}
    timeout: {timeout}
"""
NODE = "sidecar~10.0.0.9~client.default~default.svc.cluster.local"


class Lab:
    def __init__(self, tmp_path):
        self.mesh_dir = tmp_path / "mesh"
        self.mesh_dir.mkdir()
        self.write()
        mesh, problems = load_valid([str(self.mesh_dir)])
        assert problems == []
        self.log = io.StringIO()
        self.handler = logging.StreamHandler(self.log)
        logging.getLogger("meshwright.serve").addHandler(self.handler)
        logging.getLogger("meshwright.serve").setLevel(logging.INFO)
        # No watch: each test applies its edits itself, and sees exactly what they push.
        self.running = xds_server.start(mesh, [str(self.mesh_dir)], ("127.0.0.1", free_port()), None, None, watch=False)
        self.plane = self.running.plane
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.running.grpc_port}")
        self.stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)

    def write(self, address: str = "10.0.0.1", timeout: str = "5s", extra: str = "") -> None:
        path = self.mesh_dir / "mesh.yaml"
        (self.mesh_dir / ".tmp").write_text(MESH.format(address=address, timeout=timeout) + extra)
        os.replace(self.mesh_dir / ".tmp", path)

    def apply(self, **edit) -> dict:
        self.write(**edit)
        mesh, problems = load_valid([str(self.mesh_dir)])
        assert problems == []
        return self.plane.apply(mesh)

    def close(self) -> None:
        self.channel.close()
        self.running.stop()
        logging.getLogger("meshwright.serve").removeHandler(self.handler)


class Client:
    """One ADS stream, as Envoy drives it: send requests, read responses (bounded waits)."""

    def __init__(self, lab: Lab, delta: bool = False, node: str = NODE):
        self.node = base_pb2.Node(id=node, cluster="client.default")
        self.requests: queue.Queue = queue.Queue()
        self.responses: queue.Queue = queue.Queue()
        call = lab.stub.DeltaAggregatedResources if delta else lab.stub.StreamAggregatedResources
        self.call = call(iter(self.requests.get, None))
        self.first = True
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for response in self.call:
                self.responses.put(response)
        except grpc.RpcError as error:
            self.responses.put(error)

    def send(self, **fields) -> None:
        delta = "resource_names_subscribe" in fields or "initial_resource_versions" in fields or fields.pop("delta", False)
        message = discovery_pb2.DeltaDiscoveryRequest(**fields) if delta else discovery_pb2.DiscoveryRequest(**fields)
        if self.first:
            message.node.CopyFrom(self.node)
            self.first = False
        self.requests.put(message)

    def receive(self, timeout: float = 3.0):
        return self.responses.get(timeout=timeout)

    def nothing(self, wait: float = 0.3) -> bool:
        try:
            self.responses.get(timeout=wait)
        except queue.Empty:
            return True
        return False

    def close(self) -> None:
        self.requests.put(None)


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path)
    yield lab
    lab.close()


def names_of(response) -> list[str]:
    return [_unpacked(any_).name if hasattr(_unpacked(any_), "name") and _unpacked(any_).name else _unpacked(any_).cluster_name
            for any_ in response.resources]


def _unpacked(any_):
    from meshwright.check.envoy_proto import message_class
    message = message_class(any_.type_url.split("/", 1)[1])()
    any_.Unpack(message)
    return message


def subscribe_all(client: Client) -> dict:
    """CDS, EDS for its clusters, LDS, RDS for its routes, ACKing each: the responses by type."""
    got = {}
    client.send(type_url=CLUSTER)
    got[CLUSTER] = client.receive()
    client.send(type_url=CLUSTER, version_info=got[CLUSTER].version_info, response_nonce=got[CLUSTER].nonce)
    eds = [n for n in names_of(got[CLUSTER]) if n.startswith("outbound|")]
    client.send(type_url=CLUSTER_LOAD_ASSIGNMENT, resource_names=eds)
    got[CLUSTER_LOAD_ASSIGNMENT] = client.receive()
    client.send(type_url=CLUSTER_LOAD_ASSIGNMENT, resource_names=eds, version_info=got[CLUSTER_LOAD_ASSIGNMENT].version_info,
                response_nonce=got[CLUSTER_LOAD_ASSIGNMENT].nonce)
    client.send(type_url=LISTENER)
    got[LISTENER] = client.receive()
    client.send(type_url=LISTENER, version_info=got[LISTENER].version_info, response_nonce=got[LISTENER].nonce)
    routes = ["15001"]
    client.send(type_url=ROUTE_CONFIGURATION, resource_names=routes)
    got[ROUTE_CONFIGURATION] = client.receive()
    client.send(type_url=ROUTE_CONFIGURATION, resource_names=routes, version_info=got[ROUTE_CONFIGURATION].version_info,
                response_nonce=got[ROUTE_CONFIGURATION].nonce)
    return got


def states(lab: Lab) -> dict:
    stream = [p for p in lab.plane.status()["proxies"] if p["proxy"] == "client.default"][0]["streams"][0]
    return {kind: t["state"] for kind, t in stream["types"].items()}


def wait_for(condition, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_state_of_the_world_serves_every_type_with_content_hash_versions(lab):
    """Each type answers with the proxy's resources; the same config gets the same version
    on another stream; ACKs make status SYNCED."""
    client = Client(lab)
    got = subscribe_all(client)
    assert "outbound|9080||reviews.default.svc.cluster.local" in names_of(got[CLUSTER])
    assert names_of(got[CLUSTER_LOAD_ASSIGNMENT]) == ["outbound|9080||reviews.default.svc.cluster.local"]
    assert names_of(got[ROUTE_CONFIGURATION]) == ["15001"]
    assert names_of(got[LISTENER]) == ["127.0.0.1_15001"]
    wait_for(lambda: set(states(lab).values()) == {"SYNCED"})

    again = Client(lab)
    again.send(type_url=CLUSTER)
    assert again.receive().version_info == got[CLUSTER].version_info
    client.close(), again.close()


def test_nack_keeps_the_last_good_version_and_is_reported(lab):
    """A NACK (error_detail with the response's nonce) is kept for status and logged; the
    server does not resend the rejected config, and the next good edit is pushed."""
    client = Client(lab)
    got = subscribe_all(client)
    wait_for(lambda: set(states(lab).values()) == {"SYNCED"})
    lab.apply(timeout="7s")
    routes = client.receive()
    assert routes.type_url == ROUTE_CONFIGURATION and routes.version_info != got[ROUTE_CONFIGURATION].version_info
    client.send(type_url=ROUTE_CONFIGURATION, resource_names=["15001"], version_info=got[ROUTE_CONFIGURATION].version_info,
                response_nonce=routes.nonce, error_detail=status_pb2.Status(code=3, message="Proto constraint validation failed: timeout"))
    wait_for(lambda: states(lab).get("routes") == "NACK")
    stream = lab.plane.status()["proxies"][0]["streams"][0]
    assert stream["types"]["routes"]["error"] == "Proto constraint validation failed: timeout"
    assert stream["types"]["routes"]["acked"] == got[ROUTE_CONFIGURATION].version_info
    assert "proxy client.default rejected routes version" in lab.log.getvalue()
    assert client.nothing()

    lab.apply(timeout="9s")
    fixed = client.receive()
    client.send(type_url=ROUTE_CONFIGURATION, resource_names=["15001"], version_info=fixed.version_info, response_nonce=fixed.nonce)
    wait_for(lambda: states(lab).get("routes") == "SYNCED")
    client.close()


def test_a_stale_nonce_is_ignored(lab):
    client = Client(lab)
    got = subscribe_all(client)
    lab.apply(timeout="7s")
    routes = client.receive()
    client.send(type_url=ROUTE_CONFIGURATION, resource_names=["15001"], version_info="old", response_nonce=got[ROUTE_CONFIGURATION].nonce,
                error_detail=status_pb2.Status(code=3, message="late"))
    assert client.nothing()
    assert states(lab)["routes"] == "STALE"
    client.send(type_url=ROUTE_CONFIGURATION, resource_names=["15001"], version_info=routes.version_info, response_nonce=routes.nonce)
    wait_for(lambda: states(lab)["routes"] == "SYNCED")
    client.close()


def test_a_push_sends_clusters_and_endpoints_before_listeners_and_routes(lab):
    """A new service: its cluster is pushed first; the routes that send traffic to it only
    once the proxy has answered the clusters, after it asked for their endpoints."""
    client = Client(lab)
    got = subscribe_all(client)
    extra = """\
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9090, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.5}]
"""
    lab.apply(extra=extra)
    clusters = client.receive()
    assert clusters.type_url == CLUSTER and "outbound|9090||ratings.default.svc.cluster.local" in names_of(clusters)
    assert client.nothing()  # the routes to ratings wait until the proxy has answered its clusters
    eds = ["outbound|9080||reviews.default.svc.cluster.local", "outbound|9090||ratings.default.svc.cluster.local"]
    endpoints = got[CLUSTER_LOAD_ASSIGNMENT]  # Envoy asks for the new cluster's endpoints on the EDS watch it has
    client.send(type_url=CLUSTER_LOAD_ASSIGNMENT, resource_names=eds, version_info=endpoints.version_info, response_nonce=endpoints.nonce)
    client.send(type_url=CLUSTER, version_info=clusters.version_info, response_nonce=clusters.nonce)
    order = []
    while True:
        try:
            order.append(client.receive(0.5).type_url)
        except queue.Empty:
            break
    # Its listener is the same: the new endpoints, then the routes that use them.
    assert order == [CLUSTER_LOAD_ASSIGNMENT, ROUTE_CONFIGURATION]
    client.close()


def test_an_endpoint_change_sends_endpoints_only(lab):
    """reviews-v1's address changes: the fast path; the client gets one EDS response with the
    new address, nothing else."""
    client = Client(lab)
    subscribe_all(client)
    changes = lab.apply(address="10.0.0.2")
    assert set(changes["client.default"]) == {"endpoints"}  # (reviews-v1's own proxy moved too: its listeners changed)
    response = client.receive()
    assert response.type_url == CLUSTER_LOAD_ASSIGNMENT
    assert "10.0.0.2" in str(_unpacked(response.resources[0]))
    assert client.nothing()
    assert "(endpoints in" in lab.log.getvalue()
    client.close()


def test_delta_sends_only_what_changed(lab):
    client = Client(lab, delta=True)
    client.send(type_url=CLUSTER, delta=True)
    clusters = client.receive()
    assert {r.name for r in clusters.resources} >= {"outbound|9080||reviews.default.svc.cluster.local"}
    client.send(type_url=CLUSTER, response_nonce=clusters.nonce, delta=True)
    client.send(type_url=CLUSTER_LOAD_ASSIGNMENT, resource_names_subscribe=["outbound|9080||reviews.default.svc.cluster.local"])
    endpoints = client.receive()
    assert [r.name for r in endpoints.resources] == ["outbound|9080||reviews.default.svc.cluster.local"]
    client.send(type_url=CLUSTER_LOAD_ASSIGNMENT, response_nonce=endpoints.nonce, delta=True)
    wait_for(lambda: set(states(lab).values()) == {"SYNCED"})

    lab.apply(address="10.0.0.3")
    update = client.receive()
    assert update.type_url == CLUSTER_LOAD_ASSIGNMENT and len(update.resources) == 1 and "10.0.0.3" in str(_unpacked(update.resources[0].resource))
    assert client.nothing()
    client.close()


def test_delta_nack_keeps_what_the_proxy_held(lab):
    """Delta: a NACKed update is reported; the server still counts the proxy as holding its
    old resources, so the next push sends the changed one again."""
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
    assert lab.plane.status()["proxies"][0]["streams"][0]["types"]["endpoints"]["error"] == "endpoint rejected"
    assert client.nothing()  # not sent again until something changes
    lab.apply(address="10.0.0.4", timeout="6s")  # the endpoint and the routes change
    again = client.receive()
    assert again.type_url == CLUSTER_LOAD_ASSIGNMENT and "10.0.0.4" in str(_unpacked(again.resources[0].resource))
    client.close()


def test_unknown_node_id_is_refused_with_a_log_line(lab):
    client = Client(lab, node="sidecar~10.0.0.7~ghost.default~default.svc.cluster.local")
    client.send(type_url=CLUSTER)
    error = client.receive()
    assert isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "unknown node id" in error.details() and "ghost.default" in error.details()
    assert "refused xDS stream" in lab.log.getvalue() and "ghost.default" in lab.log.getvalue()
    # The server keeps serving the others.
    other = Client(lab)
    other.send(type_url=CLUSTER)
    assert other.receive().type_url == CLUSTER
    other.close()


def test_identity_must_be_the_one_the_mesh_gives_the_node(lab):
    root = ca.make_root("cluster.local")
    key = csr.make_private_key()

    def cert(spiffe):
        return workload.sign_csr(csr.make_csr(key, spiffe), spiffe, root)

    estate = lab.plane.estate
    assert admitted_proxy(estate, NODE, cert("spiffe://cluster.local/ns/default/sa/client"), True) == "client.default"
    with pytest.raises(Refused, match="claims proxy client.default, whose identity is spiffe://cluster.local/ns/default/sa/client, "
                                      "but its certificate proves spiffe://cluster.local/ns/default/sa/default"):
        admitted_proxy(estate, NODE, cert("spiffe://cluster.local/ns/default/sa/default"), True)
    with pytest.raises(Refused, match="presented no client certificate"):
        admitted_proxy(estate, NODE, None, True)
    assert certificate_pem(root.certificate)


def test_xds_bootstrap_is_a_valid_envoy_bootstrap(lab):
    mesh = lab.plane.estate.mesh
    bootstrap = xds_bootstrap(mesh, "client.default", XdsServer((("127.0.0.1", 15012),), "/etc/meshwright/certs"))
    assert check_resource("envoy.config.bootstrap.v3.Bootstrap", bootstrap) is None
    assert bootstrap["dynamic_resources"]["ads_config"]["grpc_services"] == [{"envoy_grpc": {
        "cluster_name": XDS_CLUSTER, "retry_policy": {"retry_back_off": {"base_interval": "0.1s", "max_interval": "2s"}}}}]
    assert bootstrap["dynamic_resources"]["cds_config"] == {"ads": {}, "resource_api_version": "V3"}
    xds = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == XDS_CLUSTER][0]
    tls = xds["transport_socket"]["typed_config"]["common_tls_context"]
    # The certificate and roots through file-based SDS from the certs directory (re-read when the agent renews).
    watched = {"resource_api_version": "V3", "path_config_source": {"path": "/etc/meshwright/certs/sds-default.json",
                                                                    "watched_directory": {"path": "/etc/meshwright/certs"}}}
    assert tls["tls_certificate_sds_secret_configs"] == [{"name": "file-default", "sds_config": watched}]
    validation = tls["combined_validation_context"]
    assert validation["validation_context_sds_secret_config"]["sds_config"]["path_config_source"]["path"] == "/etc/meshwright/certs/sds-rootca.json"
    assert validation["default_validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "URI", "matcher": {"exact": "spiffe://cluster.local/ns/meshwright-system/sa/meshwright-control-plane"}}]
    plain = xds_bootstrap(mesh, "client.default", XdsServer((("127.0.0.1", 15012),), None, delta=True))
    assert "transport_socket" not in [c for c in plain["static_resources"]["clusters"] if c["name"] == XDS_CLUSTER][0]
    assert plain["dynamic_resources"]["ads_config"]["api_type"] == "DELTA_GRPC"


def test_plaintext_is_refused_off_loopback(lab):
    with pytest.raises(ValueError, match="loopback only"):
        xds_server.grpc_server(lab.plane, "0.0.0.0", free_port(), None)


def test_folder_edits_are_debounced_into_one_reload(tmp_path):
    """Edits 30 ms apart for 0.5 s reload once, after 100 ms of quiet; a bad edit's problems
    (validate's FILE:LINE messages) are logged and the plane keeps its mesh."""
    folder = tmp_path / "mesh"
    folder.mkdir()
    path = folder / "mesh.yaml"
    path.write_text(MESH.format(address="10.0.0.1", timeout="5s"))
    mesh, _ = load_valid([str(folder)])
    plane = ControlPlane(mesh, require_identity=False)
    reloads = []

    def on_loaded(loaded):
        reloads.append(time.monotonic())
        return plane.apply_loaded(loaded)

    log = io.StringIO()
    handler = logging.StreamHandler(log)
    logging.getLogger("meshwright.serve").addHandler(handler)
    watch = MeshFolder([str(folder)], on_loaded)
    watch.start()
    try:
        start = time.monotonic()
        for i in range(16):
            path.write_text(MESH.format(address=f"10.0.0.{i + 2}", timeout="5s"))
            time.sleep(0.03)
        last = time.monotonic()
        wait_for(lambda: reloads, timeout=3)
        time.sleep(0.3)
        assert len(reloads) == 1 and reloads[0] - last >= 0.09 and reloads[0] - start < 1.5
        assert plane.generation == 2 and plane.estate.mesh.find("WorkloadEntry", "default", "reviews-v1").spec["address"] == "10.0.0.17"
        path.write_text(MESH.format(address="10.0.0.1", timeout="5s").replace("location: MESH_INTERNAL", "location: NOWHERE"))
        wait_for(lambda: len(reloads) == 2, timeout=3)
        wait_for(lambda: plane.rejection is not None)
        problems = plane.rejection["problems"]
        assert problems and all(p.startswith(f"{path}:") for p in problems) and "NOWHERE" in problems[0]
        wait_for(lambda: problems[0] in log.getvalue())
        assert plane.generation == 2
    finally:
        watch.stop()
        logging.getLogger("meshwright.serve").removeHandler(handler)


def test_one_changed_resource_is_validated_alone_and_several_together(lab):
    """apply_loaded: a WorkloadEntry's move takes the incremental path (its own problems,
    with its file and line); an edit of two resources of two kinds, each in turn (the
    VirtualService's validates the whole mesh)."""
    from meshwright.model.load import load_paths
    lab.write(address="10.0.0.4")
    assert lab.plane.apply_loaded(load_paths([str(lab.mesh_dir)])) == []
    assert "one resource, WorkloadEntry/default/reviews-v1" in lab.log.getvalue()
    lab.write(address="\"10.0.0.1:80\"")
    problems = lab.plane.apply_loaded(load_paths([str(lab.mesh_dir)]))
    assert problems and str(problems[0]).startswith(f"{lab.mesh_dir / 'mesh.yaml'}:14: WorkloadEntry/default/reviews-v1: spec.address")
    assert lab.plane.estate.mesh.find("WorkloadEntry", "default", "reviews-v1").spec["address"] == "10.0.0.4"
    lab.write(address="10.0.0.5", timeout="8s")
    assert lab.plane.apply_loaded(load_paths([str(lab.mesh_dir)])) == []
    assert "(files: 2 added or changed, 0 removed (VirtualService, WorkloadEntry) in" in lab.log.getvalue() and lab.plane.generation == 3
    assert lab.plane.estate.mesh.find("WorkloadEntry", "default", "reviews-v1").spec["address"] == "10.0.0.5"


def test_over_mtls_streams_without_the_proxys_certificate_are_refused_and_the_others_served(tmp_path):
    """The server as `meshwright serve --ca` runs it: a stream with no client certificate, or
    one from another CA, fails its handshake and reaches nothing; a mesh certificate for
    another identity is refused with a log line naming both; the proxy's own is served, and
    nothing else was admitted."""
    import datetime
    from meshwright.pki.spiffe import control_plane_spiffe_id
    from meshwright.serve.certificates import CA_SERVER_NAME, serving_certificate

    lab = Lab(tmp_path)
    lab.running.stop()
    root = ca.make_root("cluster.local")
    roots = certificate_pem(root.certificate)
    key, chain = serving_certificate(root, control_plane_spiffe_id("cluster.local"), datetime.datetime.now(datetime.timezone.utc))
    mesh, problems = load_valid([str(lab.mesh_dir)])
    lab.running = xds_server.start(mesh, [str(lab.mesh_dir)], ("127.0.0.1", free_port()), xds_server.ServerTls(chain, key, roots), None,
                                   watch=False)
    lab.plane = lab.running.plane

    def stream(client_key=None, client_chain=None):
        credentials = grpc.ssl_channel_credentials(roots, client_key, client_chain)
        lab.channel = grpc.secure_channel(f"127.0.0.1:{lab.running.grpc_port}", credentials,
                                          options=(("grpc.ssl_target_name_override", CA_SERVER_NAME),))
        lab.stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(lab.channel)
        client = Client(lab)
        client.send(type_url=CLUSTER)
        return client.receive(timeout=5)

    def certificate(spiffe, signer):
        client_key = csr.make_private_key()
        return client_key, workload.sign_csr(csr.make_csr(client_key, spiffe), spiffe, signer)

    try:
        assert stream().code() == grpc.StatusCode.UNAVAILABLE
        assert stream(*certificate("spiffe://cluster.local/ns/default/sa/client", ca.make_root("cluster.local"))).code() == grpc.StatusCode.UNAVAILABLE
        assert "refused xDS stream" not in lab.log.getvalue()
        refused = stream(*certificate("spiffe://cluster.local/ns/default/sa/reviews", root))
        assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
        line = [l for l in lab.log.getvalue().splitlines() if l.startswith("refused xDS stream from")]
        assert len(line) == 1 and "sa/client" in line[0] and "sa/reviews" in line[0]
        served = stream(*certificate("spiffe://cluster.local/ns/default/sa/client", root))
        assert served.type_url == CLUSTER and served.resources
        assert [len(p["streams"]) for p in lab.plane.status()["proxies"] if p["streams"]] == [1]
    finally:
        lab.close()
