"""retries.retryRemoteLocalities, on real Envoy with real traffic: the client's own zone has
one failing endpoint of `ratings` (503 always), the next zone a healthy one. Locality
failover keeps every first try in the client's zone; only with retryRemoteLocalities do the
retries leave it."""

from __future__ import annotations

from tests.harness import free_offset, request

MESH = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ratings, namespace: default}}
spec:
  hosts: [ratings.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {near}}}, locality: region1/zone1}}
  - {{address: 127.0.0.1, ports: {{http: {far}}}, locality: region1/zone2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: ratings, namespace: default}}
spec:
  host: ratings
  trafficPolicy:
    outlierDetection: {{consecutive5xxErrors: 1000, interval: 10s, baseEjectionTime: 30s}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: client
  namespace: default
  annotations: {{meshwright.io/port-offset: "{offset}"}}
spec: {{address: 127.0.0.1, labels: {{app: client}}, locality: region1/zone1}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ratings, namespace: default}}
spec:
  hosts: [ratings]
  http:
  - match:
    - headers: {{x-retry: {{exact: remote}}}}
    retries: {{attempts: 2, retryOn: 5xx, retryRemoteLocalities: true}}
    route:
    - destination: {{host: ratings}}
  - retries: {{attempts: 2, retryOn: 5xx}}
    route:
    - destination: {{host: ratings}}
"""


def always_503(handler, count):
    return 503, {"error": "zone1 is down"}


def start(lab):
    near = lab.backend("ratings", "ratings-zone1", behaviour=always_503)
    far = lab.backend("ratings", "ratings-zone2")
    offset = free_offset()
    lab.write_mesh(MESH.format(near=near.port, far=far.port, offset=offset))
    lab.proxy("client.default", 15000 + offset)
    return near, far, 15001 + offset


def test_retries_stay_in_the_clients_zone_by_default(lab):
    near, far, port = start(lab)
    status, _, _ = request(port, "/ratings/1", host="ratings:9080")
    assert (status, near.count, far.count) == (503, 3, 0)


def test_retry_remote_localities_retries_in_the_next_zone(lab):
    near, far, port = start(lab)
    status, body, _ = request(port, "/ratings/1", host="ratings:9080", headers={"x-retry": "remote"})
    # Istio's update_frequency 2: the zones already tried are left out after every second
    # attempt, so the first retry still goes to zone1 and the second to zone2.
    assert (status, body["instance"], near.count, far.count) == (200, "ratings-zone2", 2, 1)
