"""iptables capture (interceptionMode REDIRECT): which proxies capture, the VIPs apps reach
services at, what the host's rules need, the listeners Envoy gets, and the mistakes
validation names before anything is rendered."""

from __future__ import annotations

import textwrap

import pytest

from meshwright.check.pipeline import validate_mesh
from meshwright.compile.build import compile_proxy
from meshwright.compile.capture import capture_settings, checked_host_names, service_addresses
from meshwright.compile.proxy import find_proxy
from meshwright.model.load import load_paths
from tests.unit.validation_cases import Case, check_case

MESH = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: payments, namespace: shop}
spec:
  hosts: [payments.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: payments}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: audit, namespace: shop}
spec:
  hosts: [audit.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.5.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: shop}
spec:
  hosts: [db.shop.svc.cluster.local]
  addresses: [240.240.0.1]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  endpoints: [{address: 10.0.9.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: anything, namespace: shop}
spec:
  hosts: ["*.example.com"]
  location: MESH_EXTERNAL
  resolution: NONE
  ports: [{number: 443, name: tls, protocol: TCP}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: orders
  namespace: shop
  annotations: {sidecar.istio.io/interceptionMode: REDIRECT}
spec: {address: 10.0.1.1, labels: {app: orders}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: payments-1, namespace: shop}
spec: {address: 10.0.2.1, labels: {app: payments}}
"""


def load(tmp_path, *extra: str):
    (tmp_path / "mesh.yaml").write_text("---\n".join([MESH, *[textwrap.dedent(text) for text in extra]]))
    mesh, problems = validate_mesh(load_paths([str(tmp_path / "mesh.yaml")]))
    assert not problems, "\n".join(str(p) for p in problems)
    return mesh


def listeners_of(mesh, proxy_id: str) -> dict[str, dict]:
    return {listener["name"]: listener for listener in compile_proxy(mesh, find_proxy(mesh, proxy_id)).listeners}


def test_vips_are_given_addresses_else_allocated_in_hostname_order_skipping_taken_ones(tmp_path):
    mesh = load(tmp_path)
    # db keeps its own address; audit and payments (in hostname order) get the next free
    # ones of 240.240.0.0/16; the wildcard host gets none (its traffic passes through).
    assert service_addresses(mesh) == {
        "db.shop.svc.cluster.local": "240.240.0.1",
        "audit.shop.svc.cluster.local": "240.240.0.2",
        "payments.shop.svc.cluster.local": "240.240.0.3",
    }


def test_allocation_skips_addresses_ending_in_0_and_255(tmp_path):
    services = "\n---\n".join(
        f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: s{i:03d}, namespace: shop}}
spec:
  hosts: [s{i:03d}.shop.svc.cluster.local]
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 10.1.0.1}}]""" for i in range(260))
    addresses = set(service_addresses(load(tmp_path, services)).values())
    assert "240.240.0.255" not in addresses and "240.240.1.0" not in addresses
    assert "240.240.1.1" in addresses and len(addresses) == 263


def test_only_proxies_that_capture_get_capture_settings(tmp_path):
    mesh = load(tmp_path)
    assert capture_settings(mesh, find_proxy(mesh, "payments-1.shop")) is None
    settings = capture_settings(mesh, find_proxy(mesh, "orders.shop"))
    assert settings == {
        "mode": "REDIRECT",
        "outbound_port": 15001,
        "inbound_port": 15006,
        "exclude_inbound_ports": [15000, 15001, 15006, 15021, 15090],
        # Each FQDN, and the names Kubernetes DNS search paths resolve for an app in the
        # proxy's namespace (shop): <name>.shop.svc, <name>.shop and <name>.
        "hosts": {
            "audit": "240.240.0.2",
            "audit.shop": "240.240.0.2",
            "audit.shop.svc": "240.240.0.2",
            "audit.shop.svc.cluster.local": "240.240.0.2",
            "db": "240.240.0.1",
            "db.shop": "240.240.0.1",
            "db.shop.svc": "240.240.0.1",
            "db.shop.svc.cluster.local": "240.240.0.1",
            "payments": "240.240.0.3",
            "payments.shop": "240.240.0.3",
            "payments.shop.svc": "240.240.0.3",
            "payments.shop.svc.cluster.local": "240.240.0.3",
        },
    }


def test_short_names_only_for_the_proxys_namespace_and_never_over_a_hostname(tmp_path):
    mesh = load(tmp_path, CAPTURING_CLIENT, """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: legacy-db, namespace: default}
        spec:
          hosts: [db.shop]
          location: MESH_EXTERNAL
          resolution: STATIC
          ports: [{number: 5432, name: tcp, protocol: TCP}]
          endpoints: [{address: 10.0.9.2}]
        """)
    hosts = capture_settings(mesh, find_proxy(mesh, "capturer.default"))["hosts"]
    # From namespace default, shop's services answer to <name>.shop(.svc) but not <name>.
    assert hosts["payments.shop"] == hosts["payments.shop.svc"] == hosts["payments.shop.svc.cluster.local"]
    assert "payments" not in hosts and "audit" not in hosts
    # A service whose hostname is db.shop keeps that name; db.shop.svc.cluster.local keeps its own.
    assert hosts["db.shop"] != hosts["db.shop.svc.cluster.local"]
    assert hosts["db.shop"] == service_addresses(mesh)["db.shop"]


def test_capturing_sidecar_listens_on_15001_and_15006_and_hands_over_by_destination(tmp_path):
    listeners = listeners_of(load(tmp_path), "orders.shop")
    assert sorted(listeners) == ["0.0.0.0_80", "240.240.0.1_5432", "virtualInbound", "virtualOutbound"]
    outbound = listeners["virtualOutbound"]
    assert outbound["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 15001}
    assert outbound["use_original_dst"] is True
    assert outbound["filter_chains"][-1]["filters"][0]["typed_config"]["cluster"] == "PassthroughCluster"
    # The per-destination listeners bind nothing: only virtualOutbound's hand-over reaches them.
    assert listeners["0.0.0.0_80"]["bind_to_port"] is False
    assert listeners["240.240.0.1_5432"]["bind_to_port"] is False
    inbound = listeners["virtualInbound"]
    assert inbound["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 15006}
    assert inbound["listener_filters"][0]["name"] == "envoy.filters.listener.original_dst"


MONGO_RANGE = """
    apiVersion: networking.istio.io/v1
    kind: ServiceEntry
    metadata: {name: external-svc-mongocluster, namespace: shop}
    spec:
      hosts: [mymongodb.somedomain]
      addresses: [192.192.192.192/24]
      ports: [{number: 27018, name: mongodb, protocol: MONGO}]
      location: MESH_EXTERNAL
      resolution: STATIC
      endpoints: [{address: 2.2.2.2}, {address: 3.3.3.3}]
    """


def test_a_cidr_range_picks_a_tcp_ports_traffic_by_destination(tmp_path):
    """Istio's external MongoDB example, but TCP: any address of 192.192.192.0/24 on 27018 is
    the service's (a prefix match in 0.0.0.0_27018); other destinations on that port go where
    the unknown go. A range is no VIP: no name maps to it."""
    mesh = load(tmp_path, MONGO_RANGE.replace("protocol: MONGO", "protocol: tcp"))
    listeners = listeners_of(mesh, "orders.shop")
    assert "mymongodb.somedomain" not in service_addresses(mesh)
    assert "mymongodb.somedomain" not in capture_settings(mesh, find_proxy(mesh, "orders.shop"))["hosts"]
    ranged = listeners["0.0.0.0_27018"]
    assert ranged["bind_to_port"] is False
    first, rest = ranged["filter_chains"]
    assert first["filter_chain_match"] == {"prefix_ranges": [{"address_prefix": "192.192.192.0", "prefix_len": 24}]}
    assert first["filters"][0]["typed_config"]["cluster"] == "outbound|27018||mymongodb.somedomain"
    assert "filter_chain_match" not in rest and rest["filters"][0]["typed_config"]["cluster"] == "PassthroughCluster"


def test_a_range_on_an_http_port_joins_that_ports_listener_and_extra_addresses_are_ranges(tmp_path):
    mesh = load(tmp_path, """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: legacy, namespace: shop}
        spec:
          hosts: [legacy.shop.svc.cluster.local]
          addresses: [10.200.0.0/16, 240.240.9.9, 10.201.0.7]
          ports: [{number: 80, name: tcp, protocol: TCP}]
          location: MESH_INTERNAL
          resolution: STATIC
          endpoints: [{address: 10.0.7.1}]
        """)
    listeners = listeners_of(mesh, "orders.shop")
    # The VIP is the first single address; the range and the address after it pick by destination.
    assert service_addresses(mesh)["legacy.shop.svc.cluster.local"] == "240.240.9.9"
    assert "240.240.9.9_80" in listeners
    http, legacy = listeners["0.0.0.0_80"]["filter_chains"]
    assert "filter_chain_match" not in http  # payments and audit, by Host: the rest of the port
    assert legacy["filter_chain_match"]["prefix_ranges"] == [
        {"address_prefix": "10.200.0.0", "prefix_len": 16}, {"address_prefix": "10.201.0.7", "prefix_len": 32}]


def test_two_services_cannot_claim_one_range_on_one_tcp_port(tmp_path):
    check_case(tmp_path, Case(
        "one range, two services",
        """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: mongo-b, namespace: shop}
        spec:
          hosts: [other-mongo.example.com]
          addresses:
          - 192.192.192.7/24  #!
          ports: [{number: 27018, name: tcp, protocol: TCP}]
          location: MESH_EXTERNAL
          resolution: NONE
        """,
        "ServiceEntry/shop/mongo-b", "spec.addresses[0]",
        ("192.192.192.0/24 on TCP port 27018 already belongs to ServiceEntry/shop/external-svc-mongocluster",),
    ), base=MESH + "---\n" + textwrap.dedent(MONGO_RANGE).replace("MONGO", "TCP"))


@pytest.mark.parametrize("offset", [0, 200])
def test_a_connection_to_a_capture_port_itself_goes_to_the_black_hole(tmp_path, offset):
    """Istio's virtualOutbound-blackhole and virtualInbound-blackhole: a connection whose original
    destination is the capture port (made to it directly, not redirected) would otherwise be
    passed through to that same port again, in a loop. With a port offset, the offset ports."""
    annotation = f', meshwright.io/port-offset: "{offset}"' if offset else ""
    mesh = load(tmp_path) if not offset else load(tmp_path, f"""
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata:
          name: orders-2
          namespace: shop
          annotations: {{sidecar.istio.io/interceptionMode: REDIRECT{annotation}}}
        spec: {{address: 10.0.1.2, labels: {{app: orders}}}}
        """)
    listeners = listeners_of(mesh, "orders-2.shop" if offset else "orders.shop")
    for name, port in (("virtualOutbound", 15001 + offset), ("virtualInbound", 15006 + offset)):
        chains = listeners[name]["filter_chains"]
        black_hole = [chain for chain in chains if chain.get("filter_chain_match", {}).get("destination_port") == port]
        assert [chain["name"] for chain in black_hole] == [f"{name}-blackhole"]
        assert black_hole[0]["filters"][0]["typed_config"]["cluster"] == "BlackHoleCluster"
    assert "BlackHoleCluster" in {cluster["name"] for cluster in compile_proxy(mesh, find_proxy(mesh, "orders.shop")).clusters}


def test_a_sidecar_without_the_annotation_keeps_its_explicit_listener(tmp_path):
    assert sorted(listeners_of(load(tmp_path), "payments-1.shop")) == ["127.0.0.1_15001"]


def test_http_routes_on_a_port_name_its_services_then_pass_the_rest_through(tmp_path):
    mesh = load(tmp_path)
    routes = {r["name"]: r for r in compile_proxy(mesh, find_proxy(mesh, "orders.shop")).routes}
    hosts = routes["80"]["virtual_hosts"]
    assert [h["name"] for h in hosts] == ["audit.shop.svc.cluster.local:80", "payments.shop.svc.cluster.local:80", "allow_any"]
    assert hosts[-1]["routes"][0]["route"]["cluster"] == "PassthroughCluster"


def test_registry_only_sends_unknown_destinations_to_the_black_hole(tmp_path):
    mesh = load(tmp_path, """
        apiVersion: meshwright.io/v1alpha1
        kind: MeshConfig
        metadata: {name: mesh}
        spec:
          outboundTrafficPolicy: {mode: REGISTRY_ONLY}
        """)
    config = compile_proxy(mesh, find_proxy(mesh, "orders.shop"))
    outbound = next(listener for listener in config.listeners if listener["name"] == "virtualOutbound")
    assert outbound["filter_chains"][-1]["filters"][0]["typed_config"]["cluster"] == "BlackHoleCluster"
    last_host = next(r for r in config.routes if r["name"] == "80")["virtual_hosts"][-1]
    assert last_host["routes"][0]["direct_response"] == {"status": 502}


def unknown_destinations(mesh, proxy_id: str) -> tuple[str, dict]:
    """(cluster of virtualOutbound's catch-all chain, the route of port 80's last virtual host)."""
    config = compile_proxy(mesh, find_proxy(mesh, proxy_id))
    outbound = next(listener for listener in config.listeners if listener["name"] == "virtualOutbound")
    last_host = next(r for r in config.routes if r["name"] == "80")["virtual_hosts"][-1]
    return outbound["filter_chains"][-1]["filters"][0]["typed_config"]["cluster"], last_host["routes"][0]


SECOND_CAPTURING_CLIENT = """
    apiVersion: networking.istio.io/v1
    kind: WorkloadEntry
    metadata:
      name: reports
      namespace: shop
      annotations: {sidecar.istio.io/interceptionMode: REDIRECT}
    spec: {address: 10.0.1.2, labels: {app: reports}}
    """


def test_a_sidecars_outbound_traffic_policy_overrides_the_mesh_for_its_workloads(tmp_path):
    """The mesh allows any destination; a Sidecar selecting orders makes it REGISTRY_ONLY,
    and reports (same namespace, not selected) keeps the mesh's ALLOW_ANY."""
    mesh = load(tmp_path, SECOND_CAPTURING_CLIENT, """
        apiVersion: meshwright.io/v1alpha1
        kind: MeshConfig
        metadata: {name: mesh}
        spec: {outboundTrafficPolicy: {mode: ALLOW_ANY}}
        """, """
        apiVersion: networking.istio.io/v1
        kind: Sidecar
        metadata: {name: orders, namespace: shop}
        spec:
          workloadSelector: {labels: {app: orders}}
          outboundTrafficPolicy: {mode: REGISTRY_ONLY}
        """)
    cluster, route = unknown_destinations(mesh, "orders.shop")
    assert cluster == "BlackHoleCluster" and route["direct_response"] == {"status": 502}
    cluster, route = unknown_destinations(mesh, "reports.shop")
    assert cluster == "PassthroughCluster" and route["route"]["cluster"] == "PassthroughCluster"


def test_a_namespaces_sidecar_may_allow_any_where_the_mesh_is_registry_only(tmp_path):
    mesh = load(tmp_path, """
        apiVersion: meshwright.io/v1alpha1
        kind: MeshConfig
        metadata: {name: mesh}
        spec: {outboundTrafficPolicy: {mode: REGISTRY_ONLY}}
        """, """
        apiVersion: networking.istio.io/v1
        kind: Sidecar
        metadata: {name: default, namespace: shop}
        spec: {outboundTrafficPolicy: {mode: ALLOW_ANY}}
        """)
    assert unknown_destinations(mesh, "orders.shop")[0] == "PassthroughCluster"


def test_an_outbound_traffic_policy_no_capturing_proxy_reads_is_a_warning(tmp_path):
    (tmp_path / "mesh.yaml").write_text("---\n".join([MESH, textwrap.dedent("""
        apiVersion: networking.istio.io/v1
        kind: Sidecar
        metadata: {name: payments, namespace: shop}
        spec:
          workloadSelector: {labels: {app: payments}}
          outboundTrafficPolicy: {mode: REGISTRY_ONLY}
        """)]))
    mesh, problems = validate_mesh(load_paths([str(tmp_path / "mesh.yaml")]))
    assert problems == [] and [p.severity for p in mesh.warnings] == ["warning"]
    assert "Sidecar/shop/payments: spec.outboundTrafficPolicy: warning: no proxy of this Sidecar captures with iptables" in str(mesh.warnings[0])


def test_a_sidecars_outbound_traffic_policy_names_its_mode(tmp_path):
    """Istio's enum reads a missing mode as REGISTRY_ONLY, the opposite of the mesh's default: never guessed."""
    (tmp_path / "mesh.yaml").write_text("---\n".join([MESH, textwrap.dedent("""
        apiVersion: networking.istio.io/v1
        kind: Sidecar
        metadata: {name: default, namespace: shop}
        spec: {outboundTrafficPolicy: {}}
        """)]))
    _, problems = validate_mesh(load_paths([str(tmp_path / "mesh.yaml")]))
    assert len(problems) == 1 and "Sidecar/shop/default: spec.outboundTrafficPolicy" in str(problems[0]) and "mode" in problems[0].message


def test_inbound_chains_pick_the_app_by_original_destination_port(tmp_path):
    mesh = load(tmp_path, """
        apiVersion: networking.istio.io/v1
        kind: Sidecar
        metadata: {name: orders, namespace: shop}
        spec:
          workloadSelector: {labels: {app: orders}}
          ingress:
          - port: {number: 9080, protocol: HTTP, name: http}
            defaultEndpoint: 127.0.0.1:8080
        """)
    config = compile_proxy(mesh, find_proxy(mesh, "orders.shop"))
    chains, _ = inbound_of(mesh, "orders.shop")
    assert chains[0]["filter_chain_match"] == {"destination_port": 9080}
    assert chains[-1]["filters"][-1]["typed_config"]["cluster"] == "InboundPassthroughCluster"
    app = next(c for c in config.clusters if c["name"] == "inbound|9080||")
    assert app["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 8080}
    passthrough = next(c for c in config.clusters if c["name"] == "InboundPassthroughCluster")
    assert passthrough["upstream_bind_config"]["source_address"]["address"] == "127.0.0.6"


STOCK = """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: stock, namespace: shop}
        spec:
          hosts: [stock.shop.svc.cluster.local]
          location: MESH_INTERNAL
          resolution: STATIC
          ports:
          - {number: 80, name: http, protocol: HTTP}
          - {number: 6379, name: tcp-cache, protocol: TCP, targetPort: 6380}
          workloadSelector: {labels: {app: stock}}
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: stock-admin, namespace: shop}
        spec:
          hosts: [stock-admin.shop.svc.cluster.local]
          location: MESH_INTERNAL
          resolution: STATIC
          ports: [{number: 9000, name: grpc-admin, protocol: GRPC}]
          workloadSelector: {labels: {app: stock}}
        ---
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata:
          name: stock-1
          namespace: shop
          annotations: {sidecar.istio.io/interceptionMode: REDIRECT}
        spec: {address: 10.0.4.1, ports: {http: 8080}, labels: {app: stock}, serviceAccount: stock}
"""


IDENTITY = """
        apiVersion: meshwright.io/v1alpha1
        kind: MeshConfig
        metadata: {name: mesh}
        spec:
          certificates: {dir: ../certs}
"""


def inbound_of(mesh, proxy_id: str) -> tuple[list[dict], dict[str, dict]]:
    """virtualInbound's filter chains but its black hole chain, and the proxy's clusters by name."""
    config = compile_proxy(mesh, find_proxy(mesh, proxy_id))
    listener = next(listener for listener in config.listeners if listener["name"] == "virtualInbound")
    chains = [chain for chain in listener["filter_chains"] if chain.get("name") != "virtualInbound-blackhole"]
    return chains, {cluster["name"]: cluster for cluster in config.clusters}


def app_address(cluster: dict) -> dict:
    return cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]


def test_without_sidecar_ingress_inbound_chains_come_from_the_services_selecting_the_workload(tmp_path):
    mesh = load(tmp_path, STOCK)
    chains, clusters = inbound_of(mesh, "stock-1.shop")
    # Service port 80 reaches the WorkloadEntry's named port http (8080), 6379 its targetPort
    # 6380, 9000 (another service selecting it) itself; the app is on loopback at that port.
    ports = sorted({c["filter_chain_match"]["destination_port"] for c in chains if "destination_port" in c.get("filter_chain_match", {})})
    assert ports == [6380, 8080, 9000]
    for port in ports:
        assert app_address(clusters[f"inbound|{port}||"]) == {"address": "127.0.0.1", "port_value": port}
    by_port = {c["filter_chain_match"]["destination_port"]: c["filters"][-1] for c in chains if "destination_port" in c.get("filter_chain_match", {})}
    assert by_port[8080]["typed_config"]["rds"]["route_config_name"] == "inbound|8080||"
    assert by_port[6380]["typed_config"]["cluster"] == "inbound|6380||"
    # gRPC reaches its app over HTTP/2.
    assert "typed_extension_protocol_options" in clusters["inbound|9000||"]
    assert "typed_extension_protocol_options" not in clusters["inbound|8080||"]
    # Anything else still passes through.
    assert chains[-1]["filters"][-1]["typed_config"]["cluster"] == "InboundPassthroughCluster"


def test_derived_inbound_chains_follow_peer_authentication_and_authorization(tmp_path):
    mesh = load(tmp_path, STOCK, IDENTITY, """
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: stock, namespace: shop}
        spec:
          selector: {matchLabels: {app: stock}}
          mtls: {mode: STRICT}
          portLevelMtls: {6380: {mode: DISABLE}}
        ---
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: stock, namespace: shop}
        spec:
          selector: {matchLabels: {app: stock}}
          action: ALLOW
          rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/orders]}}]}]
        """)
    chains, _ = inbound_of(mesh, "stock-1.shop")
    on_port = {}
    for chain in chains:
        on_port.setdefault(chain.get("filter_chain_match", {}).get("destination_port"), []).append(chain)
    # STRICT: one chain, mTLS only; the port DISABLE'd: one plaintext chain.
    assert len(on_port[8080]) == 1 and on_port[8080][0]["transport_socket"]["name"] == "envoy.transport_sockets.tls"
    assert len(on_port[6380]) == 1 and "transport_socket" not in on_port[6380][0]
    # The AuthorizationPolicy guards both: an HTTP RBAC filter, a network one for TCP.
    http_filters = on_port[8080][0]["filters"][-1]["typed_config"]["http_filters"]
    assert "envoy.filters.http.rbac" in [f["name"] for f in http_filters]
    assert on_port[6380][0]["filters"][0]["name"] == "envoy.filters.network.rbac"


def test_clients_reach_a_capturing_workload_without_sidecar_ingress_with_auto_mtls(tmp_path):
    mesh = load(tmp_path, STOCK, IDENTITY)
    config = compile_proxy(mesh, find_proxy(mesh, "orders.shop"))
    cluster = next(c for c in config.clusters if c["name"] == "outbound|80||stock.shop.svc.cluster.local")
    assert cluster["transport_socket_matches"][0]["name"] == "tlsMode-istio"
    # payments-1 neither captures nor has Sidecar ingress: plaintext, as before.
    payments = next(c for c in config.clusters if c["name"] == "outbound|80||payments.shop.svc.cluster.local")
    assert "transport_socket_matches" not in payments


def test_sidecar_ingress_takes_precedence_over_the_services_ports(tmp_path):
    mesh = load(tmp_path, STOCK, """
        apiVersion: networking.istio.io/v1
        kind: Sidecar
        metadata: {name: stock, namespace: shop}
        spec:
          workloadSelector: {labels: {app: stock}}
          ingress:
          - port: {number: 8080, protocol: HTTP, name: http}
            defaultEndpoint: 127.0.0.1:3000
        """)
    chains, clusters = inbound_of(mesh, "stock-1.shop")
    ports = {c["filter_chain_match"]["destination_port"] for c in chains if "destination_port" in c.get("filter_chain_match", {})}
    assert ports == {8080}
    assert app_address(clusters["inbound|8080||"]) == {"address": "127.0.0.1", "port_value": 3000}
    assert "inbound|6380||" not in clusters


CAPTURING_CLIENT = """
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata:
          name: capturer
          namespace: default
          annotations: {sidecar.istio.io/interceptionMode: REDIRECT}
        spec: {address: 10.0.0.9, labels: {app: capturer}}
"""

CASES = [
    Case(
        "interceptionMode TPROXY",
        """
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata:
          name: capturer
          namespace: default
          annotations:
            sidecar.istio.io/interceptionMode: TPROXY  #!
        spec: {address: 10.0.0.9}
        """,
        "WorkloadEntry/default/capturer", "metadata.annotations.sidecar.istio.io/interceptionMode", ("'TPROXY'", "REDIRECT", "NONE"),
    ),
    Case(
        "interceptionMode on a gateway's workload",
        """
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata:
          name: edge
          namespace: default
          annotations:
            sidecar.istio.io/interceptionMode: REDIRECT  #!
        spec: {address: 10.0.0.8, labels: {istio: ingressgateway}}
        ---
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: edge, namespace: default}
        spec:
          selector: {istio: ingressgateway}
          servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
        """,
        "WorkloadEntry/default/edge", "metadata.annotations.sidecar.istio.io/interceptionMode", ("is a gateway", "only sidecars capture"),
    ),
    Case(
        "an egress port on a capturing sidecar",
        CAPTURING_CLIENT + """
        ---
        apiVersion: networking.istio.io/v1
        kind: Sidecar
        metadata: {name: capturer, namespace: default}
        spec:
          workloadSelector: {labels: {app: capturer}}
          egress:
          - port: {number: 9080, protocol: HTTP, name: http}  #!
            hosts: [./reviews.default.svc.cluster.local]
        """,
        "Sidecar/default/capturer", "spec.egress[0].port", ("capturer.default captures with iptables", "name hosts only"),
    ),
    Case(
        "an ingress port on the inbound capture port",
        CAPTURING_CLIENT + """
        ---
        apiVersion: networking.istio.io/v1
        kind: Sidecar
        metadata: {name: capturer, namespace: default}
        spec:
          workloadSelector: {labels: {app: capturer}}
          ingress:
          - port: {number: 15006, protocol: HTTP, name: http}  #!
            defaultEndpoint: 127.0.0.1:8080
        """,
        "Sidecar/default/capturer", "spec.ingress[0].port.number", ("port 15006 is the inbound capture port",),
    ),
    Case(
        "a service port served on the proxy's own port",
        """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: api, namespace: default}
        spec:
          hosts: [api.default.svc.cluster.local]
          resolution: STATIC
          ports: [{number: 80, name: http, protocol: HTTP}]
          workloadSelector: {labels: {app: capturer}}
        ---
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata:
          name: capturer
          namespace: default
          annotations: {sidecar.istio.io/interceptionMode: REDIRECT}
        spec:
          address: 10.0.0.9
          labels: {app: capturer}
          ports: {http: 15090}  #!
        """,
        "WorkloadEntry/default/capturer", "spec.ports", ("port 15090 is its stats port",),
    ),
    Case(
        "an IPv6 service address",
        """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: api, namespace: default}
        spec:
          hosts: [api.example.com]
          addresses:
          - "fd00::1"  #!
          resolution: DNS
          ports: [{number: 443, name: tls, protocol: TCP}]
        """,
        "ServiceEntry/default/api", "spec.addresses[0]", ("not an IPv4 address",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_capture_mistakes_are_named(tmp_path, case):
    check_case(tmp_path, case)


TWO_DATABASES = """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {{name: reports-db, namespace: shop}}
        spec:
          hosts: [reports-db.shop.svc.cluster.local]
          addresses: [{address}]
          location: MESH_EXTERNAL
          resolution: STATIC
          ports: [{{number: 5432, name: tcp, protocol: TCP}}]
          endpoints: [{{address: 10.0.9.3}}]
"""


def test_tcp_services_share_a_port_at_different_vips_but_not_at_one(tmp_path):
    mesh = load(tmp_path, TWO_DATABASES.format(address="240.240.9.9"))
    assert {"240.240.0.1_5432", "240.240.9.9_5432"} <= set(listeners_of(mesh, "orders.shop"))
    (tmp_path / "mesh.yaml").write_text("---\n".join([MESH, textwrap.dedent(TWO_DATABASES.format(address="240.240.0.1"))]))
    _, problems = validate_mesh(load_paths([str(tmp_path / "mesh.yaml")]))
    assert any("240.240.0.1:5432 clash" in str(problem) and "orders.shop" in str(problem) for problem in problems), problems


def test_host_names_for_etc_hosts_are_checked_again():
    """Validation refuses hosts with a newline or space; the /etc/hosts map checks them again
    (a name there must never become a second line), and a wildcard, which no resolver looks
    up, never gets there."""
    assert checked_host_names({"db.shop": "240.240.0.1"}) == {"db.shop": "240.240.0.1"}
    for bad in ("evil.example.com\n10.9.9.9 bank.example.com", "a b", "db.shop\n", ""):
        with pytest.raises(ValueError, match="refusing to map"):
            checked_host_names({bad: "240.240.0.1"})


WILDCARD_HTTPS = """
    apiVersion: networking.istio.io/v1
    kind: ServiceEntry
    metadata: {name: wikipedia, namespace: shop}
    spec:
      hosts: ["*.wikipedia.org"]
      location: MESH_EXTERNAL
      resolution: NONE
      ports: [{number: 443, name: https, protocol: HTTPS}, {number: 80, name: tls-on-80, protocol: TLS}]
    """


@pytest.mark.parametrize("policy, fallback", [("ALLOW_ANY", "PassthroughCluster"), ("REGISTRY_ONLY", "BlackHoleCluster")])
def test_tls_to_hosts_without_a_vip_is_told_apart_by_sni_on_the_ports_listener(tmp_path, policy, fallback):
    """Istio's wildcard egress: *.wikipedia.org (resolution NONE: no VIP) on 0.0.0.0_443 by
    SNI to its original destination; other connections there go where unknown ones go. On
    port 80, which HTTP services share, the SNI chain and a TLS fallback come before HTTP."""
    mesh = load(tmp_path, WILDCARD_HTTPS, f"""
        apiVersion: meshwright.io/v1alpha1
        kind: MeshConfig
        metadata: {{name: mesh}}
        spec: {{outboundTrafficPolicy: {{mode: {policy}}}}}
        """)
    listeners = listeners_of(mesh, "orders.shop")
    chains = listeners["0.0.0.0_443"]["filter_chains"]
    assert [c.get("filter_chain_match") for c in chains] == [{"server_names": ["*.wikipedia.org"]}, None]
    assert [c["filters"][0]["typed_config"]["cluster"] for c in chains] == ["outbound|443||*.wikipedia.org", fallback]
    assert listeners["0.0.0.0_443"]["listener_filters"][0]["name"] == "envoy.filters.listener.tls_inspector"
    on_80 = listeners["0.0.0.0_80"]["filter_chains"]
    assert [c.get("filter_chain_match") for c in on_80] == [{"server_names": ["*.wikipedia.org"]}, {"transport_protocol": "tls"}, None]
    assert on_80[1]["filters"][0]["typed_config"]["cluster"] == fallback
    assert on_80[2]["filters"][0]["name"] == "envoy.filters.network.http_connection_manager"
