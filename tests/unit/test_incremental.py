"""Incremental recompile (compile/incremental.py, check/incremental.py apply): what apply
reports is exactly what full compiles before and after the change differ in, and an
endpoint change reports endpoints only."""

from __future__ import annotations

import copy
import os
import random
import sys

import pytest

from meshwright.check.incremental import ChangeRefused, apply
from meshwright.check.pipeline import validate_mesh
from meshwright.compile.build import compile_proxy
from meshwright.compile.incremental import compile_estate, config_versions, versions_diff
from meshwright.compile.proxy import list_proxies
from meshwright.mesh import Mesh
from meshwright.model.load import load_paths

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench"))
from estate import write_estate  # noqa: E402  bench/estate.py

LOCALITIES = ("region-a/zone-0", "region-a/zone-1", "region-b/zone-0")


# An EnvoyFilter on the estate's gateway: a proxy with a config of its own (no class).
GATEWAY_FILTER = """
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: gateway-ratelimit, namespace: istio-system}
spec:
  workloadSelector: {labels: {istio: ingressgateway}}
  configPatches:
  - applyTo: HTTP_FILTER
    match: {context: GATEWAY, listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager}}}}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          value: {stat_prefix: http_local_rate_limiter}
"""


def estate_mesh(tmp_path, services: int = 12, gateway_filter: bool = False) -> Mesh:
    folder = str(tmp_path / "estate")
    write_estate(services, folder)
    if gateway_filter:
        (tmp_path / "estate" / "gateway-filter.yaml").write_text(GATEWAY_FILTER)
    mesh, problems = validate_mesh(load_paths([folder]))
    assert [str(p) for p in problems] == []
    return mesh


def full_versions(mesh: Mesh) -> dict:
    """Every proxy compiled in a mesh built afresh from the same resources (nothing reused)."""
    fresh = Mesh.build(list(mesh.resources))
    return {proxy.id: config_versions(compile_proxy(fresh, proxy)) for proxy in list_proxies(fresh)}


def expected_changes(before: dict, after: dict) -> dict:
    changes = {proxy: versions_diff(before.get(proxy, {}), versions) for proxy, versions in after.items()}
    changes.update({proxy: {kind: dict.fromkeys(names) for kind, names in versions.items() if names}
                    for proxy, versions in before.items() if proxy not in after})
    return {proxy: diff for proxy, diff in sorted(changes.items()) if diff}


def edited(resource, edit) -> dict:
    document = copy.deepcopy(resource.document)
    edit(document["spec"])
    return document


def workload_edit(rng: random.Random, mesh: Mesh) -> dict:
    """A WorkloadEntry's new address, sometimes its weight or locality too."""
    workload = rng.choice(mesh.of_kind("WorkloadEntry"))

    def edit(spec):
        spec["address"] = f"10.{rng.randrange(100, 200)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        if rng.random() < 0.3:
            spec["weight"] = rng.randrange(1, 5)
        if rng.random() < 0.3:
            spec["locality"] = rng.choice(LOCALITIES)

    return edited(workload, edit)


def virtual_service_edit(rng: random.Random, mesh: Mesh) -> dict:
    """A new split of a VirtualService's weighted route."""
    service = rng.choice([vs for vs in mesh.of_kind("VirtualService") if any(len(r.get("route", [])) == 2 for r in vs.spec.get("http", []))])
    weight = rng.randrange(1, 100)

    def edit(spec):
        route = next(r for r in spec["http"] if len(r.get("route", [])) == 2)
        route["route"][0]["weight"], route["route"][1]["weight"] = weight, 100 - weight

    return edited(service, edit)


def _weighted_route(spec: dict) -> dict:
    return next(r for r in spec["http"] if len(r.get("route", [])) == 2)


def _first_match(spec: dict) -> dict:
    return spec["http"][0].setdefault("match", [{}])[0]


# What a user edits in a VirtualService's http routes, each on the spec of one whose hosts are
# a service's (its subsets v1 and v2 exist): the routes path takes all of them but sourceLabels
# (which proxies' labels routes read: classes may split) and the hosts edit (whole validation).
ROUTE_EDITS = {
    "timeout": lambda spec, rng: _weighted_route(spec).update(timeout=f"{rng.randrange(1, 30)}s"),
    "retries": lambda spec, rng: _weighted_route(spec).update(retries={"attempts": rng.randrange(1, 5), "perTryTimeout": "1s",
                                                                        "retryOn": "5xx,reset"}),
    "fault": lambda spec, rng: _weighted_route(spec).update(fault={"delay": {"percentage": {"value": 10.0}, "fixedDelay": "2s"}}),
    "headers": lambda spec, rng: _first_match(spec).setdefault("headers", {}).update({"end-user": {"prefix": f"tester-{rng.randrange(9)}"}}),
    "new route": lambda spec, rng: spec["http"].insert(0, {
        "match": [{"uri": {"prefix": f"/canary-{rng.randrange(9)}"}}],
        "route": [{"destination": {"host": _weighted_route(spec)["route"][0]["destination"]["host"], "subset": "v2"}}],
        "mirror": {"host": _weighted_route(spec)["route"][0]["destination"]["host"], "subset": "v1"}}),
    "direct response": lambda spec, rng: spec["http"].insert(0, {
        "match": [{"uri": {"exact": "/ping"}}], "directResponse": {"status": 200, "body": {"string": "pong"}}}),
    "one route fewer": lambda spec, rng: spec["http"].remove(next(r for r in spec["http"] if r is not _weighted_route(spec))),
    "sourceLabels": lambda spec, rng: _first_match(spec).update(sourceLabels={"version": "v1"}),
}


def virtual_service_route_edit(rng: random.Random, mesh: Mesh) -> dict:
    """One of ROUTE_EDITS on a service's VirtualService, or a new route on the gateway's."""
    if rng.random() < 0.2:
        gateway_routes = mesh.find("VirtualService", "istio-system", "ingress")
        prefix = f"/edited-{rng.randrange(1000)}"
        return edited(gateway_routes, lambda spec: spec["http"].insert(0, {**copy.deepcopy(spec["http"][-1]), "name": "edited",
                                                                           "match": [{"uri": {"prefix": prefix}}]}))
    service = rng.choice([vs for vs in mesh.of_kind("VirtualService") if vs.spec.get("hosts") != ["*"] and
                          any(len(r.get("route", [])) == 2 for r in vs.spec["http"])])
    name = rng.choice(sorted(ROUTE_EDITS) if len(service.spec["http"]) > 1 else sorted(set(ROUTE_EDITS) - {"one route fewer"}))
    return edited(service, lambda spec: ROUTE_EDITS[name](spec, rng))


def sidecar_edit(rng: random.Random, mesh: Mesh) -> dict:
    """A Sidecar with one egress host less."""
    sidecar = rng.choice([s for s in mesh.of_kind("Sidecar") if len(s.spec["egress"][0]["hosts"]) > 1])
    index = rng.randrange(len(sidecar.spec["egress"][0]["hosts"]))
    return edited(sidecar, lambda spec: spec["egress"][0]["hosts"].pop(index))


def telemetry_edit(rng: random.Random, mesh: Mesh) -> dict:
    """Metrics turned off in a namespace (the stat names of its proxies' clusters go), or on
    again where they were off."""
    namespace = rng.choice(sorted({w.namespace for w in mesh.of_kind("WorkloadEntry")}))
    return {"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry", "metadata": {"name": "no-metrics", "namespace": namespace},
            "spec": {"metrics": [{"overrides": [{"disabled": mesh.find("Telemetry", namespace, "no-metrics") is None}]}]}}


def destination_rule_edit(rng: random.Random, mesh: Mesh) -> dict:
    """A DestinationRule's outlier detection retuned: its clusters change (stat names kept)."""
    rule = rng.choice(mesh.of_kind("DestinationRule"))
    return edited(rule, lambda spec: spec["trafficPolicy"]["outlierDetection"].update(consecutive5xxErrors=rng.randrange(1, 50)))


EDITS = (workload_edit, workload_edit, virtual_service_edit, virtual_service_route_edit, sidecar_edit, telemetry_edit, destination_rule_edit)


@pytest.mark.parametrize("seed, gateway_filter", [(1, False), (2, True), (3, False), (4, True)])
def test_random_edits_report_what_full_compiles_differ_in(tmp_path, seed, gateway_filter):
    """A run of random edits, each applied to the estate the last one left: the changes
    reported are the difference between compiling every proxy before and after, and the
    new estate's versions are those of that full compile and of an estate built afresh.
    With gateway_filter, the gateway is a proxy without a class (EnvoyFilters patch it)."""
    rng = random.Random(seed)
    estate = compile_estate(estate_mesh(tmp_path, gateway_filter=gateway_filter))
    assert (estate.group_of["ingress.istio-system"][0] == "own") == gateway_filter
    before = full_versions(estate.mesh)
    kinds_seen = set()
    plan = list(EDITS) + [rng.choice(EDITS) for _ in range(3)]  # every kind of edit, in a random order
    rng.shuffle(plan)
    for make_edit in plan:
        change = make_edit(rng, estate.mesh)
        estate, changes = apply(estate, change)
        after = full_versions(estate.mesh)
        assert changes == expected_changes(before, after), change["metadata"]
        assert {proxy: estate.versions(proxy) for proxy in estate.proxies} == after
        rebuilt = compile_estate(Mesh.build(list(estate.mesh.resources)))
        assert {proxy: rebuilt.versions(proxy) for proxy in rebuilt.proxies} == after
        kinds_seen.update(kind for diff in changes.values() for kind in diff)
        before = after
    assert {"routes", "clusters", "endpoints"} <= kinds_seen


def test_an_address_change_reports_the_endpoints_of_the_proxies_that_see_the_service(tmp_path):
    mesh = estate_mesh(tmp_path)
    estate = compile_estate(mesh)
    workload = mesh.find("WorkloadEntry", "ns-1", "svc-00001-2")  # version v1
    new, changes = apply(estate, edited(workload, lambda spec: spec.update(address="10.200.0.7")))
    host = "svc-00001.ns-1.svc.cluster.local"
    seeing = {proxy.id for proxy in list_proxies(mesh)
              if any(a["cluster_name"].endswith(host) for a in compile_proxy(mesh, proxy).endpoints)}
    assert set(changes) == seeing
    assert len(seeing) < len(estate.proxies)  # scoped proxies that do not import it are left alone
    for diff in changes.values():
        assert list(diff) == ["endpoints"]
        # The plain cluster and subset v1 hold the workload; v2's endpoints are as they were.
        assert sorted(diff["endpoints"]) == sorted([f"outbound|8080||{host}", f"outbound|8080|v1|{host}"])
    endpoints = {a["cluster_name"]: a for a in compile_proxy(new.mesh, new.proxies["ingress.istio-system"]).endpoints}
    addresses = [e["endpoint"]["address"]["socket_address"]["address"] for group in endpoints[f"outbound|8080|v1|{host}"]["endpoints"]
                 for e in group["lb_endpoints"]]
    assert "10.200.0.7" in addresses


def test_a_virtual_service_edit_reports_routes(tmp_path):
    mesh = estate_mesh(tmp_path)
    estate = compile_estate(mesh)
    service = mesh.find("VirtualService", "ns-0", "svc-00010")

    def edit(spec):
        spec["http"][1]["route"][0]["weight"], spec["http"][1]["route"][1]["weight"] = 50, 50

    _, changes = apply(estate, edited(service, edit))
    assert changes
    assert {kind for diff in changes.values() for kind in diff} == {"routes"}


def test_an_address_that_is_no_address_is_refused_and_the_estate_kept(tmp_path):
    mesh = estate_mesh(tmp_path)
    estate = compile_estate(mesh)
    versions = {proxy: estate.versions(proxy) for proxy in estate.proxies}
    workload = mesh.find("WorkloadEntry", "ns-1", "svc-00001-2")
    with pytest.raises(ChangeRefused) as refused:
        apply(estate, edited(workload, lambda spec: spec.update(address="10.0.0.1; rm -rf /")), source="api/WorkloadEntry")
    assert str(refused.value) == "api/WorkloadEntry:1: WorkloadEntry/ns-1/svc-00001-2: spec.address: '10.0.0.1; rm -rf /' is not an IP address or a hostname"
    assert {proxy: estate.versions(proxy) for proxy in estate.proxies} == versions
    assert estate.mesh.find("WorkloadEntry", "ns-1", "svc-00001-2").spec["address"] == workload.spec["address"]


def test_removing_a_resource_that_is_not_there_is_refused(tmp_path):
    estate = compile_estate(estate_mesh(tmp_path, services=2))
    document = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "nothing", "namespace": "ns-0"}}
    with pytest.raises(ChangeRefused, match="there is no VirtualService/ns-0/nothing to remove"):
        apply(estate, document, removed=True)


def test_removing_a_workload_reports_its_proxy_gone_and_its_endpoints_changed(tmp_path):
    mesh = estate_mesh(tmp_path)
    estate = compile_estate(mesh)
    before = full_versions(mesh)
    workload = mesh.find("WorkloadEntry", "ns-1", "svc-00001-2")
    new, changes = apply(estate, workload.document, removed=True)
    assert "svc-00001-2.ns-1" not in new.proxies
    assert set(changes["svc-00001-2.ns-1"]) == {"listeners", "routes", "clusters", "endpoints"}
    assert all(version is None for names in changes["svc-00001-2.ns-1"].values() for version in names.values())
    assert changes == expected_changes(before, full_versions(new.mesh))


def test_a_label_index_with_one_item_swapped_selects_the_new_item_and_leaves_the_old_index_alone():
    from meshwright.model.selection import LabelIndex

    old, other, new = {"ns": "a", "labels": {"app": "x"}, "v": 1}, {"ns": "a", "labels": {"app": "y"}, "v": 1}, {"ns": "a", "labels": {"app": "x"}, "v": 2}
    index = LabelIndex([old, other], lambda item: item["ns"], lambda item: item["labels"])
    swapped = index.replaced(old, new)
    assert swapped.select("a", {"app": "x"})[0] is new and swapped.select("a", {})[0] is new
    assert index.select("a", {"app": "x"})[0] is old and index.select("a", {}) == [old, other]


def test_a_kubernetes_object_changes_nothing_as_validation_skips_it(tmp_path):
    estate = compile_estate(estate_mesh(tmp_path, services=2))
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "svc-00000", "namespace": "ns-0"}, "spec": {"replicas": 2}}
    assert apply(estate, deployment) == (estate, {})
    assert apply(estate, deployment, removed=True) == (estate, {})
    with pytest.raises(ChangeRefused, match="unknown kind: 'Nope'"):
        apply(estate, {**deployment, "apiVersion": "networking.istio.io/v1", "kind": "Nope"})


def workload_arrival(rng: random.Random, mesh: Mesh) -> tuple[dict, bool]:
    """A new WorkloadEntry beside an existing one (a pod of the same deployment), ready or not."""
    twin = rng.choice(mesh.of_kind("WorkloadEntry"))
    document = copy.deepcopy(twin.document)
    document["metadata"]["name"] = f"{twin.name}-{rng.randrange(10**6)}"
    document["spec"]["address"] = f"10.{rng.randrange(200, 250)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    if rng.random() < 0.3:
        document["metadata"].setdefault("annotations", {})["meshwright.io/endpoint"] = "not-ready"
    return document, False


def workload_departure(rng: random.Random, mesh: Mesh) -> tuple[dict, bool]:
    sidecars = [w for w in mesh.of_kind("WorkloadEntry") if not (w.spec.get("labels") or {}).get("istio")]
    return rng.choice(sidecars).document, True


def readiness_toggle(rng: random.Random, mesh: Mesh) -> tuple[dict, bool]:
    document = copy.deepcopy(rng.choice(mesh.of_kind("WorkloadEntry")).document)
    annotations = document["metadata"].setdefault("annotations", {})
    if annotations.pop("meshwright.io/endpoint", None) is None:
        annotations["meshwright.io/endpoint"] = "not-ready"
    return document, False


@pytest.mark.parametrize("seed", [5, 6])
def test_workloads_coming_going_and_changing_readiness_report_what_full_compiles_differ_in(tmp_path, seed):
    """Pods or tasks come, go and become ready or not (the registries' churn): each change
    takes the fast paths (with_workload_added / removed / endpoints), and what apply reports
    and the estate it returns are what full compiles before and after say."""
    from meshwright.compile.incremental import with_workload_added, with_workload_endpoints, with_workload_removed
    from meshwright.model.load import resource_from_document

    rng = random.Random(seed)
    estate = compile_estate(estate_mesh(tmp_path))
    before = full_versions(estate.mesh)
    plan = [workload_arrival, workload_departure, readiness_toggle] * 3
    rng.shuffle(plan)
    for make_change in plan:
        document, removed = make_change(rng, estate.mesh)
        resource = resource_from_document(document)
        fast = (with_workload_removed(estate, resource) if removed else
                with_workload_endpoints(estate, resource) or with_workload_added(estate, resource))
        # The last workload of a subset leaving may change its cluster (auto mTLS reaches no
        # one there any more): that may take the full path; any other change, a fast one.
        labels = document["spec"].get("labels")
        last_of_its_kind = removed and [w.spec.get("labels") for w in estate.mesh.of_kind("WorkloadEntry")].count(labels) == 1
        assert fast is not None or last_of_its_kind, (make_change.__name__, document["metadata"])
        estate, changes = apply(estate, document, removed=removed)
        after = full_versions(estate.mesh)
        assert changes == expected_changes(before, after), (make_change.__name__, document["metadata"])
        assert {proxy: estate.versions(proxy) for proxy in estate.proxies} == after
        assert list(estate.proxies) == [p.id for p in list_proxies(Mesh.build(list(estate.mesh.resources)))]
        before = after


def test_a_workload_not_ready_keeps_its_proxy_but_leaves_every_load_assignment(tmp_path):
    mesh = estate_mesh(tmp_path, services=3)
    estate = compile_estate(mesh)
    workload = mesh.find("WorkloadEntry", "ns-1", "svc-00001-2")
    document = copy.deepcopy(workload.document)
    document["metadata"].setdefault("annotations", {})["meshwright.io/endpoint"] = "not-ready"

    new, changes = apply(estate, document)

    assert "svc-00001-2.ns-1" in new.proxies
    assert {kind for diff in changes.values() for kind in diff} == {"endpoints"}
    addresses = [lb["endpoint"]["address"]["socket_address"]["address"]
                 for config in (g.config for g in new.groups.values()) for assignment in config.endpoints
                 for group in assignment.get("endpoints", []) for lb in group["lb_endpoints"]]
    assert workload.spec["address"] not in addresses and addresses


def test_a_label_index_takes_an_item_in_order_and_gives_one_back():
    from meshwright.model.selection import LabelIndex

    first, third = {"name": "a", "labels": {"app": "x"}}, {"name": "c", "labels": {"app": "x"}}
    index = LabelIndex([first, third], lambda item: "ns", lambda item: item["labels"])
    second = {"name": "b", "labels": {"app": "x", "v": "2"}}
    grown = index.added(second, lambda item: (item["name"],))
    assert grown.select("ns", {"app": "x"}) == [first, second, third] and grown.select("ns", {"v": "2"}) == [second]
    assert index.select("ns", {"app": "x"}) == [first, third] and index.select("ns", {"v": "2"}) == []
    assert grown.removed(second).select("ns", {"app": "x"}) == [first, third] and grown.removed(second).select("ns", {"v": "2"}) == []


def test_a_workload_that_comes_where_a_policy_cannot_be_enforced_is_refused_and_the_estate_kept(tmp_path):
    """The estate's mesh-wide PeerAuthentication is STRICT and its workloads capture with
    iptables: a new one that does not is refused on the fast path as validation would."""
    mesh = estate_mesh(tmp_path, services=3)
    estate = compile_estate(mesh)
    twin = mesh.find("WorkloadEntry", "ns-1", "svc-00001-1")
    document = copy.deepcopy(twin.document)
    document["metadata"] = {"name": "svc-00001-9", "namespace": "ns-1"}  # no interceptionMode: REDIRECT
    document["spec"]["address"] = "10.201.0.9"

    with pytest.raises(ChangeRefused) as refused:
        apply(estate, document)

    assert any("STRICT mTLS is not enforced on port 8080 of WorkloadEntry ns-1/svc-00001-9" in str(p) for p in refused.value.problems)
    assert "svc-00001-9.ns-1" not in estate.proxies


@pytest.mark.parametrize("seed", [7, 8])
def test_a_batch_of_arrivals_departures_moves_and_readiness_is_one_step_that_full_compiles_agree_with(tmp_path, seed):
    """apply_resources, as the control plane calls it for a registry's publish: several pods
    come, go, move and change readiness at once; one fast step (with_workloads_changed), and
    what it reports and the estate it returns are what full compiles before and after say."""
    from meshwright.check.incremental import apply_resources
    from meshwright.compile.incremental import with_workloads_changed
    from meshwright.model.load import resource_from_document

    rng = random.Random(seed)
    estate = compile_estate(estate_mesh(tmp_path))
    before = full_versions(estate.mesh)
    for _ in range(3):
        edited, removed, touched = [], [], set()
        for make_change in [workload_arrival, workload_arrival, workload_departure, readiness_toggle, workload_edit]:
            change = make_change(rng, estate.mesh)
            document, gone = change if isinstance(change, tuple) else (change, False)
            key = (document["metadata"]["namespace"], document["metadata"]["name"])
            if key in touched or (gone and key[1].endswith("-3")):  # one change per workload; a subset's last one stays
                continue
            touched.add(key)
            (removed if gone else edited).append(resource_from_document(document))
        assert with_workloads_changed(estate, edited, removed) is not None
        estate, changes = apply_resources(estate, edited, removed)
        after = full_versions(estate.mesh)
        assert changes == expected_changes(before, after)
        assert {proxy: estate.versions(proxy) for proxy in estate.proxies} == after
        assert list(estate.proxies) == [p.id for p in list_proxies(Mesh.build(list(estate.mesh.resources)))]
        before = after


def test_removing_a_destination_rule_and_the_virtual_service_that_uses_it_together_is_not_refused(tmp_path):
    """Deleting a file that holds both: applied one by one, the rule's removal first would
    leave the VirtualService naming subsets no rule defines. The change as a whole is sound,
    so it goes to validation whole (None) instead of being refused; the rule alone is refused."""
    from meshwright.check.incremental import apply_resources

    estate = compile_estate(estate_mesh(tmp_path))
    service = next(vs for vs in estate.mesh.of_kind("VirtualService")
                   if any("subset" in route.get("destination", {}) for http in vs.spec.get("http") or [] for route in http.get("route") or []))
    host = service.spec["http"][0]["route"][0]["destination"]["host"]
    rule = next(dr for dr in estate.mesh.of_kind("DestinationRule") if dr.spec["host"] == host)
    assert apply_resources(estate, [], [rule, service]) is None
    # In the other order every step is sound: applied on the incremental path.
    after, dummy = apply_resources(estate, [], [service, rule])
    assert after.mesh.find("VirtualService", service.namespace, service.name) is None
    assert after.mesh.find("DestinationRule", rule.namespace, rule.name) is None
    with pytest.raises(ChangeRefused):
        apply_resources(estate, [], [rule])


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_virtual_service_route_edits_report_what_full_compiles_differ_in(tmp_path, seed):
    """Runs of VirtualService route edits (most take the routes path: only the classes that
    route the edited hosts are compiled again): the changes reported are what full compiles
    before and after differ in, and the estate's versions those of a full compile."""
    rng = random.Random(seed)
    estate = compile_estate(estate_mesh(tmp_path))
    before = full_versions(estate.mesh)
    for step in range(8):
        change = virtual_service_route_edit(rng, estate.mesh)
        estate, changes = apply(estate, change)
        after = full_versions(estate.mesh)
        assert changes == expected_changes(before, after), change["metadata"]
        assert {proxy: estate.versions(proxy) for proxy in estate.proxies} == after
        before = after
    rebuilt = compile_estate(Mesh.build(list(estate.mesh.resources)))
    assert {proxy: rebuilt.versions(proxy) for proxy in rebuilt.proxies} == before


def test_a_route_edit_compiles_again_only_the_classes_that_route_its_host(tmp_path):
    """A weight moved in the VirtualService of a service that scoped proxies do not import:
    their classes keep their very configs, and they are not told of any change."""
    estate = compile_estate(estate_mesh(tmp_path))
    service = estate.mesh.find("VirtualService", "ns-0", "svc-00010")
    new, changes = apply(estate, edited(service, lambda spec: _weighted_route(spec)["route"][1].update(weight=40) or
                                        _weighted_route(spec)["route"][0].update(weight=60)))
    host = "svc-00010.ns-0.svc.cluster.local"
    routing = {key for key, group in estate.groups.items()
               if any(vh["name"].startswith(host + ":") for routes in group.config.routes for vh in routes["virtual_hosts"])}
    assert routing and len(routing) < len(estate.groups)
    assert {key for key in estate.groups if new.groups[key] is not estate.groups[key]} == routing
    assert {estate.group_of[proxy] for proxy in changes} == routing
    assert all(list(diff) == ["routes"] for diff in changes.values())


def whole_validation(estate, document: dict) -> list[str]:
    """What `meshwright validate` says of the mesh with document in place of its namesake."""
    from meshwright.model.load import LoadResult, resource_from_document
    resource = resource_from_document(document)
    others = [r for r in estate.mesh.resources if r.key != resource.key]
    mesh, problems = validate_mesh(LoadResult(others + [resource]))
    return [str(p) for p in problems]


def test_a_route_edit_to_a_subset_that_does_not_exist_is_refused_as_validate_says(tmp_path):
    estate = compile_estate(estate_mesh(tmp_path))
    service = estate.mesh.find("VirtualService", "ns-0", "svc-00010")
    change = edited(service, lambda spec: _weighted_route(spec)["route"][1]["destination"].update(subset="v9"))
    with pytest.raises(ChangeRefused) as refused:
        apply(estate, change)
    expected = whole_validation(estate, change)
    assert expected and [str(p) for p in refused.value.problems] == expected
    assert "v9" in expected[0]


def test_a_route_edit_to_a_service_scoped_proxies_do_not_import_is_refused_as_validate_says(tmp_path):
    """Check 4 on the classes compiled again: proxies whose Sidecar imports the edited host
    but not the new destination would route to a cluster they lack; the problem names the
    Sidecar's egress hosts, as `meshwright validate` does."""
    estate = compile_estate(estate_mesh(tmp_path))
    service = estate.mesh.find("VirtualService", "ns-0", "svc-00000")  # every scoped proxy imports svc-00000
    change = edited(service, lambda spec: _weighted_route(spec)["route"][1]["destination"].update(host="svc-00005.ns-5.svc.cluster.local",
                                                                                                     subset="v1"))
    with pytest.raises(ChangeRefused) as refused:
        apply(estate, change)
    expected = whole_validation(estate, change)
    assert expected and [str(p) for p in refused.value.problems] == expected
    assert any("which these egress hosts do not import" in line for line in expected)
