"""EnvoyFilter applyTo BOOTSTRAP (MERGE into the bootstrap meshwright writes, for the proxies
the filter and the patch's context select) and EXTENSION_CONFIG (the config a filter asking
for extension config discovery gets as its typed_config); what is refused or reported."""

from __future__ import annotations

import textwrap

import yaml

from meshwright.check.pipeline import validate_mesh
from meshwright.compile.build import compile_proxy
from meshwright.compile.proxy import find_proxy
from meshwright.deliver.files import render_files
from meshwright.model.load import load_paths

MESH = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: productpage, namespace: default}
spec: {address: 10.0.0.1, labels: {app: productpage}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: details, namespace: default}
spec: {address: 10.0.0.2, labels: {app: details}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
"""

LUA = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"


def envoy_filter(patches: str, selector: str = "workloadSelector: {labels: {app: productpage}}") -> str:
    return f"""
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {{name: tweak, namespace: default}}
spec:
  {selector}
  configPatches:
{textwrap.indent(textwrap.dedent(patches), "  ")}"""


def validate(tmp_path, *extra: str):
    (tmp_path / "mesh.yaml").write_text("---\n".join([MESH, *extra]))
    return validate_mesh(load_paths([str(tmp_path / "mesh.yaml")]))


def bootstrap(mesh, proxy_id: str) -> dict:
    config = compile_proxy(mesh, find_proxy(mesh, proxy_id))
    return yaml.safe_load(render_files(config, mesh.settings, "/var/lib/meshwright/x")["bootstrap.yaml"])


RUNTIME_PATCH = """\
- applyTo: BOOTSTRAP
  patch:
    operation: MERGE
    value:
      layered_runtime:
        layers: [{name: tuning, static_layer: {re2.max_program_size.error_level: 200}}]
      static_resources:
        clusters:
        - name: extra
          type: STATIC
          load_assignment: {cluster_name: extra, endpoints: []}
"""


def test_a_bootstrap_patch_merges_into_the_selected_proxys_bootstrap_only(tmp_path):
    mesh, problems = validate(tmp_path, envoy_filter(RUNTIME_PATCH))
    assert problems == []
    patched, plain = bootstrap(mesh, "productpage.default"), bootstrap(mesh, "details.default")
    assert patched["layered_runtime"] == {"layers": [{"name": "tuning", "static_layer": {"re2.max_program_size.error_level": 200}}]}
    # Lists merge by appending: the admin cluster stays, the new one joins it.
    assert [c["name"] for c in patched["static_resources"]["clusters"]] == ["admin", "extra"]
    assert patched["dynamic_resources"] == {**plain["dynamic_resources"]}  # the delivery's file sources, untouched
    assert "layered_runtime" not in plain


def test_a_gateway_context_bootstrap_patch_leaves_sidecars_alone(tmp_path):
    mesh, problems = validate(tmp_path, envoy_filter("""\
        - applyTo: BOOTSTRAP
          match: {context: GATEWAY}
          patch: {operation: MERGE, value: {stats_flush_interval: 10s}}
        """, selector=""))
    assert problems == []
    assert "stats_flush_interval" not in bootstrap(mesh, "productpage.default")


def test_a_bootstrap_patch_envoy_would_reject_is_reported(tmp_path):
    _, problems = validate(tmp_path, envoy_filter("""\
        - applyTo: BOOTSTRAP
          patch: {operation: MERGE, value: {stats_flush_intervals: 10s}}
        """))
    assert len(problems) == 1
    assert "proxy productpage.default: a BOOTSTRAP patch: Envoy rejects it:" in str(problems[0]) and "stats_flush_intervals" in str(problems[0])


def extension_patches(type_urls: str = f"[{LUA}]") -> str:
    return f"""\
        - applyTo: HTTP_FILTER
          match:
            context: SIDECAR_INBOUND
            listener: {{filterChain: {{filter: {{name: envoy.filters.network.http_connection_manager, subFilter: {{name: envoy.filters.http.router}}}}}}}}
          patch:
            operation: INSERT_BEFORE
            value:
              name: mesh.lua
              config_discovery: {{config_source: {{ads: {{}}}}, type_urls: {type_urls}}}
        - applyTo: EXTENSION_CONFIG
          patch:
            operation: ADD
            value:
              name: mesh.lua
              typed_config: {{"@type": {LUA}, default_source_code: {{inline_string: "function envoy_on_request(h) end"}}}}
        """


def http_filters(mesh, proxy_id: str) -> list[dict]:
    config = compile_proxy(mesh, find_proxy(mesh, proxy_id))
    inbound = next(listener for listener in config.listeners if listener["name"].endswith("_9080"))
    return inbound["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]


def test_a_filter_asking_for_an_extension_config_gets_it_as_its_typed_config(tmp_path):
    mesh, problems = validate(tmp_path, envoy_filter(extension_patches()))
    assert problems == []
    lua = next(f for f in http_filters(mesh, "productpage.default") if f["name"] == "mesh.lua")
    assert lua == {"name": "mesh.lua", "typed_config": {"@type": LUA, "default_source_code": {"inline_string": "function envoy_on_request(h) end"}}}


def test_an_extension_config_of_a_type_the_filter_does_not_list_is_reported(tmp_path):
    _, problems = validate(tmp_path, envoy_filter(extension_patches("[type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm]")))
    assert len(problems) == 1
    assert ("proxy productpage.default: listener 0.0.0.0_9080: filter mesh.lua takes its config by extension config discovery (ECDS), "
            "which meshwright does not serve: add an EXTENSION_CONFIG patch named mesh.lua") in str(problems[0])


def test_proxy_metadata_picks_the_proxies_whose_node_metadata_has_the_values(tmp_path):
    mesh, problems = validate(tmp_path, envoy_filter("""\
        - applyTo: BOOTSTRAP
          match: {proxy: {metadata: {NAME: details, NAMESPACE: default}}}
          patch: {operation: MERGE, value: {stats_flush_interval: 10s}}
        """, selector=""))
    assert problems == [] and mesh.warnings == []
    assert bootstrap(mesh, "details.default")["stats_flush_interval"] == "10s"
    assert "stats_flush_interval" not in bootstrap(mesh, "productpage.default")


def test_proxy_metadata_no_proxy_sends_is_a_warning(tmp_path):
    mesh, problems = validate(tmp_path, envoy_filter("""\
        - applyTo: BOOTSTRAP
          match: {proxy: {metadata: {ISTIO_VERSION: "1.24.0"}}}
          patch: {operation: MERGE, value: {stats_flush_interval: 10s}}
        """))
    assert problems == []
    assert [str(w).split(": ", 1)[1] for w in mesh.warnings] == [
        "EnvoyFilter/default/tweak: spec.configPatches[0].match.proxy.metadata.ISTIO_VERSION: warning: meshwright's proxies send no node "
        "metadata ISTIO_VERSION (their string keys: NAMESPACE, NAME, SERVICE_ACCOUNT, TRUST_DOMAIN), so the patch applies to none: "
        "select workloads with the EnvoyFilter's workloadSelector"
    ]
    assert "stats_flush_interval" not in bootstrap(mesh, "productpage.default")
