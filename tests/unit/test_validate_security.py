"""Validation of the security API: what needs workload certificates says so, unsupported
Istio fields are refused with a hint, and which policy governs a workload is never ambiguous
(Istio would pick the oldest; meshwright has no creation time and asks to merge instead)."""

from __future__ import annotations

import textwrap

import pytest

from meshwright.check.pipeline import validate_mesh
from meshwright.model.load import load_paths
from tests.unit.security_mesh import IDENTITY, WORKLOADS
from tests.unit.validation_cases import Case, check_case, validate_texts

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
        "ipBlocks with something that is no address",
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: default}
        spec:
          rules:
          - from:
            - source:
                ipBlocks:
                - 10.0.0.0/255.0.0.0  #!
        """,
        AP + "p", "spec.rules[0].from[0].source.ipBlocks[0]", ("'10.0.0.0/255.0.0.0' is not an IP address or a CIDR block",),
    ),
    Case(
        "serviceAccounts beside principals",
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: default}
        spec:
          rules:
          - from:
            - source:
                principals: [cluster.local/ns/default/sa/client]
                serviceAccounts: [client]  #!
        """,
        AP + "p", "spec.rules[0].from[0].source.serviceAccounts", ("cannot be set with principals", "Istio refuses it"),
    ),
    Case(
        "a service account with a wildcard",
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: default}
        spec:
          rules:
          - from:
            - source:
                notServiceAccounts:
                - "shop/*"  #!
        """,
        AP + "p", "spec.rules[0].from[0].source.notServiceAccounts[0]", ("NAME or NAMESPACE/NAME", "no wildcards"),
    ),
    Case(
        "a source.ip condition value that is no address",
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: default}
        spec:
          rules:
          - when:
            - key: source.ip
              notValues:
              - 10.0.0.300  #!
        """,
        AP + "p", "spec.rules[0].when[0].notValues[0]", ("'10.0.0.300' is not an IP address or a CIDR block",),
    ),
    Case(
        "a request principal without subject",
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: default}
        spec:
          rules:
          - from:
            - source:
                requestPrincipals:
                - issuer.example  #!
        ---
        apiVersion: security.istio.io/v1
        kind: RequestAuthentication
        metadata: {name: jwt, namespace: default}
        spec:
          jwtRules: [{issuer: issuer.example, jwks: '{"keys": [{"kty": "EC"}]}'}]
        """,
        AP + "p", "spec.rules[0].from[0].source.requestPrincipals[0]", ("ISSUER/SUBJECT",),
    ),
    Case(
        "a JWKS URI with a query",
        """
        apiVersion: security.istio.io/v1
        kind: RequestAuthentication
        metadata: {name: jwt, namespace: default}
        spec:
          jwtRules:
          - issuer: issuer.example
            jwksUri: https://user@issuer.example/jwks.json?v=1  #!
        """,
        "RequestAuthentication/default/jwt", "spec.jwtRules[0].jwksUri", ("is not an http(s) URI Envoy can fetch: http(s)://HOST[:PORT]/PATH",),
    ),
    Case(
        "a JWKS file with a relative path",
        """
        apiVersion: security.istio.io/v1
        kind: RequestAuthentication
        metadata: {name: jwt, namespace: default}
        spec:
          jwtRules:
          - issuer: issuer.example
            jwksUri: file://../jwks.json  #!
        """,
        "RequestAuthentication/default/jwt", "spec.jwtRules[0].jwksUri", ("is not a file:///ABSOLUTE/PATH",),
    ),
    Case(
        "inline jwks that is no key set",
        """
        apiVersion: security.istio.io/v1
        kind: RequestAuthentication
        metadata: {name: jwt, namespace: default}
        spec:
          jwtRules:
          - issuer: issuer.example
            jwks: '{"keys": []}'  #!
        """,
        "RequestAuthentication/default/jwt", "spec.jwtRules[0].jwks", ("not a JSON Web Key Set",),
    ),
    Case(
        "a JWKS fetch timeout",
        """
        apiVersion: security.istio.io/v1
        kind: RequestAuthentication
        metadata: {name: jwt, namespace: default}
        spec:
          jwtRules:
          - issuer: issuer.example
            jwks: '{"keys": [{"kty": "EC"}]}'
            timeout: 5s  #!
        """,
        "RequestAuthentication/default/jwt", "spec.jwtRules[0].timeout", ("timeout bounds fetching an http(s) jwksUri: this rule fetches none, remove it",),
    ),
    Case(
        "a request authentication no inbound listener enforces",
        """
        apiVersion: security.istio.io/v1
        kind: RequestAuthentication
        metadata: {name: jwt, namespace: default}
        spec:
          selector:  #!
            matchLabels: {app: client}
          jwtRules:
          - issuer: issuer.example
            jwks: '{"keys": [{"kty": "EC"}]}'
        """,
        "RequestAuthentication/default/jwt", "spec.selector", ("this request authentication is enforced nowhere on WorkloadEntry default/client",),
    ),
    Case(
        "a claim key without brackets",
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: default}
        spec:
          rules:
          - when:
            - key: request.auth.claims  #!
              values: [a]
        """,
        AP + "p", "spec.rules[0].when[0].key", ("request.auth.claims[NAME]",),
    ),
    Case(
        "CUSTOM action without a provider",
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: default}
        spec:
          action: CUSTOM  #!
          rules: [{}]
        """,
        AP + "p", "spec.action", ("action CUSTOM needs provider.name, an external authorizer", "envoyExtAuthzHttp"),
    ),
    Case(
        "CUSTOM action naming a provider the MeshConfig does not define",
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: default}
        spec:
          action: CUSTOM
          provider:
            name: sample-ext-authz-grpc  #!
          rules: [{}]
        """,
        AP + "p", "spec.provider.name", ("'sample-ext-authz-grpc' is no envoyExtAuthzHttp or envoyExtAuthzGrpc provider of the MeshConfig",),
    ),
    Case(
        "a provider beside action ALLOW",
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: default}
        spec:
          provider: {name: x}  #!
          rules: [{}]
        """,
        AP + "p", "spec.provider", ("provider names the external authorizer of action CUSTOM",),
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
            - key: destination.labels[version]  #!
              values: [v1]
        """,
        AP + "p", "spec.rules[0].when[0].key", ("request.headers[NAME], request.auth.claims[NAME]", "source.ip, remote.ip", "connection.sni"),
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


def test_hosts_without_port_in_a_deny_policy_are_warned(tmp_path):
    """Istio compares hosts as written: a DENY on `orders.example` does not match a request for
    `orders.example:8080`. Validation passes and warns, naming the value and the fix (a
    suffix match cannot take ":*": its ports are listed)."""
    deny = """
    apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: {name: p, namespace: default}
    spec:
      action: DENY
      rules:
      - to: [{operation: {hosts: [orders.example, "orders.example:*", "*.example.org"]}}]
    """
    for name, text in {"base.yaml": WITH_IDENTITY, "case.yaml": deny}.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    mesh, errors = validate_mesh(load_paths([str(tmp_path)]))
    problems = mesh.warnings
    assert not errors and [p.is_warning for p in problems] == [True, True]
    assert "AuthorizationPolicy/default/p: spec.rules[0].to[0].operation.hosts[0]: warning: orders.example matches only a Host header without a port" in str(problems[0])
    assert "add 'orders.example:*' to match it on every port" in str(problems[0])
    assert "hosts[2]: warning: *.example.org matches only a Host header without a port" in str(problems[1])
    assert "add '*.example.org:PORT' for each port clients use" in str(problems[1])


def test_address_conditions_need_no_identity(tmp_path):
    """ipBlocks, remoteIpBlocks, hosts and the address keys work without workload
    certificates (they are not the mTLS identity); service accounts need them."""
    by_address = """
    apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: {name: p, namespace: default}
    spec:
      rules:
      - from: [{source: {ipBlocks: [127.0.0.1], remoteIpBlocks: [10.0.0.0/8]}}]
        to: [{operation: {hosts: ["a.example:*"]}}]
        when: [{key: source.ip, values: [127.0.0.1]}, {key: destination.ip, values: ["::1"]}, {key: connection.sni, values: [a.example]}]
      - from: [{source: {serviceAccounts: [client]}}]
    """
    problems = validate_texts(tmp_path, {"base.yaml": WORKLOADS, "case.yaml": by_address})
    assert [str(p).split(": ", 1)[1] for p in problems] == [
        "AuthorizationPolicy/default/p: spec.rules[1].from[0].source.serviceAccounts: serviceAccounts match the mTLS identity of the caller, which needs workload certificates: "
        + problems[0].message.split("workload certificates: ", 1)[1]
    ]


def test_jwt_fields_without_request_authentication_are_warned(tmp_path):
    """A rule on request principals for workloads no RequestAuthentication applies to matches
    no request (no JWT is validated there): validation passes and warns, naming a workload;
    with a RequestAuthentication that selects them, no warning."""
    need_jwt = """
    apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: {name: p, namespace: default}
    spec:
      selector: {matchLabels: {app: server}}
      rules:
      - to: [{operation: {paths: [/a]}}]
      - from: [{source: {requestPrincipals: ["*"]}}]
    """
    jwt = """
    apiVersion: security.istio.io/v1
    kind: RequestAuthentication
    metadata: {name: jwt, namespace: default}
    spec:
      selector: {matchLabels: {app: server}}
      jwtRules: [{issuer: a.example, jwks: '{"keys": [{"kty": "EC"}]}'}]
    """
    warnings = []
    for case, texts in {"without": [need_jwt], "with": [need_jwt, jwt]}.items():
        directory = tmp_path / case
        directory.mkdir()
        for index, text in enumerate([WITH_IDENTITY] + texts):
            (directory / f"{index}.yaml").write_text(textwrap.dedent(text))
        mesh, errors = validate_mesh(load_paths([str(directory)]))
        assert not errors
        warnings.append([str(w).split(": ", 1)[1] for w in mesh.warnings])
    assert warnings[0] == [
        "AuthorizationPolicy/default/p: spec.rules[1].from[0].source.requestPrincipals: warning: no RequestAuthentication applies to "
        "WorkloadEntry default/server-1, so its requests carry no validated JWT and match no request principal or request.auth condition: "
        "add a RequestAuthentication that selects it"
    ]
    assert warnings[1] == []
