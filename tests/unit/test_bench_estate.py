"""bench/estate.py writes the estate of issue #11 that bench/validate_estate.py times: the same
N gives the same bytes, the estate has the promised shape (3 VM proxies per service, half of them
scoped by a Sidecar to 10 services, a gateway, mTLS STRICT, a VirtualService per ten
services), and meshwright finds it valid, so the benchmark times work, not error reports."""

from __future__ import annotations

import os
import sys
from collections import Counter

import pytest

from meshwright.check.pipeline import validate_mesh
from meshwright.compile.build import compile_proxy
from meshwright.compile.proxy import find_proxy, list_proxies
from meshwright.model.load import load_paths

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench"))
from estate import GATEWAY, main, proxy_names, write_estate  # noqa: E402  bench/estate.py


def file_bytes(folder) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def valid_mesh(folder):
    mesh, problems = validate_mesh(load_paths([str(folder)]))
    assert [str(problem) for problem in problems] == []
    return mesh


@pytest.mark.parametrize("services", [5, 20])
def test_the_same_size_gives_byte_identical_files(tmp_path, services):
    write_estate(services, tmp_path / "first")
    write_estate(services, tmp_path / "second")
    assert file_bytes(tmp_path / "first") == file_bytes(tmp_path / "second")
    assert sorted(file_bytes(tmp_path / "first")) == ["mesh.yaml", "services-000.yaml", "sidecars.yaml", "workloads-000.yaml"]


@pytest.mark.parametrize("services", [5, 20])
def test_the_estate_has_the_promised_kinds_and_validates(tmp_path, services):
    write_estate(services, tmp_path)
    mesh = valid_mesh(tmp_path)
    kinds = Counter(resource.kind for resource in mesh.resources)
    virtual_services = -(-services // 10) + 1  # one per ten services, and the gateway's
    assert kinds == Counter({"ServiceEntry": services, "WorkloadEntry": 3 * services, "DestinationRule": services,
                             "VirtualService": virtual_services, "Sidecar": min(services, 10), "Gateway": 1,
                             "PeerAuthentication": 1, "MeshConfig": 1})
    assert sorted(proxy.id for proxy in list_proxies(mesh)) == sorted(proxy_names(services))
    (meshconfig,) = mesh.of_kind("MeshConfig")
    (peer_authentication,) = mesh.of_kind("PeerAuthentication")
    assert "certificates" in meshconfig.spec and peer_authentication.spec == {"mtls": {"mode": "STRICT"}}


def outbound_services(mesh, proxy_id: str) -> set[str]:
    """The estate's services a proxy has clusters for (cluster names carry the service's host)."""
    clusters = compile_proxy(mesh, find_proxy(mesh, proxy_id)).clusters
    return {name.split(".")[0] for name in (cluster["name"].split("|")[-1] for cluster in clusters) if name.startswith("svc-")}


def test_half_the_proxies_see_ten_services_and_half_see_everything(tmp_path):
    services = 20
    write_estate(services, tmp_path)
    mesh = valid_mesh(tmp_path)
    workloads = mesh.of_kind("WorkloadEntry")
    scoped = [w for w in workloads if w.spec["labels"].get("scope") == "scoped"]
    assert len(scoped) == len(workloads) // 2
    assert len(outbound_services(mesh, f"{scoped[0].name}.{scoped[0].namespace}")) == 10
    everything = next(w for w in workloads if "scope" not in w.spec["labels"])
    assert len(outbound_services(mesh, f"{everything.name}.{everything.namespace}")) == services
    assert len(outbound_services(mesh, GATEWAY)) >= 1


def test_the_command_line_writes_the_folder_and_refuses_a_bad_size(tmp_path, capsys):
    assert main(["5", str(tmp_path / "estate")]) == 0
    assert "5 services, 16 proxies, 35 documents" in capsys.readouterr().out
    assert main(["zero", str(tmp_path / "other")]) == 2
    assert "usage: estate.py N OUTDIR" in capsys.readouterr().err


@pytest.mark.parametrize("services", [4, 12, 100, 1_000])
def test_every_sidecar_names_ten_different_services_of_the_estate(tmp_path, services):
    """The ten are spread over the estate and its namespaces whatever N is (12 once folded two onto one)."""
    write_estate(services, tmp_path)
    sidecars = [resource for resource in load_paths([str(tmp_path / "sidecars.yaml")]).resources]
    assert len(sidecars) == min(services, 10)
    for sidecar in sidecars:
        (egress,) = sidecar.spec["egress"]
        assert len(set(egress["hosts"])) == min(services, 10)
        assert all(int(host.split("/svc-")[1].split(".")[0]) < services for host in egress["hosts"])
    if services >= 100:
        assert len({host.split("/")[0] for host in egress["hosts"]}) == 10
