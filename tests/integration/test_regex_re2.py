"""Regexes are checked as Envoy reads them (RE2, and its limit on a regex's program size):
meshwright's verdict on a regex is real Envoy's, pattern by pattern."""

from __future__ import annotations

import json

import pytest

from meshwright.check.envoy_binary import envoy_validate, find_envoy
from meshwright.validate.shape import Regex

ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
MANAGER = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def bootstrap_with_route_regex(pattern: str) -> dict:
    route = {"match": {"safe_regex": {"regex": pattern}}, "direct_response": {"status": 200}}
    manager = {"@type": MANAGER, "stat_prefix": "regex", "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
               "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]}}
    chain = {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}
    return {"static_resources": {"listeners": [{"name": "regex", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}}, "filter_chains": [chain]}]}}


@pytest.mark.parametrize("pattern", [
    r"\pL+",                 # a Unicode class: RE2, not Python's re
    r"^[\pL\pN_-]+$",
    r"/api/v[0-9]+/.*",
    r".{1,20}",              # program size 63
    r".{1,40}",              # 123: over Envoy's 100
    r"(abc|def){1,30}",      # 273
    r"a{1,100}",             # 203
    r"/api/(?!internal).*",  # lookahead: Python's re has it, RE2 not
    r"(?P<id>[0-9]+)",
])
def test_meshwright_and_envoy_agree_on_a_regex(pattern, tmp_path):
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(bootstrap_with_route_regex(pattern)))
    envoy_says = envoy_validate(find_envoy(), str(path))
    meshwright_says = Regex().problem(pattern)
    assert (envoy_says is None) == (meshwright_says is None), f"Envoy: {envoy_says}\nmeshwright: {meshwright_says}"
