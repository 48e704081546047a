"""Validation of the holes an attacker found (issue 10): empty sources and operations that
would allow everything, names that smuggle SPIFFE ID parts or /etc/hosts lines, policies
that no inbound listener enforces, principals in a trust domain that is not the mesh's."""

from __future__ import annotations

import textwrap

import pytest

from meshwright import names
from meshwright.check.pipeline import validate_mesh
from meshwright.cli import main
from meshwright.compile.telemetry import AccessLog, access_log
from meshwright.model.load import load_paths
from meshwright.model.providers import FILE_ACCESS_LOG, Provider
from tests.unit.security_mesh import IDENTITY, WORKLOADS
from tests.unit.validation_cases import BASE, Case, check_case

WITH_IDENTITY = IDENTITY + "---\n" + WORKLOADS
AP, PA = "AuthorizationPolicy/default/", "PeerAuthentication/default/"

# A service whose workload has a sidecar without any inbound listener: clients send to
# 10.0.0.7:8080 straight (its app), whatever policy selects it.
UNGUARDED = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: unguarded, namespace: default}
spec:
  hosts: [unguarded.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: unguarded}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: unguarded, namespace: default}
spec: {address: 10.0.0.7, labels: {app: unguarded}, serviceAccount: unguarded}
---
"""

EMPTY_AND_NAMES = [
    Case(
        "empty source",
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: default}
        spec:
          selector: {matchLabels: {app: server}}
          rules:
          - from:
            - source: {}  #!
        """,
        AP + "p", "spec.rules[0].from[0].source", ("needs at least one of principals", "matches any caller", "ALLOW rule allow everything"),
    ),
    Case(
        "empty operation",
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: default}
        spec:
          selector: {matchLabels: {app: server}}
          rules:
          - to:
            - operation: {}  #!
        """,
        AP + "p", "spec.rules[0].to[0].operation", ("needs at least one of paths", "matches any request"),
    ),
    Case(
        "from entry without source",
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: default}
        spec:
          selector: {matchLabels: {app: server}}
          rules:
          - from:
            - {}  #!
        """,
        AP + "p", "spec.rules[0].from[0]", ("missing required field 'source'",),
    ),
    Case(
        "service account with SPIFFE ID parts",
        """
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {name: forged, namespace: default}
        spec: {address: 10.0.0.8, serviceAccount: x/ns/prod/sa/admin}  #!
        """,
        "WorkloadEntry/default/forged", "spec.serviceAccount", ("'x/ns/prod/sa/admin' is not a DNS-1123 label",),
    ),
    Case(
        "label value with a newline",
        """
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {name: labelled, namespace: default}
        spec: {address: 10.0.0.8, labels: {app: "web\\nx"}}  #!
        """,
        "WorkloadEntry/default/labelled", "spec.labels.app", ("'web\\nx' is not a label value",),
    ),
    Case(
        "label key with a space",
        """
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {name: spaced, namespace: default}
        spec: {address: 10.0.0.8, labels: {"my app": web}}  #!
        """,
        "WorkloadEntry/default/spaced", "spec.labels.my app", ("'my app' is not a label key",),
    ),
    Case(
        "service account with a trailing newline",
        """
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {name: forged, namespace: default}
        spec: {address: 10.0.0.8, serviceAccount: "admin\\n"}  #!
        """,
        "WorkloadEntry/default/forged", "spec.serviceAccount", ("'admin\\n' is not a DNS-1123 label",),
    ),
    Case(
        "namespace with a trailing newline",
        """
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {name: forged, namespace: "prod\\n"}  #!
        spec: {address: 10.0.0.8}
        """,
        "'WorkloadEntry/prod\\n/forged'", "metadata.namespace", ("'prod\\n' is not a DNS-1123 label",),
    ),
    Case(
        "policy namespace with SPIFFE ID parts",
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: default}
        spec:
          selector: {matchLabels: {app: server}}
          rules:
          - from:
            - source:
                namespaces: [prod/sa/admin]  #!
        """,
        AP + "p", "spec.rules[0].from[0].source.namespaces[0]", ("'prod/sa/admin' is not a namespace",),
    ),
    Case(
        "condition namespace with a newline",
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: default}
        spec:
          selector: {matchLabels: {app: server}}
          rules:
          - when:
            - key: source.namespace
              values: ["prod\\n"]  #!
        """,
        AP + "p", "spec.rules[0].when[0].values[0]", ("'prod\\n' is not a namespace",),
    ),
]

TRUST_DOMAIN_NEWLINE = Case(
        "trust domain with a trailing newline",
        """
        apiVersion: meshwright.io/v1alpha1
        kind: MeshConfig
        metadata: {name: other}
        spec:
          trustDomain: "example.org\\n"  #!
        """,
        "MeshConfig/default/other", "spec.trustDomain", ("is not a trust domain",),
)

HOSTS = [
    Case(
        "service entry host that is two /etc/hosts lines",
        """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: evil, namespace: default}
        spec:
          hosts: ["evil.example.com\\n10.9.9.9 bank.example.com"]  #!
          ports: [{number: 80, name: http, protocol: HTTP}]
          resolution: DNS
        """,
        "ServiceEntry/default/evil", "spec.hosts[0]", ("is not a DNS name or a wildcard",),
    ),
    Case(
        "service entry host with a space",
        """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: evil, namespace: default}
        spec:
          hosts: ["evil.example.com bank.example.com"]  #!
          ports: [{number: 80, name: http, protocol: HTTP}]
          resolution: DNS
        """,
        "ServiceEntry/default/evil", "spec.hosts[0]", ("is not a DNS name or a wildcard",),
    ),
    Case(
        "virtual service host with a space",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: v, namespace: default}
        spec:
          hosts: ["reviews ratings"]  #!
          http: [{route: [{destination: {host: reviews}}]}]
        """,
        "VirtualService/default/v", "spec.hosts[0]", ("is not a DNS name",),
    ),
    Case(
        "destination rule host with a newline",
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: d, namespace: default}
        spec:
          host: "ratings\\n"  #!
        """,
        "DestinationRule/default/d", "spec.host", ("is not a DNS name",),
    ),
    Case(
        "sidecar egress host with a space in the host",
        """
        apiVersion: networking.istio.io/v1
        kind: Sidecar
        metadata: {name: s, namespace: default}
        spec:
          egress:
          - hosts: ["./reviews ratings"]  #!
        """,
        "Sidecar/default/s", "spec.egress[0].hosts[0]", ("is not namespace/host",),
    ),
    Case(
        "gateway host with a newline in the host part",
        """
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: g, namespace: default}
        spec:
          selector: {app: client}
          servers:
          - port: {number: 8080, name: http, protocol: HTTP}
            hosts: ["*/shop.example.com\\nx"]  #!
        """,
        "Gateway/default/g", "spec.servers[0].hosts[0]", ("is not a host",),
    ),
]

UNENFORCED = [
    Case(
        "authorization policy selecting a workload without inbound listener",
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: default}
        spec:
          selector: {matchLabels: {app: client}}  #!
          rules:
          - from: [{source: {principals: [cluster.local/ns/default/sa/server]}}]
        """,
        AP + "p", "spec.selector", ("enforced nowhere on WorkloadEntry default/client", "no inbound listener", "add a Sidecar ingress listener", "interceptionMode: REDIRECT"),
    ),
    Case(
        "STRICT peer authentication selecting a workload without inbound listener",
        """
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: p, namespace: default}
        spec:
          selector: {matchLabels: {app: client}}  #!
          mtls: {mode: STRICT}
        """,
        PA + "p", "spec.selector", ("STRICT mTLS is enforced nowhere on WorkloadEntry default/client", "add a Sidecar ingress listener"),
    ),
    Case(
        "namespace-wide STRICT over a service port no listener takes",
        UNGUARDED + """
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: default, namespace: default}  #!
        spec:
          mtls: {mode: STRICT}
        """,
        PA + "default", "metadata.name", ("STRICT mTLS is not enforced on port 8080 of WorkloadEntry default/unguarded", "clients reach its app directly"),
    ),
    Case(
        "namespace-wide authorization over a service port no listener takes",
        UNGUARDED + """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: deny-intruder, namespace: default}  #!
        spec:
          action: DENY
          rules:
          - from: [{source: {principals: [cluster.local/ns/default/sa/intruder]}}]
        """,
        AP + "deny-intruder", "metadata.name", ("not enforced on port 8080 of WorkloadEntry default/unguarded",),
    ),
]


@pytest.mark.parametrize("case", EMPTY_AND_NAMES + HOSTS + UNENFORCED, ids=str)
def test_refused(tmp_path, case):
    check_case(tmp_path, case, base=WITH_IDENTITY)


def test_trust_domain_with_a_trailing_newline_is_refused(tmp_path):
    check_case(tmp_path, TRUST_DOMAIN_NEWLINE)


def test_empty_source_refused_without_identity_too(tmp_path):
    check_case(tmp_path, EMPTY_AND_NAMES[0], base=BASE + "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: server, namespace: default}\nspec: {address: 10.0.0.5, labels: {app: server}}\n---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: server, namespace: default}\nspec:\n  workloadSelector: {labels: {app: server}}\n  ingress: [{port: {number: 8080, protocol: HTTP, name: http}, defaultEndpoint: 127.0.0.1:18080}]\n")


def validate(tmp_path, *texts: str):
    for index, text in enumerate(texts):
        (tmp_path / f"{index:02d}.yaml").write_text(textwrap.dedent(text))
    return validate_mesh(load_paths([str(tmp_path)]))


def test_a_captured_workload_enforces_policies_that_select_it(tmp_path):
    """Under iptables capture every inbound connection passes the proxy: no problem."""
    captured = UNGUARDED.replace("metadata: {name: unguarded, namespace: default}\nspec: {address",
                                 "metadata: {name: unguarded, namespace: default, annotations: {sidecar.istio.io/interceptionMode: REDIRECT}}\nspec: {address")
    assert "REDIRECT" in captured
    policy = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p, namespace: default}\nspec:\n  selector: {matchLabels: {app: unguarded}}\n  mtls: {mode: STRICT}\n"
    mesh, problems = validate(tmp_path, WITH_IDENTITY, captured + policy)
    assert problems == [] and mesh is not None


def test_a_permissive_workload_policy_lifts_a_namespace_wide_strict(tmp_path):
    """STRICT that a workload's own PERMISSIVE overrides does not apply there: no problem."""
    policies = """
    apiVersion: security.istio.io/v1
    kind: PeerAuthentication
    metadata: {name: default, namespace: default}
    spec: {mtls: {mode: STRICT}}
    ---
    apiVersion: security.istio.io/v1
    kind: PeerAuthentication
    metadata: {name: unguarded, namespace: default}
    spec: {selector: {matchLabels: {app: unguarded}}, mtls: {mode: PERMISSIVE}}
    """
    mesh, problems = validate(tmp_path, WITH_IDENTITY, UNGUARDED, policies)
    assert problems == [] and mesh is not None


OTHER_TRUST_DOMAIN = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  rules:
  - from: [{source: {principals: [other.example/ns/default/sa/client, cluster.local/ns/default/sa/client, old.example/ns/default/sa/client]}}]
  - when: [{key: source.principal, values: [elsewhere.example/ns/a/sa/b]}]
"""
ALIASES = "apiVersion: meshwright.io/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\nspec:\n  certificates: {}\n  trustDomain: example.org\n  trustDomainAliases: [old.example]\n"


def test_principal_in_another_trust_domain_is_a_warning(tmp_path):
    """Valid (the mesh is returned), with a warning naming each foreign principal; the
    mesh's trust domain, its aliases and cluster.local are not warned about."""
    mesh, problems = validate(tmp_path, ALIASES, WORKLOADS, OTHER_TRUST_DOMAIN)
    assert problems == [] and mesh is not None
    shown = [str(w) for w in mesh.warnings]
    assert len(shown) == 2, shown
    assert "AuthorizationPolicy/default/p: spec.rules[0].from[0].source.principals[0]: warning: principal other.example/ns/default/sa/client is in trust domain other.example" in shown[0]
    assert "cluster.local, example.org, old.example" in shown[0] and "trustDomainAliases" in shown[0]
    assert "spec.rules[1].when[0].values[0]: warning: principal elsewhere.example/ns/a/sa/b" in shown[1]


def test_cli_prints_warnings_and_exits_0(tmp_path, capsys):
    for index, text in enumerate((ALIASES, WORKLOADS, OTHER_TRUST_DOMAIN)):
        (tmp_path / f"{index:02d}.yaml").write_text(text)
    code = main(["validate", "--envoy", "none", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 0
    assert "warning: principal other.example/ns/default/sa/client is in trust domain other.example" in err


def test_warnings_come_with_errors(tmp_path):
    broken = OTHER_TRUST_DOMAIN + "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: bad, namespace: default}\nspec: {address: 10.0.0.9, serviceAccount: a/b}\n"
    mesh, problems = validate(tmp_path, ALIASES, WORKLOADS, broken)
    assert mesh is None
    assert [p.severity for p in problems].count("warning") == 2
    assert any("'a/b' is not a DNS-1123 label" in str(p) for p in problems)


def access_log_case(name: str, field: str, value: str, path: str) -> Case:
    body = f"accessLogFile: {value}  #!" if field == "accessLogFile" else (
        f"extensionProviders:\n          - name: file\n            envoyFileAccessLog:\n              path: {value}  #!"
    )
    return Case(name, f"""
        apiVersion: meshwright.io/v1alpha1
        kind: MeshConfig
        metadata: {{name: mesh}}
        spec:
          {body}
        """, "MeshConfig/default/mesh", path, ("is not /dev/stdout, /dev/stderr or a file under /var/log/meshwright/",))


PROVIDER_PATH = "spec.extensionProviders[0].envoyFileAccessLog.path"
ACCESS_LOG_PATHS = [
    access_log_case("provider path in /etc/cron.d", "provider", "/etc/cron.d/meshwright", PROVIDER_PATH),
    access_log_case("provider path escaping the log folder", "provider", "/var/log/meshwright/../../../etc/cron.d/x", PROVIDER_PATH),
    access_log_case("provider path relative", "provider", "access.log", PROVIDER_PATH),
    access_log_case("provider path with a trailing newline", "provider", '"/var/log/meshwright/a.log\\n"', PROVIDER_PATH),
    access_log_case("accessLogFile in /tmp", "accessLogFile", "/tmp/access.log", "spec.accessLogFile"),
    access_log_case("accessLogFile as the log folder's parent", "accessLogFile", "/var/log/meshwright/..", "spec.accessLogFile"),
]


@pytest.mark.parametrize("case", ACCESS_LOG_PATHS, ids=str)
def test_access_log_path_outside_the_log_folder_is_refused(tmp_path, case):
    check_case(tmp_path, case)


@pytest.mark.parametrize("path", ["/dev/stdout", "/dev/stderr", "/var/log/meshwright/access.log", "/var/log/meshwright/shop/orders-1.json"])
def test_access_log_paths_in_the_log_folder_or_standard_streams_are_valid(tmp_path, path):
    mesh_config = f"apiVersion: meshwright.io/v1alpha1\nkind: MeshConfig\nmetadata: {{name: mesh}}\nspec:\n  accessLogFile: {path}\n"
    mesh, problems = validate(tmp_path, BASE, mesh_config)
    assert problems == [] and mesh is not None


def test_the_compiler_refuses_an_access_log_path_validation_would_refuse():
    with pytest.raises(ValueError, match="refusing access log path '/etc/cron.d/x'"):
        access_log(AccessLog(Provider("file", FILE_ACCESS_LOG, path="/etc/cron.d/x")))


@pytest.mark.parametrize("text, required, expected", [
    ("./reviews.default.svc.cluster.local", True, True), ("*/*", True, True), ("shop/*.example.com", True, True), ("~/*", True, True),
    ("shop.example.com", False, True), ("shop.example.com", True, False), ("Shop/x", True, False),
    ("./a b", True, False), ("./a\n", True, False), ("ns\n/a", True, False), ("../x/y", True, False),
])
def test_namespaced_hosts(text, required, expected):
    assert names.is_namespaced_host(text, namespace_required=required) is expected
