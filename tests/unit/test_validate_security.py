"""Validation of the security API: what needs workload certificates says so, unsupported
Istio fields are refused with a hint, and which policy governs a workload is never ambiguous
(Istio would pick the oldest; meshwright has no creation time and asks to merge instead)."""

from __future__ import annotations

import pytest

from tests.unit.security_mesh import IDENTITY, WORKLOADS
from tests.unit.validation_cases import Case, check_case

WITH_IDENTITY = IDENTITY + "---\n" + WORKLOADS
PA, AP, DR = "PeerAuthentication/default/", "AuthorizationPolicy/default/", "DestinationRule/default/server"

CASES_WITH_IDENTITY = [
    Case(
        "ISTIO_MUTUAL with certificate files",
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: server, namespace: default}
        spec:
          host: server
          trafficPolicy:
            tls:
              mode: ISTIO_MUTUAL
              clientCertificate: /etc/certs/client.pem  #!
        """,
        DR, "spec.trafficPolicy.tls.clientCertificate", ("ISTIO_MUTUAL uses the proxy's certificate from the mesh CA", "remove clientCertificate"),
    ),
    Case(
        "portLevelMtls without selector",
        """
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: default, namespace: default}
        spec:
          portLevelMtls:  #!
            8080: {mode: DISABLE}
        """,
        PA + "default", "spec.portLevelMtls", ("needs a selector",),
    ),
    Case(
        "portLevelMtls on a port no selected workload listens on",
        """
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: server, namespace: default}
        spec:
          selector: {matchLabels: {app: server}}
          portLevelMtls:
            8081: {mode: DISABLE}  #!
        """,
        PA + "server", "spec.portLevelMtls[8081]", ("no workload this policy selects has an inbound port 8081", "8080, 9000"),
    ),
    Case(
        "two namespace-wide PeerAuthentications",
        """
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: a, namespace: default}
        spec: {mtls: {mode: STRICT}}
        ---
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata:
          name: b  #!
          namespace: default
        spec: {mtls: {mode: PERMISSIVE}}
        """,
        PA + "b", "metadata.name", ("PeerAuthentication/default/a is already namespace default's PeerAuthentication", "merge them"),
    ),
    Case(
        "two PeerAuthentications select one workload",
        """
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: a, namespace: default}
        spec: {selector: {matchLabels: {app: server}}, mtls: {mode: STRICT}}
        ---
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: b, namespace: default}
        spec:
          selector: {matchLabels: {version: v2}}  #!
          mtls: {mode: DISABLE}
        """,
        PA + "b", "spec.selector", ("WorkloadEntry default/server-2 is already selected by PeerAuthentication/default/a",),
    ),
    Case(
        "principal written with spiffe://",
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: default}
        spec:
          rules:
          - from:
            - source:
                principals:
                - spiffe://cluster.local/ns/default/sa/client  #!
        """,
        AP + "p", "spec.rules[0].from[0].source.principals[0]", ("without spiffe://", "cluster.local/ns/default/sa/client"),
    ),
    Case(
        "ipBlocks",
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: default}
        spec:
          rules:
          - from:
            - source:
                ipBlocks: [10.0.0.0/8]  #!
        """,
        AP + "p", "spec.rules[0].from[0].source.ipBlocks", ("IP blocks are not supported",),
    ),
    Case(
        "JWT principals",
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: default}
        spec:
          rules:
          - from:
            - source:
                requestPrincipals: ["*"]  #!
        """,
        AP + "p", "spec.rules[0].from[0].source.requestPrincipals", ("JWT", "not supported"),
    ),
    Case(
        "CUSTOM action",
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: default}
        spec:
          action: CUSTOM  #!
          rules: [{}]
        """,
        AP + "p", "spec.action", ("external authorization (CUSTOM) is not supported",),
    ),
    Case(
        "unsupported condition key",
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: default}
        spec:
          rules:
          - when:
            - key: source.ip  #!
              values: [10.0.0.1]
        """,
        AP + "p", "spec.rules[0].when[0].key", ("request.headers[NAME], source.principal, source.namespace or destination.port",),
    ),
    Case(
        "port as a number",
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: default}
        spec:
          rules:
          - to:
            - operation:
                ports: [8080]  #!
        """,
        AP + "p", "spec.rules[0].to[0].operation.ports[0]", ("expected a string",),
    ),
    Case(
        "a path template with {**} before another operator (Istio refuses it)",
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: default}
        spec:
          rules:
          - to:
            - operation:
                paths: ["/api/{**}/items/{*}"]  #!
        """,
        AP + "p", "spec.rules[0].to[0].operation.paths[0]", ("not a valid path template: {**} must be its last operator",),
    ),
    Case(
        "braces that are no template operator",
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: default}
        spec:
          rules:
          - to:
            - operation:
                notPaths: ["/api/{id}/items"]  #!
        """,
        AP + "p", "spec.rules[0].to[0].operation.notPaths[0]", ("'{' and '}' appear only in {*} and {**}",),
    ),
    Case(
        "wildcard in the middle",
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: default}
        spec:
          rules:
          - to:
            - operation:
                paths: ["/api/*/items"]  #!
        """,
        AP + "p", "spec.rules[0].to[0].operation.paths[0]", ("at most a leading or trailing '*'",),
    ),
]

CASES_WITHOUT_IDENTITY = [
    Case(
        "ISTIO_MUTUAL without workload certificates",
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: ratings, namespace: default}
        spec:
          host: ratings
          trafficPolicy:
            tls: {mode: ISTIO_MUTUAL}  #!
        """,
        "DestinationRule/default/ratings", "spec.trafficPolicy.tls.mode", ("ISTIO_MUTUAL needs workload certificates", "certificates: {}"),
    ),
    Case(
        "STRICT without workload certificates",
        """
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: default, namespace: default}
        spec:
          mtls:
            mode: STRICT  #!
        """,
        PA + "default", "spec.mtls.mode", ("STRICT needs workload certificates",),
    ),
    Case(
        "MeshConfig defaultMtlsMode STRICT without workload certificates",
        """
        apiVersion: meshwright.io/v1alpha1
        kind: MeshConfig
        metadata: {name: mesh}
        spec:
          defaultMtlsMode: STRICT  #!
        """,
        "MeshConfig/default/mesh", "spec.defaultMtlsMode", ("STRICT needs workload certificates",),
    ),
    Case(
        "principals without workload certificates",
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: default}
        spec:
          rules:
          - from:
            - source:
                namespaces: [default]  #!
        """,
        AP + "p", "spec.rules[0].from[0].source.namespaces", ("mTLS identity of the caller, which needs workload certificates",),
    ),
    Case(
        "source condition without workload certificates",
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: default}
        spec:
          rules:
          - when:
            - key: source.principal  #!
              values: [cluster.local/ns/default/sa/client]
        """,
        AP + "p", "spec.rules[0].when[0].key", ("needs workload certificates",),
    ),
]


@pytest.mark.parametrize("case", CASES_WITH_IDENTITY, ids=str)
def test_security_problem_with_identity(tmp_path, case):
    check_case(tmp_path, case, base=WITH_IDENTITY)


@pytest.mark.parametrize("case", CASES_WITHOUT_IDENTITY, ids=str)
def test_security_problem_without_identity(tmp_path, case):
    check_case(tmp_path, case)
