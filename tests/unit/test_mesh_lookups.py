"""Host lookups the compiler makes per service: which DestinationRule and which VirtualService
apply to a host, and which services a Sidecar's egress hosts import.

Istio's order for DestinationRules: a rule for the exact host first, then the most specific
wildcard ("*.ns.svc.cluster.local" before "*.svc.cluster.local" before "*"); among rules for
the same host, the one in the client's namespace. Sidecars use the VirtualService (without
gateways, or with "mesh") that names the host. The lookups go through indexes built once per
Mesh; these tests pin them to a plain scan over every resource with host_matches, the
definition they replace.
"""

from __future__ import annotations

import gc
import itertools
import random

import pytest

from meshwright.compile.build import compile_proxy
from meshwright.compile.proxy import find_proxy
from meshwright.compile.scope import services_for_hosts
from meshwright.mesh import Mesh, host_matches, host_patterns, resolve_host
from meshwright.model.resource import Resource, Source


def resource(kind: str, name: str, namespace: str, spec: dict) -> Resource:
    metadata = {"name": name, "namespace": namespace}
    return Resource("networking.istio.io/v1", kind, name, namespace, metadata, spec, Source(f"{kind}.yaml", 1))


def service_entry(name: str, namespace: str, host: str) -> Resource:
    return resource("ServiceEntry", name, namespace, {
        "hosts": [host], "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
        "resolution": "STATIC", "endpoints": [{"address": "10.0.0.1"}],
    })


def rule(name: str, namespace: str, host: str) -> Resource:
    return resource("DestinationRule", name, namespace, {"host": host})


def scanned_destination_rule(mesh: Mesh, hostname: str, namespace: str) -> Resource | None:
    """The definition: every rule whose host matches, exact before wildcard, longer wildcard
    before shorter, the client's namespace first, then by namespace and name."""
    candidates = []
    for candidate in mesh.of_kind("DestinationRule"):
        host = resolve_host(candidate.spec["host"], candidate.namespace)
        if host_matches(host, hostname):
            key = (host != hostname, -len(host), candidate.namespace != namespace, candidate.namespace, candidate.name)
            candidates.append((key, candidate))
    return min(candidates, key=lambda c: c[0])[1] if candidates else None


def test_host_patterns_are_every_pattern_that_matches_most_specific_first():
    assert host_patterns("reviews.default.svc.cluster.local") == (
        "reviews.default.svc.cluster.local", "*.default.svc.cluster.local", "*.svc.cluster.local", "*.cluster.local", "*.local", "*",
    )
    assert host_patterns("*.example.com") == ("*.example.com", "*.com", "*")
    for pattern in ("*", "*.com", "*.example.com", "api.example.com", "*.api.example.com", "example.com"):
        assert host_matches(pattern, "api.example.com") == (pattern in host_patterns("api.example.com"))


def test_exact_host_wins_over_a_wildcard_in_the_clients_namespace():
    mesh = Mesh.build([
        rule("reviews", "default", "reviews.default.svc.cluster.local"),
        rule("all", "client", "*.svc.cluster.local"),
    ])
    assert mesh.destination_rule_for("reviews.default.svc.cluster.local", "client").name == "reviews"


def test_most_specific_wildcard_wins():
    mesh = Mesh.build([
        rule("everything", "istio-system", "*"),
        rule("cluster", "istio-system", "*.svc.cluster.local"),
        rule("namespace", "istio-system", "*.default.svc.cluster.local"),
    ])
    assert mesh.destination_rule_for("reviews.default.svc.cluster.local", "default").name == "namespace"
    assert mesh.destination_rule_for("ratings.other.svc.cluster.local", "default").name == "cluster"
    assert mesh.destination_rule_for("api.example.com", "default").name == "everything"


def test_a_rule_in_the_clients_namespace_wins_over_one_elsewhere():
    mesh = Mesh.build([
        rule("a-first", "aaa", "reviews.default.svc.cluster.local"),
        rule("in-client", "client", "reviews.default.svc.cluster.local"),
    ])
    assert mesh.destination_rule_for("reviews.default.svc.cluster.local", "client").name == "in-client"
    assert mesh.destination_rule_for("reviews.default.svc.cluster.local", "other").name == "a-first"


def test_short_hosts_resolve_in_the_rules_namespace_and_unmatched_hosts_have_no_rule():
    mesh = Mesh.build([rule("reviews", "shop", "reviews")])
    assert mesh.destination_rule_for("reviews.shop.svc.cluster.local", "default").name == "reviews"
    assert mesh.destination_rule_for("reviews.default.svc.cluster.local", "default") is None


def test_destination_rule_lookup_agrees_with_a_scan_over_every_rule():
    namespaces = ["default", "shop", "istio-system"]
    hosts = ["reviews", "ratings.shop.svc.cluster.local", "*.shop.svc.cluster.local", "*.svc.cluster.local",
             "*.cluster.local", "*", "api.example.com", "*.example.com", "reviews.default.svc.cluster.local"]
    generator = random.Random(7)
    rules = [rule(f"r{index}", generator.choice(namespaces), generator.choice(hosts)) for index in range(40)]
    mesh = Mesh.build(rules)
    hostnames = ["reviews.default.svc.cluster.local", "reviews.shop.svc.cluster.local", "ratings.shop.svc.cluster.local",
                 "details.other.svc.cluster.local", "api.example.com", "www.example.com", "example.com", "*.example.com", "localhost"]
    for hostname, namespace in itertools.product(hostnames, namespaces + ["elsewhere"]):
        assert mesh.destination_rule_for(hostname, namespace) is scanned_destination_rule(mesh, hostname, namespace), (hostname, namespace)


def test_sidecars_use_the_virtual_service_that_names_the_host_and_not_gateway_only_ones():
    def virtual_service(name, hosts, gateways=None):
        spec = {"hosts": hosts, "http": [{"route": [{"destination": {"host": hosts[0]}}]}]}
        if gateways is not None:
            spec["gateways"] = gateways
        return resource("VirtualService", name, "default", spec)

    mesh = Mesh.build([
        virtual_service("a-gateway-only", ["reviews"], ["ingress"]),
        virtual_service("b-reviews", ["reviews"], ["ingress", "mesh"]),
        virtual_service("c-wildcard", ["*.example.com"]),
        virtual_service("d-short-and-long", ["ratings", "ratings.default.svc.cluster.local"]),
    ])
    assert mesh.sidecar_virtual_service_for("reviews.default.svc.cluster.local", "default").name == "b-reviews"
    assert mesh.sidecar_virtual_service_for("api.example.com", "default").name == "c-wildcard"
    assert mesh.sidecar_virtual_service_for("ratings.default.svc.cluster.local", "default").name == "d-short-and-long"
    assert mesh.sidecar_virtual_service_for("details.default.svc.cluster.local", "default") is None


def test_sidecars_see_the_virtual_services_exported_to_their_namespace():
    def virtual_service(name, namespace, export_to=None):
        spec = {"hosts": ["reviews.default.svc.cluster.local"], "http": [{"route": [{"destination": {"host": "reviews.default.svc.cluster.local"}}]}]}
        if export_to is not None:
            spec["exportTo"] = export_to
        return resource("VirtualService", name, namespace, spec)

    mesh = Mesh.build([virtual_service("own", "default", ["."]), virtual_service("for-shop", "team", ["shop", "istio-system"])])
    found = {namespace: getattr(mesh.sidecar_virtual_service_for("reviews.default.svc.cluster.local", namespace), "name", None)
             for namespace in ("default", "shop", "istio-system", "team", "other")}
    assert found == {"default": "own", "shop": "for-shop", "istio-system": "for-shop", "team": None, "other": None}
    everywhere = Mesh.build([virtual_service("all", "team", ["*"])])
    assert everywhere.sidecar_virtual_service_for("reviews.default.svc.cluster.local", "other").name == "all"


def test_egress_hosts_import_named_services_and_wildcards_in_hostname_order():
    mesh = Mesh.build([
        service_entry("reviews", "default", "reviews.default.svc.cluster.local"),
        service_entry("ratings", "shop", "ratings.shop.svc.cluster.local"),
        service_entry("cart", "shop", "cart.shop.svc.cluster.local"),
        service_entry("api", "external", "api.example.com"),
        resource("WorkloadEntry", "client", "default", {"address": "127.0.0.1"}),
    ])
    proxy = find_proxy(mesh, "client.default")

    def imported(*hosts):
        return [s.hostname for s in services_for_hosts(mesh, proxy, list(hosts))]

    assert imported("shop/ratings.shop.svc.cluster.local", "./reviews.default.svc.cluster.local") == [
        "ratings.shop.svc.cluster.local", "reviews.default.svc.cluster.local"]
    assert imported("default/ratings.shop.svc.cluster.local", "*/nothing.example.com") == []  # wrong namespace, unknown host
    assert imported("shop/*") == ["cart.shop.svc.cluster.local", "ratings.shop.svc.cluster.local"]
    assert imported("*/*.example.com", "./*") == ["api.example.com", "reviews.default.svc.cluster.local"]


@pytest.mark.parametrize("enabled", [True, False])
def test_compile_leaves_the_garbage_collector_as_it_found_it(enabled):
    mesh = Mesh.build([service_entry("reviews", "default", "reviews.default.svc.cluster.local"),
                       resource("WorkloadEntry", "client", "default", {"address": "127.0.0.1"})])
    was_enabled = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        config = compile_proxy(mesh, find_proxy(mesh, "client.default"))
        assert gc.isenabled() is enabled
    finally:
        gc.enable() if was_enabled else gc.disable()
    assert [c["name"] for c in config.clusters] == ["outbound|80||reviews.default.svc.cluster.local"]
