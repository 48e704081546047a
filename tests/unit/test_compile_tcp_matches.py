"""VirtualService tcp routes' matches as Istio's matchTCP reads them: a route applies where one
of its matches has every given field hold: port, gateways ("mesh" for sidecars, a gateway by
name), the client's sourceLabels and sourceNamespace. At sidecars (explicit TCP listeners)
and at a gateway's TCP server."""

from __future__ import annotations

import textwrap

from meshwright.check.pipeline import validate_mesh
from meshwright.compile.build import compile_proxy
from meshwright.compile.proxy import find_proxy
from meshwright.model.load import load_paths

MESH = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: shop}
spec:
  hosts: [db.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  endpoints: [{address: 10.0.5.1, labels: {version: v1}}, {address: 10.0.5.2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: shop}
spec:
  host: db.shop.svc.cluster.local
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  egress:
  - port: {number: 7432, protocol: TCP, name: tcp}
    hosts: ["./db.shop.svc.cluster.local"]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: other}
spec:
  egress:
  - port: {number: 7432, protocol: TCP, name: tcp}
    hosts: ["shop/db.shop.svc.cluster.local"]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reports, namespace: shop}
spec: {address: 10.0.1.1, labels: {app: reports}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: orders, namespace: shop}
spec: {address: 10.0.1.2, labels: {app: orders}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: audit, namespace: other}
spec: {address: 10.0.1.3, labels: {app: reports}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: db-gateway, namespace: shop}
spec:
  selector: {istio: dbgateway}
  servers:
  - port: {number: 15432, name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: dbgateway, namespace: shop}
spec: {address: 10.0.9.1, labels: {istio: dbgateway}}
"""

V1, V2 = "outbound|5432|v1|db.shop.svc.cluster.local", "outbound|5432|v2|db.shop.svc.cluster.local"
PLAIN = "outbound|5432||db.shop.svc.cluster.local"


def validate(tmp_path, tcp: str, gateways: str = "[mesh, db-gateway]"):
    virtual_service = f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db, namespace: shop}}
spec:
  hosts: [db.shop.svc.cluster.local]
  gateways: {gateways}
  tcp:
{textwrap.indent(textwrap.dedent(tcp), "  ")}"""
    (tmp_path / "mesh.yaml").write_text(MESH + "---\n" + virtual_service)
    return validate_mesh(load_paths([str(tmp_path / "mesh.yaml")]))


def load(tmp_path, tcp: str):
    mesh, problems = validate(tmp_path, tcp)
    assert not problems, "\n".join(str(p) for p in problems)
    return mesh


def tcp_cluster(mesh, proxy_id: str, port: int = 7432) -> str:
    config = compile_proxy(mesh, find_proxy(mesh, proxy_id))
    listener = next(listener for listener in config.listeners if listener["name"].endswith(f"_{port}"))
    return listener["filter_chains"][0]["filters"][0]["typed_config"]["cluster"]


def test_source_labels_pick_the_clients_a_route_applies_to(tmp_path):
    mesh = load(tmp_path, """\
        - match: [{sourceLabels: {app: reports}}]
          route: [{destination: {host: db.shop.svc.cluster.local, subset: v2}}]
        - route: [{destination: {host: db.shop.svc.cluster.local, subset: v1}}]
        """)
    assert (tcp_cluster(mesh, "reports.shop"), tcp_cluster(mesh, "orders.shop")) == (V2, V1)


def test_source_namespace_picks_the_clients_namespace(tmp_path):
    mesh = load(tmp_path, """\
        - match: [{sourceNamespace: other}]
          route: [{destination: {host: db.shop.svc.cluster.local, subset: v2}}]
        """)
    assert (tcp_cluster(mesh, "audit.other"), tcp_cluster(mesh, "reports.shop")) == (V2, PLAIN)


def test_gateways_in_a_match_split_sidecars_from_the_gateway(tmp_path):
    mesh = load(tmp_path, """\
        - match: [{gateways: [db-gateway], port: 15432}]
          route: [{destination: {host: db.shop.svc.cluster.local, subset: v2}}]
        - match: [{gateways: [mesh]}]
          route: [{destination: {host: db.shop.svc.cluster.local, subset: v1}}]
        """)
    assert tcp_cluster(mesh, "dbgateway.shop", 15432) == V2
    assert tcp_cluster(mesh, "orders.shop") == V1


def test_every_field_of_a_match_must_hold(tmp_path):
    """Unlike an HTTP match, naming gateways does not set sourceLabels aside."""
    mesh = load(tmp_path, """\
        - match: [{gateways: [mesh], sourceLabels: {app: reports}}]
          route: [{destination: {host: db.shop.svc.cluster.local, subset: v2}}]
        """)
    assert (tcp_cluster(mesh, "reports.shop"), tcp_cluster(mesh, "orders.shop")) == (V2, PLAIN)


def test_a_match_naming_a_gateway_the_virtual_service_is_not_bound_to_is_refused(tmp_path):
    _, problems = validate(tmp_path, """\
        - match: [{gateways: [db-gateway]}]
          route: [{destination: {host: db.shop.svc.cluster.local}}]
        """, gateways="[mesh]")
    assert [str(p).split(": ", 1)[1] for p in problems] == [
        "VirtualService/shop/db: spec.tcp[0].match[0].gateways[0]: 'db-gateway' is not among the gateways this VirtualService is "
        "bound to (mesh): add it to spec.gateways, or leave it out of the match"
    ]


def test_destination_subnets_are_refused_with_what_to_do_instead(tmp_path):
    _, problems = validate(tmp_path, """\
        - match: [{destinationSubnets: [10.0.0.0/8]}]
          route: [{destination: {host: db.shop.svc.cluster.local}}]
        """)
    assert len(problems) == 1 and "spec.tcp[0].match[0].destinationSubnets: destinationSubnets is not supported by meshwright yet (match by port" in str(problems[0])
