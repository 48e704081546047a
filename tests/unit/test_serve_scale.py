"""meshwright serve at scale (bench/controlplane.py measures it): a flood of streams over the
limit is refused with a log line while the others keep being served; proxies of a class share
their encoded resources, and what they receive parses as the resources compiled for them;
state-of-the-world endpoint pushes carry what changed only."""

from __future__ import annotations

import os

import grpc
import pytest
from google.protobuf import json_format

from meshwright.check.envoy_proto import message_class
from meshwright.compile.envoy_values import CLUSTER, CLUSTER_LOAD_ASSIGNMENT, ROUTE_CONFIGURATION, TYPE_PREFIX
from meshwright.compile.incremental import compile_estate, digest
from meshwright.serve import server as xds_server
from meshwright.serve.resources import Encoder, Served, proxy_config, proxy_snapshot
from meshwright.serve.source import load_valid
from tests.harness import free_port
from tests.unit.test_serve_ads import Client, Lab, _unpacked, subscribe_all, wait_for

TWO_CLIENTS = """
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client-2, namespace: default}
spec: {address: 10.0.0.10, labels: {app: client}, serviceAccount: client}
"""

@pytest.fixture
def small_lab(tmp_path):
    """The ADS lab with a server that serves at most 3 streams."""
    lab = Lab(tmp_path)
    lab.running.stop()
    mesh, problems = load_valid([str(lab.mesh_dir)])
    assert problems == []
    lab.running = xds_server.start(mesh, [str(lab.mesh_dir)], ("127.0.0.1", free_port()), None, None, watch=False, max_streams=3)
    lab.plane = lab.running.plane
    lab.channel = grpc.insecure_channel(f"127.0.0.1:{lab.running.grpc_port}")
    from envoy.service.discovery.v3 import ads_pb2_grpc
    lab.stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(lab.channel)
    yield lab
    lab.close()

def test_a_flood_of_streams_is_refused_with_a_log_line_and_the_others_are_served(small_lab):
    lab = small_lab
    served = [Client(lab) for _ in range(3)]
    for client in served:
        subscribe_all(client)
    flood = [Client(lab) for _ in range(4)]
    for client in flood:
        client.send(type_url=CLUSTER)
        refused = client.receive()
        assert isinstance(refused, grpc.RpcError) and refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "3 xDS streams are open" in refused.details()
    log = lab.log.getvalue()
    assert log.count("refused xDS stream from") == 4 and "the most this instance serves (meshwright serve --max-streams)" in log
    assert len(lab.plane.status()["refusals"]) == 4
    # The streams being served go on being served: an endpoint change reaches each of them.
    lab.apply(address="10.0.0.2")
    for client in served:
        response = client.receive()
        assert response.type_url == CLUSTER_LOAD_ASSIGNMENT and "10.0.0.2" in str(_unpacked(response.resources[0]))
    # A stream that ends frees its place.
    served[0].close()
    wait_for(lambda: len([s for p in lab.plane.status()["proxies"] for s in p["streams"]]) == 2)
    again = Client(lab)
    again.send(type_url=CLUSTER)
    assert again.receive().type_url == CLUSTER
    for client in served[1:] + [again]:
        client.close()

SOURCE_APP_REMOVED = """
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: metrics, namespace: default}
spec:
  metrics:
  - overrides:
    - match: {mode: CLIENT}
      tagOverrides: {source_app: {operation: REMOVE}}
"""


@pytest.mark.parametrize("telemetry", ["", SOURCE_APP_REMOVED], ids=["default", "own-labels-rewritten"])
def test_proxies_of_a_class_share_tables_and_stat_names(tmp_path, telemetry):
    """Two clients of one class, metrics on: by default their clusters are one table (their
    own labels are fixed tags of their bootstraps); where a tagOverride rewrites an own label,
    their clusters differ by stat name only. Each proxy's encoded cluster (the class's bytes,
    plus its stat name where it has its own) parses as the cluster compiled for it; their
    endpoint tables are one object."""
    lab = Lab(tmp_path)
    try:
        lab.write(extra=TWO_CLIENTS + telemetry)
        mesh, problems = load_valid([str(lab.mesh_dir)])
        assert problems == []
        lab.plane.apply(mesh)
        estate, encoder = lab.plane.estate, Encoder()
        first, second = (proxy_snapshot(estate, proxy, None) for proxy in ("client.default", "client-2.default"))
        assert first[CLUSTER_LOAD_ASSIGNMENT] is second[CLUSTER_LOAD_ASSIGNMENT]
        stat_named = 0
        for proxy, snapshot in (("client.default", first), ("client-2.default", second)):
            assert {name: served.version for name, served in snapshot[CLUSTER].items()} == estate.versions(proxy)["clusters"]
            compiled = {cluster["name"]: cluster for cluster in proxy_config(estate, proxy).clusters}
            for name, served in snapshot[CLUSTER].items():
                assert served.content == compiled[name]
                sent = message_class(CLUSTER[len(TYPE_PREFIX):])()
                sent.ParseFromString(_value_of(encoder.encode_bytes(CLUSTER, served)))
                assert sent == json_format.ParseDict(served.content, message_class(CLUSTER[len(TYPE_PREFIX):])())
                stat_named += served.shared is not None
        outbound = [name for name in first[CLUSTER] if name.startswith("outbound|")][0]
        one, other = first[CLUSTER][outbound].content["alt_stat_name"], second[CLUSTER][outbound].content["alt_stat_name"]
        if telemetry:
            assert stat_named >= 2 and one != other and "source_workload=client;" in one and "source_workload=client-2;" in other
        else:
            assert first[CLUSTER] is second[CLUSTER] and stat_named == 0 and one == other and "source_workload" not in one
    finally:
        lab.close()


def _value_of(any_bytes: bytes) -> bytes:
    from google.protobuf import any_pb2
    return any_pb2.Any.FromString(any_bytes).value

def test_state_of_the_world_endpoint_pushes_carry_what_changed(lab_with_two_services):
    """Subscribed to two services' endpoints, the client gets the moved one only; the
    response's version is that of both (what it now holds)."""
    lab = lab_with_two_services
    client = Client(lab)
    got = subscribe_all(client)
    assert len(got[CLUSTER_LOAD_ASSIGNMENT].resources) == 2
    lab.apply(address="10.0.0.2", extra=RATINGS)
    response = client.receive()
    assert response.type_url == CLUSTER_LOAD_ASSIGNMENT
    assert [_unpacked(r).cluster_name for r in response.resources] == ["outbound|9080||reviews.default.svc.cluster.local"]
    assert response.version_info != got[CLUSTER_LOAD_ASSIGNMENT].version_info
    client.send(type_url=CLUSTER_LOAD_ASSIGNMENT, resource_names=[_unpacked(r).cluster_name for r in got[CLUSTER_LOAD_ASSIGNMENT].resources],
                version_info=response.version_info, response_nonce=response.nonce)
    wait_for(lambda: _state(lab, "endpoints") == "SYNCED")
    client.close()

RATINGS = """
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.1.1}]
"""

@pytest.fixture
def lab_with_two_services(tmp_path):
    lab = Lab(tmp_path)
    lab.apply(extra=RATINGS)
    yield lab
    lab.close()

def _state(lab: Lab, kind: str) -> str:
    stream = [p for p in lab.plane.status()["proxies"] if p["proxy"] == "client.default"][0]["streams"][0]
    return stream["types"][kind]["state"]



def test_a_whole_response_is_built_once_and_parses_as_its_resources(lab_with_two_services):
    """Two proxies' snapshots of one class: the endpoints response body is one bytes object
    for both, and a DiscoveryResponse made from it holds exactly the served load assignments;
    so is the clusters response (a proxy's own labels are fixed tags of its bootstrap)."""
    from envoy.service.discovery.v3 import discovery_pb2
    from meshwright.serve.ads import CONTROL_PLANE_BYTES, version_of
    from meshwright.serve.resources import ResponseBodies, discovery_response_bytes

    lab = lab_with_two_services
    lab.write(extra=RATINGS + TWO_CLIENTS)
    mesh, problems = load_valid([str(lab.mesh_dir)])
    assert problems == []
    lab.plane.apply(mesh)
    bodies = ResponseBodies(Encoder())
    first, second = (proxy_snapshot(lab.plane.estate, proxy, None) for proxy in ("client.default", "client-2.default"))
    built = []
    for snapshot in (first, second):
        resources, version = snapshot.selected(CLUSTER_LOAD_ASSIGNMENT, None, version_of)
        built.append((version, bodies.whole(CLUSTER_LOAD_ASSIGNMENT, version, resources), resources))
    assert built[0][1] is built[1][1]
    response = discovery_pb2.DiscoveryResponse.FromString(
        discovery_response_bytes(built[0][0], CLUSTER_LOAD_ASSIGNMENT, "7", built[0][1], CONTROL_PLANE_BYTES))
    assert response.nonce == "7" and response.version_info == built[0][0] and response.type_url == CLUSTER_LOAD_ASSIGNMENT
    parsed = [json_format.MessageToDict(_unpacked(r), preserving_proto_field_name=True) for r in response.resources]
    assert parsed == [json_format.MessageToDict(json_format.ParseDict(served.content, message_class(CLUSTER_LOAD_ASSIGNMENT[len(TYPE_PREFIX):])()),
                                                preserving_proto_field_name=True) for served in built[0][2].values()]
    clusters = [bodies.whole(CLUSTER, *reversed(snapshot.selected(CLUSTER, None, version_of))) for snapshot in (first, second)]
    assert clusters[0] is clusters[1]


GOLDEN_CASES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "golden", "cases")


@pytest.mark.parametrize("case", ["virtual-service-matches", "virtual-service-delegate", "gateway", "sidecar-egress-proxy", "capture"])
def test_a_route_configuration_is_sent_as_protobuf_writes_it_whole(case):
    """Route configurations are encoded virtual host by virtual host (each once): the bytes
    sent are those protobuf writes for the whole message, for every proxy of the case."""
    mesh, problems = load_valid([os.path.join(GOLDEN_CASES, case, "mesh.yaml")])
    assert problems == []
    estate, encoder = compile_estate(mesh), Encoder()
    route_class = message_class(ROUTE_CONFIGURATION[len(TYPE_PREFIX):])
    checked = 0
    for group in estate.groups.values():
        for routes in group.config.routes:
            whole = json_format.ParseDict(routes, route_class()).SerializeToString(deterministic=True)
            assert _value_of(encoder.encode_bytes(ROUTE_CONFIGURATION, Served(digest(routes), routes))) == whole
            checked += len(routes["virtual_hosts"])
    assert checked >= 1


def test_after_a_route_edit_only_the_virtual_hosts_that_changed_are_encoded_again(tmp_path):
    """A VirtualService's weights edited: of the services' virtual hosts in the new route
    configurations, the edited service's alone is encoded again (a class's own small ones,
    inbound and catch-all, are made anew by each compile of it)."""
    from tests.unit.test_incremental import edited, estate_mesh
    from meshwright.check.incremental import apply
    estate = compile_estate(estate_mesh(tmp_path))
    encoder = Encoder()
    for routes in [routes for group in estate.groups.values() for routes in group.config.routes]:
        encoder.encode_bytes(ROUTE_CONFIGURATION, Served(digest(routes), routes))
    encoded = []
    original = encoder._virtual_host
    encoder._virtual_host = lambda host: encoded.append(host["name"]) or original(host) if id(host) not in encoder._virtual_hosts else original(host)
    service = estate.mesh.find("VirtualService", "ns-0", "svc-00010")
    new, changes = apply(estate, edited(service, lambda spec: spec["http"][1]["route"][0].update(weight=70) or spec["http"][1]["route"][1].update(weight=30)))
    route_class = message_class(ROUTE_CONFIGURATION[len(TYPE_PREFIX):])
    for group in new.groups.values():
        for routes in group.config.routes:
            sent = _value_of(encoder.encode_bytes(ROUTE_CONFIGURATION, Served(digest(routes), routes)))
            assert sent == json_format.ParseDict(routes, route_class()).SerializeToString(deterministic=True)
    assert changes and {name for name in encoded if ".svc.cluster.local:" in name} == {"svc-00010.ns-0.svc.cluster.local:8080"}
