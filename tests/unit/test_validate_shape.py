"""Shape validation (Galley's schema checks): every document against the Istio API schema.

Each case holds one mistake; meshwright reports it once, at its line, with the field path and
words that say what is expected. Unknown fields are errors (never ignored), with a
did-you-mean suggestion when a known field is close.
"""

from __future__ import annotations

import pytest

from tests.unit.validation_cases import Case, check_case, validate_texts

VS = "VirtualService/default/reviews"

CASES = [
    Case(
        "unknown field, did you mean",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination: {host: reviews}
            timout: 5s  #!
        """,
        VS, "spec.http[0].timout", ("unknown field 'timout' in an HTTP route", "(did you mean 'timeout'?)"),
    ),
    Case(
        "unknown field, nothing close: the known fields are listed",
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: ratings, namespace: default}
        spec:
          host: ratings
          trafficPolicy:
            loadBalancer:
              strategy: 30s  #!
        """,
        "DestinationRule/default/ratings", "spec.trafficPolicy.loadBalancer.strategy",
        ("unknown field 'strategy' in load balancer settings", "expected one of: consistentHash, localityLbSetting, simple, warmup, warmupDurationSecs"),
    ),
    Case(
        "unknown top-level field",
        """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: details, namespace: default}
        spec:
          hosts: [details.default.svc.cluster.local]
          ports: [{number: 9080, name: http, protocol: HTTP}]
          resolution: DNS
        status: {}  #!
        """,
        "ServiceEntry/default/details", "status", ("unknown field 'status' in a resource",),
    ),
    Case(
        "wrong type: a string where a list is expected",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: reviews  #!
          http:
          - route:
            - destination: {host: reviews}
        """,
        VS, "spec.hosts", ("expected a list", "got string"),
    ),
    Case(
        "wrong type: a quoted weight",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination: {host: reviews, subset: v1}
              weight: "100"  #!
        """,
        VS, "spec.http[0].route[0].weight", ("expected an integer from 0 to 2147483647", "got string '100'"),
    ),
    Case(
        "wrong type: a boolean as a string",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - match:
            - uri: {prefix: /api}
              ignoreUriCase: "yes"  #!
            route:
            - destination: {host: reviews}
        """,
        VS, "spec.http[0].match[0].ignoreUriCase", ("expected true or false", "got string 'yes'"),
    ),
    Case(
        "missing required field of the spec",
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: ratings, namespace: default}
        spec:  #!
          subsets: [{name: v1, labels: {version: v1}}]
        """,
        "DestinationRule/default/ratings", "spec", ("missing required field 'host' of a DestinationRule spec",),
    ),
    Case(
        "missing required field deep down",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - route:
            - weight: 100  #!
        """,
        VS, "spec.http[0].route[0]", ("missing required field 'destination' of a route destination",),
    ),
    Case(
        "missing metadata.name",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {namespace: default}  #!
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination: {host: reviews}
        """,
        "VirtualService/default/", "metadata", ("missing required field 'name' of metadata",),
    ),
    Case(
        "a name that is not DNS-1123",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: Reviews_Route  #!
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination: {host: reviews}
        """,
        "VirtualService/default/Reviews_Route", "metadata.name", ("'Reviews_Route' is not a DNS-1123 name",),
    ),
    Case(
        "route and redirect: exactly one of them",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - match: [{uri: {prefix: /old}}]  #!
        """,
        VS, "spec.http[0]", ("an HTTP route needs one of route, redirect",),
    ),
    Case(
        "bad enum with a close value",
        """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: details, namespace: default}
        spec:
          hosts: [details.default.svc.cluster.local]
          ports: [{number: 9080, name: http, protocol: HTTP}]
          resolution: STATIK  #!
        """,
        "ServiceEntry/default/details", "spec.resolution",
        ("'STATIK' is not valid: expected one of NONE, STATIC, DNS, DNS_ROUND_ROBIN", "(did you mean STATIC?)"),
    ),
    Case(
        "a field meshwright does not support yet: a tls match's destinationSubnets",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: api, namespace: default}
        spec:
          hosts: [reviews]
          tls:
          - match:
            - sniHosts: [reviews]
              destinationSubnets: [10.0.0.0/8]  #!
            route:
            - destination: {host: reviews}
        """,
        "VirtualService/default/api", "spec.tls[0].match[0].destinationSubnets",
        ("destinationSubnets is not supported by meshwright yet (match by sniHosts and port",),
    ),
    Case(
        "bad enum: load balancer",
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: ratings, namespace: default}
        spec:
          host: ratings
          trafficPolicy:
            loadBalancer: {simple: LEAST_CONN}  #!
        """,
        "DestinationRule/default/ratings", "spec.trafficPolicy.loadBalancer.simple",
        ("'LEAST_CONN' is not valid: expected one of ROUND_ROBIN, LEAST_REQUEST, RANDOM",),
    ),
    Case(
        "bad duration: words",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination: {host: reviews}
            timeout: 5 seconds  #!
        """,
        VS, "spec.http[0].timeout", ("'5 seconds' is not a duration such as 500ms, 1.5s, 2m or 1h",),
    ),
    Case(
        "bad duration: a bare number",
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: ratings, namespace: default}
        spec:
          host: ratings
          trafficPolicy:
            connectionPool:
              tcp: {connectTimeout: 30}  #!
        """,
        "DestinationRule/default/ratings", "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
        ("30 is not a duration such as 500ms",),
    ),
    Case(
        "bad duration: too short (Istio: perTryTimeout must be >= 1ms)",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination: {host: reviews}
            retries: {attempts: 3, perTryTimeout: 0s}  #!
        """,
        VS, "spec.http[0].retries.perTryTimeout", ("'0s' is too short: at least 0.001s",),
    ),
    Case(
        "bad regex in a URI match",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - match:
            - uri: {regex: "/api/([a-z+"}  #!
            route:
            - destination: {host: reviews}
        """,
        VS, "spec.http[0].match[0].uri.regex", ("regex '/api/([a-z+' is not valid RE2", "missing ]: [a-z+"),
    ),
    Case(
        "a lookahead (Python's re has it, RE2 and so Envoy do not)",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - match:
            - uri: {regex: "/api/(?!internal).*"}  #!
            route:
            - destination: {host: reviews}
        """,
        VS, "spec.http[0].match[0].uri.regex", ("is not valid RE2, Envoy's regex syntax", "invalid perl operator: (?!"),
    ),
    Case(
        "a regex too large for Envoy (RE2 program size over 100)",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination: {host: reviews}
            rewrite:
              uriRegexRewrite: {match: "^/(abc|def){1,30}$", rewrite: /}  #!
        """,
        VS, "spec.http[0].rewrite.uriRegexRewrite.match", ("too large for Envoy: its RE2 program size is", "refuses more than 100"),
    ),
    Case(
        "bad regex in a header match",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - match:
            - headers:
                x-user:
                  regex: "*admin"  #!
            route:
            - destination: {host: reviews}
        """,
        VS, "spec.http[0].match[0].headers.x-user.regex", ("regex '*admin' is not valid RE2", "no argument for repetition operator"),
    ),
    Case(
        "a string match with two kinds",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - match:
            - uri: {prefix: /a, exact: /a}  #!
            route:
            - destination: {host: reviews}
        """,
        VS, "spec.http[0].match[0].uri", ("set only one of exact, prefix, regex (found exact, prefix)",),
    ),
    Case(
        "fault with neither delay nor abort",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination: {host: reviews}
            fault: {}  #!
        """,
        VS, "spec.http[0].fault", ("a fault injection needs at least one of delay, abort",),
    ),
    Case(
        "fault percentage above 100",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination: {host: reviews}
            fault:
              abort:
                httpStatus: 503
                percentage: {value: 150}  #!
        """,
        VS, "spec.http[0].fault.abort.percentage.value", ("150 is out of range: expected a number from 0 to 100",),
    ),
    Case(
        "mirror percentage below 0",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination: {host: reviews, subset: v1}
            mirror: {host: reviews, subset: v2}
            mirrorPercentage: {value: -5}  #!
        """,
        VS, "spec.http[0].mirrorPercentage.value", ("-5 is out of range: expected a number from 0 to 100",),
    ),
    Case(
        "a negative weight (Istio: weight < 0)",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination: {host: reviews}
              weight: -20  #!
        """,
        VS, "spec.http[0].route[0].weight", ("-20 is out of range: expected an integer from 0 to 2147483647",),
    ),
    Case(
        "port number out of range",
        """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: details, namespace: default}
        spec:
          hosts: [details.default.svc.cluster.local]
          ports:
          - name: http
            number: 70000  #!
            protocol: HTTP
          resolution: DNS
        """,
        "ServiceEntry/default/details", "spec.ports[0].number", ("70000 is out of range: expected an integer from 1 to 65535",),
    ),
    Case(
        "unknown kind",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualServise  #!
        metadata: {name: reviews, namespace: default}
        spec: {hosts: [reviews]}
        """,
        "VirtualServise/default/reviews", "kind", ("unknown kind: 'VirtualServise' is not valid", "(did you mean VirtualService?)"),
    ),
    Case(
        "unknown apiVersion",
        """
        apiVersion: networking.istio.io/v2  #!
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination: {host: reviews}
        """,
        VS, "apiVersion",
        ("'networking.istio.io/v2' is not an apiVersion of VirtualService", "networking.istio.io/v1, networking.istio.io/v1beta1, networking.istio.io/v1alpha3"),
    ),
    Case(
        "apiVersion of another group",
        """
        apiVersion: security.istio.io/v1  #!
        kind: ServiceEntry
        metadata: {name: details, namespace: default}
        spec:
          hosts: [details.default.svc.cluster.local]
          ports: [{number: 9080, name: http, protocol: HTTP}]
          resolution: DNS
        """,
        "ServiceEntry/default/details", "apiVersion", ("'security.istio.io/v1' is not an apiVersion of ServiceEntry",),
    ),
    Case(
        "duplicate YAML key (the first value would be lost silently)",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination: {host: reviews, subset: v1}
            timeout: 1s
            timeout: 10s  #!
        """,
        VS, "spec.http[0].timeout", ("duplicate key (YAML keeps only the last one)",),
    ),
    Case(
        "duplicate YAML key in a flow mapping",
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: ratings, namespace: default}
        spec:
          host: ratings
          subsets:
          - {name: v1, labels: {version: v1}, name: v2}  #!
        """,
        "DestinationRule/default/ratings", "spec.subsets[0].name", ("duplicate key",),
    ),
    Case(
        "EnvoyFilter applyTo that Istio does not have",
        """
        apiVersion: networking.istio.io/v1alpha3
        kind: EnvoyFilter
        metadata: {name: tweak, namespace: default}
        spec:
          configPatches:
          - applyTo: HTTP_FILTERS  #!
            patch:
              operation: MERGE
              value: {name: envoy.filters.http.router}
        """,
        "EnvoyFilter/default/tweak", "spec.configPatches[0].applyTo", ("'HTTP_FILTERS' is not valid", "(did you mean HTTP_FILTER?)"),
    ),
    Case(
        "EnvoyFilter operation that does not exist",
        """
        apiVersion: networking.istio.io/v1alpha3
        kind: EnvoyFilter
        metadata: {name: tweak, namespace: default}
        spec:
          configPatches:
          - applyTo: CLUSTER
            patch:
              operation: UPSERT  #!
              value: {connect_timeout: 1s}
        """,
        "EnvoyFilter/default/tweak", "spec.configPatches[0].patch.operation",
        ("'UPSERT' is not valid: expected one of MERGE, MERGE_AND_REPLACE_LIST, ADD, REMOVE, INSERT_BEFORE, INSERT_AFTER, INSERT_FIRST, REPLACE",),
    ),
    Case(
        "EnvoyFilter listener portName, which Istio does not implement either",
        """
        apiVersion: networking.istio.io/v1alpha3
        kind: EnvoyFilter
        metadata: {name: tweak, namespace: default}
        spec:
          configPatches:
          - applyTo: LISTENER
            match:
              listener:
                portName: http  #!
            patch:
              operation: MERGE
              value: {per_connection_buffer_limit_bytes: 1024}
        """,
        "EnvoyFilter/default/tweak", "spec.configPatches[0].match.listener.portName",
        ("portName is not supported by meshwright yet (Istio does not act on it either: match the listener by portNumber)",),
    ),
    Case(
        "EnvoyFilter proxy metadata value that is not a string",
        """
        apiVersion: networking.istio.io/v1alpha3
        kind: EnvoyFilter
        metadata: {name: tweak, namespace: default}
        spec:
          configPatches:
          - applyTo: CLUSTER
            match:
              proxy:
                metadata:
                  NAMESPACE: [default]  #!
            patch:
              operation: MERGE
              value: {connect_timeout: 1s}
        """,
        "EnvoyFilter/default/tweak", "spec.configPatches[0].match.proxy.metadata.NAMESPACE", ("expected a string",),
    ),
    Case(
        "EnvoyFilter proxyVersion that is not RE2",
        """
        apiVersion: networking.istio.io/v1alpha3
        kind: EnvoyFilter
        metadata: {name: tweak, namespace: default}
        spec:
          configPatches:
          - applyTo: CLUSTER
            match:
              proxy:
                proxyVersion: '^1\\.(?=4)'  #!
            patch:
              operation: MERGE
              value: {connect_timeout: 1s}
        """,
        "EnvoyFilter/default/tweak", "spec.configPatches[0].match.proxy.proxyVersion", ("is not valid RE2",),
    ),
    Case(
        "EnvoyFilter filterClass that is not one of Istio's",
        """
        apiVersion: networking.istio.io/v1alpha3
        kind: EnvoyFilter
        metadata: {name: tweak, namespace: default}
        spec:
          configPatches:
          - applyTo: HTTP_FILTER
            patch:
              operation: ADD
              filterClass: LAST  #!
              value: {name: envoy.filters.http.lua}
        """,
        "EnvoyFilter/default/tweak", "spec.configPatches[0].patch.filterClass", ("AUTHN", "AUTHZ", "STATS"),
    ),
    Case(
        "Sidecar captureMode IPTABLES (capture is chosen per workload by annotation)",
        """
        apiVersion: networking.istio.io/v1
        kind: Sidecar
        metadata: {name: client, namespace: default}
        spec:
          workloadSelector: {labels: {app: client}}
          ingress:
          - port: {number: 9080, protocol: HTTP, name: http}
            defaultEndpoint: 127.0.0.1:8080
            captureMode: IPTABLES  #!
        """,
        "Sidecar/default/client", "spec.ingress[0].captureMode", ("'IPTABLES' is not valid: expected one of NONE", "sidecar.istio.io/interceptionMode: REDIRECT"),
    ),
    Case(
        "Kubernetes secret name for upstream TLS",
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: ratings, namespace: default}
        spec:
          host: ratings
          trafficPolicy:
            tls:
              mode: SIMPLE
              credentialName: ratings-ca  #!
        """,
        "DestinationRule/default/ratings", "spec.trafficPolicy.tls.credentialName",
        ("unknown field 'credentialName' in client TLS settings", "Kubernetes secrets are not read: give file paths"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_shape_problem(tmp_path, case):
    check_case(tmp_path, case)


def test_not_yaml_is_a_file_level_problem(tmp_path):
    """A file that is not YAML is reported at the line where the parser stops, with no resource."""
    problems = validate_texts(tmp_path, {"broken.yaml": "apiVersion: networking.istio.io/v1\nkind: [VirtualService\nmetadata: {}\n"})
    assert len(problems) == 1
    assert str(problems[0]).startswith(f"{tmp_path / 'broken.yaml'}:3: not valid YAML: ")


def test_document_that_is_not_a_mapping(tmp_path):
    problems = validate_texts(tmp_path, {"list.yaml": "- apiVersion: networking.istio.io/v1\n"})
    assert [str(p) for p in problems] == [f"{tmp_path / 'list.yaml'}:1: a document must be a mapping with apiVersion, kind, metadata and spec"]


def test_one_bad_field_does_not_hide_the_rest_of_the_resource(tmp_path):
    """Shape checks prune only what is wrong: the rest of the resource is still checked
    (here its subset reference), so a second round of fixes is not needed."""
    problems = validate_texts(tmp_path, {"case.yaml": """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews.default.svc.cluster.local]
          ports: [{number: 9080, name: http, protocol: HTTP}]
          endpoints: [{address: 10.0.0.1}]
          resolution: STATIC
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination: {host: reviews, subset: v3}
            timeout: soon
        """})
    assert [(p.line, p.path) for p in problems] == [
        (18, ("spec", "http", 0, "route", 0, "destination", "subset")),
        (19, ("spec", "http", 0, "timeout")),
    ]


def test_paths_after_a_dropped_list_item_are_those_written(tmp_path):
    """A list item too broken to keep is left out of later checks; the items after it are
    still reported at their own index and line, not shifted onto the dropped one."""
    problems = validate_texts(tmp_path, {"case.yaml": """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews.default.svc.cluster.local]
          ports: [{number: 9080, name: http, protocol: HTTP}]
          endpoints: [{address: 10.0.0.1}]
          resolution: STATIC
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - match: [{uri: {prefix: /a}}]
          - route:
            - destination: {host: reviews, subset: v3}
        """})
    assert [(p.line, str(p).split(": ")[2]) for p in problems] == [
        (17, "spec.http[0]"),
        (19, "spec.http[1].route[0].destination.subset"),
    ]


def test_what_istio_allows_together_is_valid(tmp_path):
    """Istio accepts a fault with both delay and abort, and a VirtualService with both http
    and tcp routes (for a host with HTTP and TCP ports)."""
    problems = validate_texts(tmp_path, {"case.yaml": """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews.default.svc.cluster.local]
          ports: [{number: 9080, name: http, protocol: HTTP}, {number: 9081, name: tcp, protocol: TCP}]
          endpoints: [{address: 10.0.0.1}]
          resolution: STATIC
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination: {host: reviews, port: {number: 9080}}
            fault:
              delay: {fixedDelay: 1s}
              abort: {httpStatus: 500}
          tcp:
          - match: [{port: 9081}]
            route:
            - destination: {host: reviews, port: {number: 9081}}
        """})
    assert problems == []
