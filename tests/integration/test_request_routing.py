"""Istio's request-routing and traffic-shifting tasks, on real Envoy with real traffic.

One client sidecar (capture NONE: its outbound listener on 127.0.0.1:15001+offset) routes to
`reviews`, whose v1 and v2 endpoints are tiny HTTP apps on loopback.
"""

from __future__ import annotations

from collections import Counter

from tests.harness import free_offset, request

MESH = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {v1}}}, labels: {{app: reviews, version: v1}}}}
  - {{address: 127.0.0.1, ports: {{http: {v2}}}, labels: {{app: reviews, version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: client
  namespace: default
  annotations: {{meshwright.io/port-offset: "{offset}"}}
spec: {{address: 127.0.0.1, labels: {{app: client}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user: {user_match}
    route:
    - destination: {{host: reviews, subset: v2}}
  - route:
    - destination: {{host: reviews, subset: v1}}
      weight: {v1_weight}
    - destination: {{host: reviews, subset: v2}}
      weight: {v2_weight}
"""


def start(lab, v1_weight=100, v2_weight=0, user_match="{exact: jason}"):
    v1 = lab.backend("reviews", "reviews-v1", "v1")
    v2 = lab.backend("reviews", "reviews-v2", "v2")
    offset = free_offset()
    lab.write_mesh(MESH.format(v1=v1.port, v2=v2.port, offset=offset, v1_weight=v1_weight, v2_weight=v2_weight, user_match=user_match))
    envoy = lab.proxy("client.default", 15000 + offset)
    return envoy, 15001 + offset


def versions(port, count, headers=None):
    seen = Counter()
    for _ in range(count):
        status, body, _ = request(port, "/reviews", host="reviews", headers=headers)
        assert status == 200
        seen[body["version"]] += 1
    return seen


def test_end_user_jason_goes_to_v2_others_to_v1(lab):
    envoy, port = start(lab)
    assert versions(port, 20, {"end-user": "jason"}) == {"v2": 20}
    assert versions(port, 20, {"end-user": "someone-else"}) == {"v1": 20}
    assert versions(port, 20) == {"v1": 20}


def test_traffic_shifting_80_20_over_500_requests(lab):
    envoy, port = start(lab, 80, 20)
    seen = versions(port, 500)
    share_v2 = 100 * seen["v2"] / 500
    assert 15 <= share_v2 <= 25, f"v2 got {share_v2:.1f}% of 500 requests, expected 20 +- 5"
    assert seen["v1"] + seen["v2"] == 500


def test_relative_weights_1_and_3_send_three_quarters_to_v2(lab):
    """Istio's weights are relative (weight / sum): 1 and 3 are 25% and 75%."""
    envoy, port = start(lab, 1, 3)
    seen = versions(port, 400)
    share_v2 = 100 * seen["v2"] / 400
    assert 68 <= share_v2 <= 82, f"v2 got {share_v2:.1f}% of 400 requests, expected 75 +- 7"
    assert seen["v1"] + seen["v2"] == 400


def test_weight_0_beside_a_weighted_destination_gets_nothing(lab):
    envoy, port = start(lab, 7, 0)
    assert versions(port, 40) == {"v1": 40}


def test_an_re2_regex_with_a_unicode_class_matches_in_envoy(lab):
    """`\\pL` (any letter) is RE2, Envoy's regex syntax (Python's re has no such class)."""
    envoy, port = start(lab, user_match=r"{regex: '\pL+'}")
    assert versions(port, 5, {"end-user": "jason"}) == {"v2": 5}
    assert versions(port, 5, {"end-user": "j4son"}) == {"v1": 5}
