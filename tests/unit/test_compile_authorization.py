"""AuthorizationPolicy compiled as Istio does: RBAC filters on the selected workloads'
inbound listeners, DENY evaluated before ALLOW, both before routing; sources match the
client certificate's SPIFFE ID; on TCP, HTTP-only rules drop out of ALLOW (deny more) and
lose their HTTP fields in DENY (deny more)."""

from __future__ import annotations

from tests.unit.security_mesh import compiled, listener_on, load_mesh


def policy(name: str, body: str, namespace: str = "default") -> str:
    return f"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{body}"


ALLOW_CLIENT = policy("allow-client", """\
  selector: {matchLabels: {app: server}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/client]}}, {source: {namespaces: [shop, "team-*"]}}]
    to: [{operation: {methods: [GET, HEAD], paths: ["/api/*", "*.json", /healthz], notPaths: [/api/admin*]}}]
    when: [{key: "request.headers[x-tenant]", values: [acme]}]
""")
DENY_DELETE = policy("deny-delete", """\
  action: DENY
  rules:
  - to: [{operation: {methods: [DELETE], ports: ["8080"]}}]
""")


def http_filters(config, port: int, chain: int = 0) -> list[dict]:
    manager = listener_on(config, port)["filter_chains"][chain]["filters"][-1]["typed_config"]
    return manager["http_filters"]


def test_deny_then_allow_before_routing(tmp_path):
    mesh = load_mesh(tmp_path, ALLOW_CLIENT, DENY_DELETE)
    filters = http_filters(compiled(mesh, "server-1.default"), 8080)
    names = [f["name"] for f in filters]
    assert names[:2] == ["envoy.filters.http.rbac", "envoy.filters.http.rbac"] and names[-1] == "envoy.filters.http.router"
    deny, allow = filters[0]["typed_config"], filters[1]["typed_config"]
    assert (deny["rules"]["action"], deny["rules_stat_prefix"]) == ("DENY", "deny")
    assert (allow["rules"]["action"], allow["rules_stat_prefix"]) == ("ALLOW", "allow")
    assert list(deny["rules"]["policies"]) == ["ns[default]-policy[deny-delete]-rule[0]"]
    assert deny["rules"]["policies"]["ns[default]-policy[deny-delete]-rule[0]"] == {
        "permissions": [{"and_rules": {"rules": [{"header": {"name": ":method", "string_match": {"exact": "DELETE"}}}, {"destination_port": 8080}]}}],
        "principals": [{"any": True}],
    }


def test_rule_translation(tmp_path):
    """from: any source (principals with spiffe://, namespaces inside the SPIFFE ID); to: all
    of methods, paths and not-paths (wildcards as prefix/suffix); when: all conditions."""
    mesh = load_mesh(tmp_path, ALLOW_CLIENT)
    [allow, *_] = http_filters(compiled(mesh, "server-1.default"), 8080)
    envoy_policy = allow["typed_config"]["rules"]["policies"]["ns[default]-policy[allow-client]-rule[0]"]
    assert envoy_policy["principals"] == [{"or_ids": {"ids": [
        {"authenticated": {"principal_name": {"exact": "spiffe://cluster.local/ns/default/sa/client"}}},
        {"authenticated": {"principal_name": {"safe_regex": {"regex": ".*/ns/shop/.*"}}}},
        {"authenticated": {"principal_name": {"safe_regex": {"regex": ".*/ns/team\\-[^/]*/.*"}}}},
    ]}}]
    assert envoy_policy["permissions"] == [{"and_rules": {"rules": [
        {"or_rules": {"rules": [{"url_path": {"path": {"prefix": "/api/"}}}, {"url_path": {"path": {"suffix": ".json"}}}, {"url_path": {"path": {"exact": "/healthz"}}}]}},
        {"not_rule": {"url_path": {"path": {"prefix": "/api/admin"}}}},
        {"or_rules": {"rules": [{"header": {"name": ":method", "string_match": {"exact": "GET"}}}, {"header": {"name": ":method", "string_match": {"exact": "HEAD"}}}]}},
        {"header": {"name": "x-tenant", "string_match": {"exact": "acme"}}},
    ]}}]


def test_allow_nothing_and_allow_all(tmp_path):
    """spec: {} is Istio's allow-nothing (an ALLOW with no rule: every request denied);
    rules: [{}] allows everything."""
    mesh = load_mesh(tmp_path, policy("nothing", "  {}\n"))
    [allow] = [f for f in http_filters(compiled(mesh, "server-1.default"), 8080) if f["name"] == "envoy.filters.http.rbac"]
    assert allow["typed_config"]["rules"] == {"action": "ALLOW", "policies": {}}
    mesh = load_mesh(tmp_path, policy("nothing", "  rules: [{}]\n"))
    [allow] = [f for f in http_filters(compiled(mesh, "server-1.default"), 8080) if f["name"] == "envoy.filters.http.rbac"]
    assert allow["typed_config"]["rules"]["policies"] == {"ns[default]-policy[nothing]-rule[0]": {"permissions": [{"any": True}], "principals": [{"any": True}]}}


def test_which_workloads_a_policy_applies_to(tmp_path):
    """Selector in its namespace; without selector the whole namespace; in istio-system every
    namespace; another namespace's policy never; the client's outbound listener never."""
    mesh = load_mesh(tmp_path, policy("root", "  action: DENY\n  rules: [{to: [{operation: {paths: [/root]}}]}]\n", "istio-system"),
                     policy("elsewhere", "  rules: [{}]\n", "shop"), ALLOW_CLIENT)
    server = compiled(mesh, "server-1.default")
    rbac = [f["typed_config"]["rules"] for f in http_filters(server, 8080) if f["name"] == "envoy.filters.http.rbac"]
    assert [(r["action"], sorted(r["policies"])) for r in rbac] == [
        ("DENY", ["ns[istio-system]-policy[root]-rule[0]"]), ("ALLOW", ["ns[default]-policy[allow-client]-rule[0]"]),
    ]
    client = compiled(mesh, "client.default")
    for listener in client.listeners:
        for chain in listener["filter_chains"]:
            assert "envoy.filters.http.rbac" not in [f["name"] for f in chain["filters"][-1]["typed_config"].get("http_filters", [])]


def test_permissive_listener_authorizes_both_chains(tmp_path):
    mesh = load_mesh(tmp_path, ALLOW_CLIENT)
    config = compiled(mesh, "server-1.default")
    assert http_filters(config, 8080, 0) == http_filters(config, 8080, 1)
    assert http_filters(config, 8080, 0)[0]["name"] == "envoy.filters.http.rbac"


def test_tcp_listener_gets_network_rbac_with_http_fields_handled_as_istio(tmp_path):
    """On TCP 9000: the ALLOW rule with methods/paths matches nothing (dropped), the DENY rule
    keeps only its port; both network filters come before the TCP proxy."""
    mesh = load_mesh(tmp_path, ALLOW_CLIENT, DENY_DELETE)
    filters = listener_on(compiled(mesh, "server-1.default"), 9000)["filter_chains"][0]["filters"]
    assert [f["name"] for f in filters] == ["envoy.filters.network.rbac", "envoy.filters.network.rbac", "envoy.filters.network.tcp_proxy"]
    deny, allow = filters[0]["typed_config"], filters[1]["typed_config"]
    assert deny["stat_prefix"] == "inbound_9000.deny" and allow["stat_prefix"] == "inbound_9000.allow"
    assert deny["rules"]["policies"]["ns[default]-policy[deny-delete]-rule[0]"]["permissions"] == [{"destination_port": 8080}]
    assert allow["rules"] == {"action": "ALLOW", "policies": {}}


def mesh_config(trust_domain: str, aliases: list[str]) -> str:
    return f"apiVersion: meshwright.io/v1alpha1\nkind: MeshConfig\nmetadata: {{name: mesh}}\nspec:\n  certificates: {{}}\n  trustDomain: {trust_domain}\n  trustDomainAliases: {aliases}\n"


TRUST_DOMAIN_POLICY = policy("td", """\
  selector: {matchLabels: {app: server}}
  action: DENY
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/frontend, old.example/ns/a/sa/b, other.example/ns/c/sa/d, "*/ns/e/sa/f", "*local/ns/g/sa/h"], notPrincipals: [example.org/ns/i/sa/j]}}]
  - when: [{key: source.principal, values: [cluster.local/ns/k/sa/l]}]
""")


def principal_names(matcher: dict) -> list:
    """The principal_name matchers in an Envoy principal, in order."""
    if "authenticated" in matcher:
        return [matcher["authenticated"]["principal_name"]]
    for key in ("or_ids", "and_ids"):
        if key in matcher:
            return [name for item in matcher[key]["ids"] for name in principal_names(item)]
    return principal_names(matcher["not_id"]) if "not_id" in matcher else []


def test_principals_in_the_mesh_trust_domains_match_in_all_of_them(tmp_path):
    """Istio's trust domain aliases: cluster.local, the trust domain and every alias mean the
    mesh's own, and each such principal matches in the trust domain and every alias; a
    principal elsewhere, or whose trust domain is '*', is kept as written; a wildcard trust
    domain that matches one is kept for it."""
    mesh = load_mesh(tmp_path, mesh_config("example.org", ["old.example", "cluster.local"]), TRUST_DOMAIN_POLICY, identity=False)
    [deny, *_] = http_filters(compiled(mesh, "server-1.default"), 8080)
    policies = deny["typed_config"]["rules"]["policies"]
    first = principal_names(policies["ns[default]-policy[td]-rule[0]"]["principals"][0])
    assert first == [
        {"exact": "spiffe://example.org/ns/default/sa/frontend"}, {"exact": "spiffe://old.example/ns/default/sa/frontend"},
        {"exact": "spiffe://cluster.local/ns/default/sa/frontend"},
        {"exact": "spiffe://example.org/ns/a/sa/b"}, {"exact": "spiffe://old.example/ns/a/sa/b"}, {"exact": "spiffe://cluster.local/ns/a/sa/b"},
        {"exact": "spiffe://other.example/ns/c/sa/d"},
        {"suffix": "/ns/e/sa/f"},
        {"exact": "spiffe://example.org/ns/g/sa/h"}, {"exact": "spiffe://old.example/ns/g/sa/h"}, {"suffix": "local/ns/g/sa/h"},
        {"exact": "spiffe://example.org/ns/i/sa/j"}, {"exact": "spiffe://old.example/ns/i/sa/j"}, {"exact": "spiffe://cluster.local/ns/i/sa/j"},
    ]
    second = principal_names(policies["ns[default]-policy[td]-rule[1]"]["principals"][0])
    assert second == [{"exact": f"spiffe://{td}/ns/k/sa/l"} for td in ("example.org", "old.example", "cluster.local")]


def test_cluster_local_means_the_mesh_trust_domain(tmp_path):
    """Without aliases, cluster.local in a principal is the mesh's trust domain (only)."""
    mesh = load_mesh(tmp_path, mesh_config("example.org", []), TRUST_DOMAIN_POLICY, identity=False)
    [deny, *_] = http_filters(compiled(mesh, "server-1.default"), 8080)
    names = principal_names(deny["typed_config"]["rules"]["policies"]["ns[default]-policy[td]-rule[1]"]["principals"][0])
    assert names == [{"exact": "spiffe://example.org/ns/k/sa/l"}]


def test_path_templates_become_envoy_uri_templates(tmp_path):
    """Istio's translation: a path with {*} or {**} is Envoy's URI template ({*} -> *,
    {**} -> **); other paths stay url_path matchers."""
    mesh = load_mesh(tmp_path, policy("templates", """\
  selector: {matchLabels: {app: server}}
  rules:
  - to: [{operation: {paths: ["/api/{*}/status", "/files/{**}", /healthz]}}]
"""))
    [allow] = [f for f in http_filters(compiled(mesh, "server-1.default"), 8080) if f["name"] == "envoy.filters.http.rbac"]
    rule = allow["typed_config"]["rules"]["policies"]["ns[default]-policy[templates]-rule[0]"]
    template = "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig"
    assert rule["permissions"] == [{"or_rules": {"rules": [
        {"uri_template": {"name": "uri-template", "typed_config": {"@type": template, "path_template": "/api/*/status"}}},
        {"uri_template": {"name": "uri-template", "typed_config": {"@type": template, "path_template": "/files/**"}}},
        {"url_path": {"path": {"exact": "/healthz"}}},
    ]}}]


SOURCES_AND_CONDITIONS = policy("by-address", """\
  selector: {matchLabels: {app: server}}
  action: DENY
  rules:
  - from:
    - source: {ipBlocks: [10.1.0.0/16, 10.2.3.4], notIpBlocks: [10.1.2.0/24]}
    - source: {remoteIpBlocks: ["fd00::/8"], notRemoteIpBlocks: [10.9.9.9]}
    - source: {serviceAccounts: [client, shop/web], notServiceAccounts: [default/server]}
    to: [{operation: {hosts: [Orders.example, "*.example.org", "api.example:*"], notHosts: ["*"]}}]
    when:
    - {key: source.ip, values: [10.3.0.0/16]}
    - {key: remote.ip, notValues: [10.4.0.1]}
    - {key: destination.ip, values: [10.0.0.1]}
    - {key: connection.sni, values: ["*.svc.cluster.local"]}
    - {key: source.serviceAccount, values: [client]}
""")


def by_address_policy(config, port: int) -> dict:
    filters = listener_on(config, port)["filter_chains"][0]["filters"]
    if port == 9000:
        return filters[0]["typed_config"]["rules"]["policies"]["ns[default]-policy[by-address]-rule[0]"]
    return filters[-1]["typed_config"]["http_filters"][0]["typed_config"]["rules"]["policies"]["ns[default]-policy[by-address]-rule[0]"]


def test_addresses_service_accounts_hosts_and_conditions(tmp_path):
    """As Istio: ipBlocks and source.ip are the peer's address (direct_remote_ip), remoteIpBlocks
    and remote.ip the original client's (remote_ip), a lone address is a /32 (/128); service
    accounts are NAME (in the policy's namespace) or NAMESPACE/NAME inside the SPIFFE ID of any
    trust domain; hosts match :authority ignoring case; destination.ip and connection.sni
    are the connection's."""
    mesh = load_mesh(tmp_path, SOURCES_AND_CONDITIONS)
    envoy_policy = by_address_policy(compiled(mesh, "server-1.default"), 8080)
    account = "spiffe://.+/ns/{}/(.+/|)sa/{}(/.+)?"
    assert envoy_policy["principals"] == [{"and_ids": {"ids": [
        {"or_ids": {"ids": [
            {"and_ids": {"ids": [
                {"or_ids": {"ids": [{"direct_remote_ip": {"address_prefix": "10.1.0.0", "prefix_len": 16}}, {"direct_remote_ip": {"address_prefix": "10.2.3.4", "prefix_len": 32}}]}},
                {"not_id": {"direct_remote_ip": {"address_prefix": "10.1.2.0", "prefix_len": 24}}},
            ]}},
            {"and_ids": {"ids": [
                {"remote_ip": {"address_prefix": "fd00::", "prefix_len": 8}},
                {"not_id": {"remote_ip": {"address_prefix": "10.9.9.9", "prefix_len": 32}}},
            ]}},
            {"and_ids": {"ids": [
                {"or_ids": {"ids": [
                    {"authenticated": {"principal_name": {"safe_regex": {"regex": account.format("default", "client")}}}},
                    {"authenticated": {"principal_name": {"safe_regex": {"regex": account.format("shop", "web")}}}},
                ]}},
                {"not_id": {"authenticated": {"principal_name": {"safe_regex": {"regex": account.format("default", "server")}}}}},
            ]}},
        ]}},
        {"direct_remote_ip": {"address_prefix": "10.3.0.0", "prefix_len": 16}},
        {"not_id": {"remote_ip": {"address_prefix": "10.4.0.1", "prefix_len": 32}}},
        {"authenticated": {"principal_name": {"safe_regex": {"regex": account.format("default", "client")}}}},
    ]}}]
    assert envoy_policy["permissions"] == [{"and_rules": {"rules": [
        {"or_rules": {"rules": [
            {"header": {"name": ":authority", "string_match": {"exact": "Orders.example", "ignore_case": True}}},
            {"header": {"name": ":authority", "string_match": {"suffix": ".example.org", "ignore_case": True}}},
            {"header": {"name": ":authority", "string_match": {"prefix": "api.example:", "ignore_case": True}}},
        ]}},
        {"not_rule": {"header": {"name": ":authority", "present_match": True}}},
        {"destination_ip": {"address_prefix": "10.0.0.1", "prefix_len": 32}},
        {"requested_server_name": {"suffix": ".svc.cluster.local"}},
    ]}}]


def test_hosts_are_http_only_and_addresses_work_on_tcp(tmp_path):
    """On TCP 9000 the DENY rule loses its hosts (it denies more, as Istio) and keeps every
    address, service account, destination.ip and SNI matcher; an ALLOW rule with hosts
    matches nothing there."""
    allow_hosts = policy("allow-hosts", "  selector: {matchLabels: {app: server}}\n  rules:\n  - to: [{operation: {hosts: [orders.example]}}]\n")
    mesh = load_mesh(tmp_path, SOURCES_AND_CONDITIONS, allow_hosts)
    config = compiled(mesh, "server-1.default")
    http_policy, tcp_policy = by_address_policy(config, 8080), by_address_policy(config, 9000)
    assert tcp_policy["principals"] == http_policy["principals"]
    assert tcp_policy["permissions"] == [{"and_rules": {"rules": [
        {"destination_ip": {"address_prefix": "10.0.0.1", "prefix_len": 32}},
        {"requested_server_name": {"suffix": ".svc.cluster.local"}},
    ]}}]
    allow = listener_on(config, 9000)["filter_chains"][0]["filters"][1]["typed_config"]
    assert allow["rules"] == {"action": "ALLOW", "policies": {}}
