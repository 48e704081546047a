"""Rendering many proxies in one run (deliver.bundle.bundle_proxies, what mesh_render does)
writes each object the proxies share once (deliver.files.RenderCache): every file, and every
validation bootstrap, is byte-identical to rendering that proxy alone."""

from __future__ import annotations

import os
import sys
import zlib

import pytest

from meshwright.compile.proxy import list_proxies
from meshwright.compile.proxy_class import proxy_classes
from meshwright.deliver import bundle as bundle_module
from meshwright.deliver import class_template, files
from meshwright.deliver.bundle import bundle_proxies, bundle_proxy, load_mesh
from tests.golden.golden import CASES_DIR, case_names

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench"))
from estate import write_estate  # noqa: E402  bench/estate.py


def _assert_each_as_alone(paths: list[str], config_dir_of) -> int:
    alone_mesh = load_mesh(paths)
    together_mesh = load_mesh(paths)  # its own mesh: nothing memoized by the lone renders
    config_dirs = {proxy.id: config_dir_of(proxy.id) for proxy in list_proxies(together_mesh)}
    together = bundle_proxies(together_mesh, config_dirs)
    for proxy_id, config_dir in config_dirs.items():
        alone = bundle_proxy(alone_mesh, proxy_id, config_dir)
        assert together[proxy_id].files == alone.files, proxy_id
        assert together[proxy_id].validation_bootstrap == alone.validation_bootstrap, proxy_id
    return len(config_dirs)


@pytest.mark.parametrize("case", case_names())
def test_every_golden_proxy_renders_as_alone(case):
    assert _assert_each_as_alone([os.path.join(CASES_DIR, case, "mesh.yaml")], lambda proxy_id: "/etc/meshwright/envoy") >= 1


def test_an_estate_with_shared_and_own_config_folders(tmp_path):
    folder = str(tmp_path / "estate")
    write_estate(12, folder)
    # Half the proxies in one folder, half in folders of their own: both ways share what they can.
    shared = lambda proxy_id: "/etc/meshwright/envoy" if zlib.crc32(proxy_id.encode()) % 2 else f"/srv/mesh/{proxy_id}"  # noqa: E731
    assert _assert_each_as_alone([folder], shared) == 37


def test_a_small_cache_that_empties_itself_still_renders_as_alone(tmp_path, monkeypatch):
    folder = str(tmp_path / "estate")
    write_estate(6, folder)
    monkeypatch.setattr(files.RenderCache.__init__, "__defaults__", (7,))
    assert _assert_each_as_alone([folder], lambda proxy_id: "/etc/meshwright/envoy") == 19


def test_the_proxies_of_a_class_are_written_from_one_text(tmp_path, monkeypatch):
    folder = str(tmp_path / "estate")
    write_estate(12, folder)
    mesh = load_mesh([folder])
    written = []
    write = class_template._class_text
    monkeypatch.setattr(class_template, "_class_text", lambda *args: written.append(args[1].id) or write(*args))
    bundles = bundle_proxies(mesh, {proxy.id: "/etc/meshwright/envoy" for proxy in list_proxies(mesh)})
    classes = proxy_classes(mesh, list_proxies(mesh))
    assert len(written) == len(classes) < len(bundles)
    # Proxies of one class differ in their bootstrap only: their own labels are its fixed tags.
    members = next([p for p in c if p.kind == "sidecar"] for c in classes if len({p.label_map.get("app") for p in c if p.kind == "sidecar"}) > 1)
    first = members[0]
    second = next(p for p in members if p.label_map["app"] != first.label_map["app"])
    one, other = (bundles[proxy.id].files for proxy in (first, second))
    assert one.keys() == other.keys() and [name for name in one if one[name] != other[name]] == ["bootstrap.yaml"]
    assert f"fixed_value: {first.name}\n" in one["bootstrap.yaml"] and f"fixed_value: {second.name}\n" in other["bootstrap.yaml"]
    for proxy, files_of in ((first, one), (second, other)):  # and the service each serves on its inbound port
        assert f"fixed_value: {proxy.label_map['app']}.{proxy.namespace}.svc.cluster.local\n" in files_of["bootstrap.yaml"]


def test_a_class_proxys_validation_bootstrap_is_pieced_from_the_class_text(tmp_path, monkeypatch):
    """The validation bootstrap of a proxy of a class is its own bootstrap with the class's
    blocks put in at their markers, never the whole config written again for it (which costs
    as much as the class)."""
    folder = str(tmp_path / "estate")
    write_estate(12, folder)
    mesh = load_mesh([folder])
    alone = []
    write_alone = bundle_module._validation_alone
    monkeypatch.setattr(bundle_module, "_validation_alone", lambda *args: alone.append(args[1].id) or write_alone(*args))
    bundles = bundle_proxies(mesh, {proxy.id: "/etc/meshwright/envoy" for proxy in list_proxies(mesh)})
    for bundle in bundles.values():
        assert "static_resources" in bundle.validation_bootstrap
    classed = [proxy.id for proxy in list_proxies(mesh) if class_template.class_key(mesh, proxy) is not None]
    assert classed and not set(alone) & set(classed)
