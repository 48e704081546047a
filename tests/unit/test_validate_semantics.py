"""Semantic validation: what is well-formed field by field but wrong as a whole.

Weights that do not add up, two resources that claim the same thing, listeners that would
fight for a port, EnvoyFilter patches meshwright cannot apply the way Istio would.
"""

from __future__ import annotations

import pytest

from meshwright.check.pipeline import validate_mesh
from meshwright.model.load import load_paths
from meshwright.model.resource import Resource, Source
from meshwright.problems import Problems
from meshwright.validate.semantics import check_workload_entry
from tests.unit.validation_cases import BASE, Case, check_case

VS = "VirtualService/default/reviews"
SIDECAR = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: client, namespace: default}
spec:
  workloadSelector: {labels: {app: client}}
"""

CASES = [
    Case(
        "several destinations, every weight 0 (Istio: total destination weight = 0)",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination: {host: reviews, subset: v1}
          - route:  #!
            - destination: {host: reviews, subset: v1}
              weight: 0
            - destination: {host: reviews, subset: v2}
        """,
        VS, "spec.http[1].route", ("every destination has weight 0 (0 + 0)", "weight / sum of the weights"),
    ),
    Case(
        "TCP weights beyond what Envoy can add up",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: db, namespace: default}
        spec:
          hosts: [db]
          tcp:
          - route:  #!
            - {destination: {host: db}, weight: 2147483647}
            - {destination: {host: db}, weight: 2147483647}
            - {destination: {host: db}, weight: 2}
        """,
        "VirtualService/default/db", "spec.tcp[0].route", ("weights sum to 4294967296, more than Envoy can add up",),
    ),
    Case(
        "a rewrite on a redirect (Istio rejects it)",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - redirect: {uri: /v2}
            rewrite: {uri: /v1}  #!
        """,
        VS, "spec.http[0].rewrite", ("rewrite cannot be used with redirect", "nothing is forwarded"),
    ),
    Case(
        "retries on a redirect (no effect: never ignored silently)",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - redirect: {uri: /v2}
            retries: {attempts: 3}  #!
        """,
        VS, "spec.http[0].retries", ("retries cannot be used with redirect", "nothing is retried"),
    ),
    Case(
        "mirrorPercentage without mirror",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination: {host: reviews}
            mirrorPercentage: {value: 10}  #!
        """,
        VS, "spec.http[0].mirrorPercentage", ("mirrorPercentage without mirror",),
    ),
    Case(
        "two VirtualServices for one host",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination: {host: reviews, subset: v1}
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews-canary, namespace: default}
        spec:
          hosts:
          - reviews.default.svc.cluster.local  #!
          http:
          - route:
            - destination: {host: reviews, subset: v2}
        """,
        "VirtualService/default/reviews-canary", "spec.hosts[0]",
        ("reviews.default.svc.cluster.local is already routed by VirtualService/default/reviews", "merge the routes into one VirtualService"),
    ),
    Case(
        "two DestinationRules for one host in one namespace",
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: reviews-lb, namespace: default}
        spec:
          host: reviews.default.svc.cluster.local  #!
          trafficPolicy: {loadBalancer: {simple: RANDOM}}
        """,
        "DestinationRule/default/reviews-lb", "spec.host",
        ("reviews.default.svc.cluster.local already has DestinationRule/default/reviews in namespace default: merge them",),
    ),
    Case(
        "the same resource defined twice",
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: reviews  #!
          namespace: default
        spec:
          host: reviews
          subsets: [{name: v1, labels: {version: v1}}]
        """,
        "DestinationRule/default/reviews", "metadata.name",
        ("duplicate DestinationRule: DestinationRule/default/reviews is also defined at", "base.yaml:"),
    ),
    Case(
        "two namespace-wide Sidecars",
        """
        apiVersion: networking.istio.io/v1
        kind: Sidecar
        metadata: {name: default, namespace: default}
        spec:
          egress: [{hosts: ["./*"]}]
        ---
        apiVersion: networking.istio.io/v1
        kind: Sidecar
        metadata: {name: second, namespace: default}
        spec:  #!
          egress: [{hosts: ["*/*"]}]
        """,
        "Sidecar/default/second", "spec", ("namespace default already has a Sidecar without workloadSelector (Sidecar/default/default)",),
    ),
    Case(
        "two Sidecar ingress listeners on one port",
        SIDECAR + """\
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
  - port: {number: 9080, protocol: TCP, name: tcp}  #!
    defaultEndpoint: 127.0.0.1:8081
""",
        "Sidecar/default/client", "spec.ingress[1].port.number",
        ("port 9080 is already a listener of this Sidecar (spec.ingress[0].port.number)", "one listener per port"),
    ),
    Case(
        "an egress listener on the port of an ingress listener",
        SIDECAR + """\
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
  egress:
  - port: {number: 9080, protocol: HTTP, name: http}  #!
    hosts: [./ratings.default.svc.cluster.local]
""",
        "Sidecar/default/client", "spec.egress[0].port.number", ("port 9080 is already a listener of this Sidecar (spec.ingress[0].port.number)",),
    ),
    Case(
        "an ingress listener on the proxy's admin port",
        SIDECAR + """\
  ingress:
  - port: {number: 15000, protocol: HTTP, name: http}  #!
    defaultEndpoint: 127.0.0.1:8080
""",
        "Sidecar/default/client", "spec.ingress[0].port.number", ("port 15000 is the admin port of proxy client.default (port offset 0)", "choose another port"),
    ),
    Case(
        "an ingress listener on the outbound port (no egress listener replaces it)",
        SIDECAR + """\
  ingress:
  - port: {number: 15001, protocol: HTTP, name: http}  #!
    defaultEndpoint: 127.0.0.1:8080
""",
        "Sidecar/default/client", "spec.ingress[0].port.number", ("port 15001 is the outbound port of proxy client.default",),
    ),
    Case(
        "an ingress listener on the stats port of a proxy with a port offset",
        """
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata:
          name: web
          namespace: default
          annotations: {meshwright.io/port-offset: "100"}
        spec: {address: 127.0.0.1, labels: {app: web}}
        ---
        apiVersion: networking.istio.io/v1
        kind: Sidecar
        metadata: {name: web, namespace: default}
        spec:
          workloadSelector: {labels: {app: web}}
          ingress:
          - port: {number: 15190, protocol: HTTP, name: http}  #!
            defaultEndpoint: 127.0.0.1:8080
        """,
        "Sidecar/default/web", "spec.ingress[0].port.number", ("port 15190 is the stats port of proxy web.default (port offset 100)",),
    ),
    Case(
        "a gateway server on the gateway's health port",
        """
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: ingress, namespace: default}
        spec:
          selector: {istio: ingressgateway}
          servers:
          - port: {number: 15021, name: http, protocol: HTTP}  #!
            hosts: ["*"]
        """,
        "Gateway/default/ingress", "spec.servers[0].port.number", ("port 15021 is the health port of proxy ingress.default",),
    ),
    Case(
        "a port offset that is not a number",
        """
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata:
          name: web
          namespace: default
          annotations:
            meshwright.io/port-offset: "+100"  #!
        spec: {address: 127.0.0.1, labels: {app: web}}
        """,
        "WorkloadEntry/default/web", "metadata.annotations.meshwright.io/port-offset", ("'+100' is not a port offset: expected a whole number from 0 to 50000",),
    ),
    Case(
        "EnvoyFilter operation that Istio ignores on route configurations",
        """
        apiVersion: networking.istio.io/v1alpha3
        kind: EnvoyFilter
        metadata: {name: tweak, namespace: default}
        spec:
          configPatches:
          - applyTo: ROUTE_CONFIGURATION
            match: {routeConfiguration: {portNumber: 9080}}
            patch:
              operation: ADD  #!
              value: {name: first}
        """,
        "EnvoyFilter/default/tweak", "spec.configPatches[0].patch.operation", ("ADD is not supported on ROUTE_CONFIGURATION: use MERGE or MERGE_AND_REPLACE_LIST",),
    ),
    Case(
        "EnvoyFilter replacing a cluster (REPLACE is for filters)",
        """
        apiVersion: networking.istio.io/v1alpha3
        kind: EnvoyFilter
        metadata: {name: tweak, namespace: default}
        spec:
          configPatches:
          - applyTo: CLUSTER
            match: {cluster: {service: ratings.default.svc.cluster.local}}
            patch:
              operation: REPLACE  #!
              value: {name: x}
        """,
        "EnvoyFilter/default/tweak", "spec.configPatches[0].patch.operation", ('REPLACE is not supported on CLUSTER: use ADD or REMOVE or MERGE or MERGE_AND_REPLACE_LIST',),
    ),
    Case(
        "EnvoyFilter BOOTSTRAP patch of the node",
        """
        apiVersion: networking.istio.io/v1alpha3
        kind: EnvoyFilter
        metadata: {name: tweak, namespace: default}
        spec:
          configPatches:
          - applyTo: BOOTSTRAP
            patch:
              operation: MERGE
              value:
                node: {cluster: other}  #!
        """,
        "EnvoyFilter/default/tweak", "spec.configPatches[0].patch.value.node", ("a BOOTSTRAP patch may not change node: the node's identity",),
    ),
    Case(
        "EnvoyFilter BOOTSTRAP patch other than MERGE",
        """
        apiVersion: networking.istio.io/v1alpha3
        kind: EnvoyFilter
        metadata: {name: tweak, namespace: default}
        spec:
          configPatches:
          - applyTo: BOOTSTRAP
            patch:
              operation: ADD  #!
              value: {overload_manager: {refresh_interval: 1s}}
        """,
        "EnvoyFilter/default/tweak", "spec.configPatches[0].patch.operation", ("ADD is not supported on BOOTSTRAP: use MERGE",),
    ),
    Case(
        "EnvoyFilter BOOTSTRAP patch matching a listener",
        """
        apiVersion: networking.istio.io/v1alpha3
        kind: EnvoyFilter
        metadata: {name: tweak, namespace: default}
        spec:
          configPatches:
          - applyTo: BOOTSTRAP
            match:
              listener: {portNumber: 80}  #!
            patch:
              operation: MERGE
              value: {overload_manager: {refresh_interval: 1s}}
        """,
        "EnvoyFilter/default/tweak", "spec.configPatches[0].match.listener",
        ("BOOTSTRAP patches match only on context and proxy (there is one per proxy), not listener",),
    ),
    Case(
        "EnvoyFilter EXTENSION_CONFIG without typed_config",
        """
        apiVersion: networking.istio.io/v1alpha3
        kind: EnvoyFilter
        metadata: {name: tweak, namespace: default}
        spec:
          configPatches:
          - applyTo: EXTENSION_CONFIG
            patch:
              operation: ADD
              value: {name: my-wasm}  #!
        """,
        "EnvoyFilter/default/tweak", "spec.configPatches[0].patch.value", ("an EXTENSION_CONFIG needs typed_config (with its @type)",),
    ),
    Case(
        "EnvoyFilter cluster ADD without a name",
        """
        apiVersion: networking.istio.io/v1alpha3
        kind: EnvoyFilter
        metadata: {name: tweak, namespace: default}
        spec:
          configPatches:
          - applyTo: CLUSTER
            patch:
              operation: ADD
              value: {type: STRICT_DNS, connect_timeout: 1s}  #!
        """,
        "EnvoyFilter/default/tweak", "spec.configPatches[0].patch.value", ('ADD of a CLUSTER needs value.name: Envoy tells them apart by name',),
    ),
    Case(
        "EnvoyFilter network filter removal that names no filter",
        """
        apiVersion: networking.istio.io/v1alpha3
        kind: EnvoyFilter
        metadata: {name: tweak, namespace: default}
        spec:
          configPatches:
          - applyTo: NETWORK_FILTER
            match:  #!
              listener: {portNumber: 9080}
            patch:
              operation: REMOVE
        """,
        "EnvoyFilter/default/tweak", "spec.configPatches[0].match", ('REMOVE of a network filter needs match.listener.filterChain.filter.name',),
    ),
    Case(
        "EnvoyFilter virtual host patch matched on a listener",
        """
        apiVersion: networking.istio.io/v1alpha3
        kind: EnvoyFilter
        metadata: {name: tweak, namespace: default}
        spec:
          configPatches:
          - applyTo: VIRTUAL_HOST
            match:
              listener: {portNumber: 9080}  #!
            patch:
              operation: MERGE
              value: {rate_limits: []}
        """,
        "EnvoyFilter/default/tweak", "spec.configPatches[0].match.listener", ('VIRTUAL_HOST patches match on routeConfiguration, not listener',),
    ),
    Case(
        "EnvoyFilter match on the wrong kind of object",
        """
        apiVersion: networking.istio.io/v1alpha3
        kind: EnvoyFilter
        metadata: {name: tweak, namespace: default}
        spec:
          configPatches:
          - applyTo: CLUSTER
            match:
              listener: {portNumber: 9080}  #!
            patch:
              operation: MERGE
              value: {connect_timeout: 1s}
        """,
        "EnvoyFilter/default/tweak", "spec.configPatches[0].match.listener", ("CLUSTER patches match on cluster, not listener",),
    ),
    Case(
        "EnvoyFilter HTTP filter removal that names no filter",
        """
        apiVersion: networking.istio.io/v1alpha3
        kind: EnvoyFilter
        metadata: {name: tweak, namespace: default}
        spec:
          configPatches:
          - applyTo: HTTP_FILTER
            match:  #!
              listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager}}}
            patch:
              operation: REMOVE
        """,
        "EnvoyFilter/default/tweak", "spec.configPatches[0].match", ("REMOVE of an HTTP filter needs match.listener.filterChain.filter.subFilter.name",),
    ),
    Case(
        "EnvoyFilter insert without a value",
        """
        apiVersion: networking.istio.io/v1alpha3
        kind: EnvoyFilter
        metadata: {name: tweak, namespace: default}
        spec:
          configPatches:
          - applyTo: HTTP_FILTER
            patch:  #!
              operation: INSERT_FIRST
        """,
        "EnvoyFilter/default/tweak", "spec.configPatches[0].patch", ("INSERT_FIRST needs a value",),
    ),
    Case(
        "STATIC resolution with a host name for an address",
        """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: details, namespace: default}
        spec:
          hosts: [details.default.svc.cluster.local]
          ports: [{number: 9080, name: http, protocol: HTTP}]
          resolution: STATIC
          endpoints:
          - address: details.internal  #!
        """,
        "ServiceEntry/default/details", "spec.endpoints[0].address",
        ("'details.internal' is not an IP address: resolution STATIC needs IPs (use DNS for names)",),
    ),
    Case(
        "a wildcard host resolved by DNS",
        """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: apis, namespace: default}
        spec:
          hosts:
          - "*.example.com"  #!
          ports: [{number: 80, name: http, protocol: HTTP}]
          resolution: DNS
        """,
        "ServiceEntry/default/apis", "spec.hosts[0]", ("a wildcard host cannot be resolved by DNS",),
    ),
    Case(
        "DNS_ROUND_ROBIN with two endpoints (Envoy's LOGICAL_DNS takes one)",
        """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: cdn, namespace: default}
        spec:
          hosts: [cdn.example.com]
          ports: [{number: 80, name: http, protocol: HTTP}]
          resolution: DNS_ROUND_ROBIN
          endpoints:  #!
          - address: a.cdn.example.net
          - address: b.cdn.example.net
        """,
        "ServiceEntry/default/cdn", "spec.endpoints", ("resolution DNS_ROUND_ROBIN takes at most one endpoint", "use DNS"),
    ),
    Case(
        "a service port number used twice",
        """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: details, namespace: default}
        spec:
          hosts: [details.default.svc.cluster.local]
          ports:
          - {number: 9080, name: http, protocol: HTTP}
          - {number: 9080, name: grpc, protocol: GRPC}  #!
          resolution: DNS
        """,
        "ServiceEntry/default/details", "spec.ports[1].number", ("port number 9080 is used twice",),
    ),
    Case(
        "a WorkloadEntry address that is neither an IP nor a hostname",
        """
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {name: vm-1, namespace: default}
        spec:
          address: "10.0.0.9:8080"  #!
          labels: {app: vm}
        """,
        "WorkloadEntry/default/vm-1", "spec.address", ("'10.0.0.9:8080' is not an IP address or a hostname",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_semantic_problem(tmp_path, case):
    check_case(tmp_path, case)


@pytest.mark.parametrize("address", ["10.0.0.9", "fd00::9", "vm-1.example.com", "vm-1"])
def test_a_workload_entry_address_is_an_ip_or_a_hostname(address):
    problems = Problems()
    workload = Resource("networking.istio.io/v1", "WorkloadEntry", "vm-1", "default", {}, {"address": address}, Source("mesh.yaml", 1))
    check_workload_entry(workload, problems)
    assert problems.items == []


NETWORK_ENTRY = """
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: default}}
spec: {{address: {address}, labels: {{app: {name}}}{network}}}
"""


def test_one_network_named_everywhere_or_nowhere_is_accepted(tmp_path):
    """network names the one network meshwright makes: harmless, so accepted."""
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "case.yaml").write_text("---".join([
        NETWORK_ENTRY.format(name="vm-1", address="10.0.0.5", network=", network: vm-network"),
        NETWORK_ENTRY.format(name="vm-2", address="10.0.0.6", network=""),
    ]))
    mesh, problems = validate_mesh(load_paths([str(tmp_path)]))
    assert problems == [] and mesh is not None


def test_workloads_on_several_networks_are_refused_not_ignored(tmp_path):
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "case.yaml").write_text("---".join([
        NETWORK_ENTRY.format(name="vm-1", address="10.0.0.5", network=", network: network1"),
        NETWORK_ENTRY.format(name="vm-2", address="10.0.0.6", network=", network: network2"),
    ]))
    _, problems = validate_mesh(load_paths([str(tmp_path)]))
    shown = [str(p) for p in problems]
    assert len(shown) == 2, "\n".join(shown)
    case = tmp_path / "case.yaml"
    assert shown[0].startswith(f"{case}:5: WorkloadEntry/default/vm-1: spec.network: network is not supported by meshwright yet")
    assert shown[1].startswith(f"{case}:10: WorkloadEntry/default/vm-2: spec.network: network is not supported by meshwright yet")
    assert "(this mesh names network1, network2)" in shown[0] and "east-west gateways" in shown[0]
    assert shown[0].endswith("put every workload on one network (one name for all, or none)")
