"""DestinationRule failoverPriority on real Envoy with real traffic: two clients in one zone,
in racks a and b, and one `catalog` endpoint per rack, all in that zone (so locality alone
would not tell the endpoints apart). Each client's requests stay in its own rack; when its
rack's endpoint fails and outlier detection ejects it, they go to the other rack."""

from __future__ import annotations

from tests.harness import free_offset, request

MESH = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: catalog, namespace: shop}}
spec:
  hosts: [catalog.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {rack_a}}}, labels: {{rack: a}}, locality: eu/zone1}}
  - {{address: 127.0.0.1, ports: {{http: {rack_b}}}, labels: {{rack: b}}, locality: eu/zone1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: catalog, namespace: shop}}
spec:
  host: catalog
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        enabled: true
        failoverPriority: [rack]
    outlierDetection: {{consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 1m, maxEjectionPercent: 100}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: catalog, namespace: shop}}
spec:
  hosts: [catalog]
  http:
  - route: [{{destination: {{host: catalog}}}}]
    retries: {{attempts: 0}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: client-a
  namespace: shop
  annotations: {{meshwright.io/port-offset: "{offset_a}"}}
spec: {{address: 127.0.0.1, labels: {{app: client, rack: a}}, locality: eu/zone1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: client-b
  namespace: shop
  annotations: {{meshwright.io/port-offset: "{offset_b}"}}
spec: {{address: 127.0.0.1, labels: {{app: client, rack: b}}, locality: eu/zone1}}
"""


def start(lab, rack_a_behaviour=None):
    rack_a = lab.backend("catalog", "catalog-rack-a", behaviour=rack_a_behaviour)
    rack_b = lab.backend("catalog", "catalog-rack-b")
    offset_a = offset_b = free_offset()
    while abs(offset_b - offset_a) < 100:  # the two proxies' well-known ports apart
        offset_b = free_offset()
    lab.write_mesh(MESH.format(rack_a=rack_a.port, rack_b=rack_b.port, offset_a=offset_a, offset_b=offset_b))
    lab.proxy("client-a.shop", 15000 + offset_a)
    lab.proxy("client-b.shop", 15000 + offset_b)
    return rack_a, rack_b, 15001 + offset_a, 15001 + offset_b


def instances(port: int, count: int) -> list[tuple[int, str]]:
    answers = []
    for _ in range(count):
        status, body, _ = request(port, "/items", host="catalog:8080")
        answers.append((status, body.get("instance", "")))
    return answers


def test_each_client_stays_in_its_own_rack(lab):
    rack_a, rack_b, client_a, client_b = start(lab)
    assert set(instances(client_a, 10)) == {(200, "catalog-rack-a")}
    assert set(instances(client_b, 10)) == {(200, "catalog-rack-b")}
    assert (rack_a.count, rack_b.count) == (10, 10)


def test_a_client_fails_over_to_the_next_rack_when_its_own_is_ejected(lab):
    rack_a, rack_b, client_a, _ = start(lab, rack_a_behaviour=lambda handler, count: (503, {"error": "rack a is down"}))
    # The first 503 ejects rack a's endpoint (consecutive5xxErrors: 1); the rest go to rack b.
    answers = instances(client_a, 6)
    assert answers[0] == (503, "catalog-rack-a")
    assert set(answers[1:]) == {(200, "catalog-rack-b")}
    assert rack_a.count == 1
