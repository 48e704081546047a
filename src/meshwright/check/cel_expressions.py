"""Telemetry's CEL expressions (access log `filter.expression`) checked by the Envoy that
will run them: Envoy parses each when it loads the access log, so a bad one is reported at
the Telemetry that holds it, not as a proxy whose config Envoy rejects."""

from __future__ import annotations

import json
import os
import tempfile

from meshwright.check.envoy_binary import envoy_validate
from meshwright.compile.envoy_values import HCM_FILTER, HTTP_CONNECTION_MANAGER, typed
from meshwright.compile.telemetry import AccessLog, access_log
from meshwright.mesh import Mesh
from meshwright.model.providers import ACCESS_LOGGING, FILE_ACCESS_LOG, Provider
from meshwright.model.resource import Resource
from meshwright.problems import Problems

_PROBE_PROVIDER = Provider(name="cel-check", type=FILE_ACCESS_LOG, path="/dev/stdout")  # validate mode only: never written
_PARSE_ERROR = "Not able to parse filter expression: "


def filter_expressions(mesh: Mesh) -> list[tuple[Resource, tuple, str]]:
    """(Telemetry, path, expression) of every access log filter, in file order."""
    found = []
    for telemetry in mesh.of_kind("Telemetry"):
        for index, entry in enumerate(telemetry.spec.get(ACCESS_LOGGING) or []):
            expression = (entry.get("filter") or {}).get("expression")
            if expression:
                found.append((telemetry, ("spec", ACCESS_LOGGING, index, "filter", "expression"), expression))
    return found


def _probe_bootstrap(expressions: list[str]) -> dict:
    """A listener whose HTTP connection manager has one filtered access log per expression."""
    manager = {
        "stat_prefix": "cel_check",
        "route_config": {"name": "cel_check"},
        "http_filters": [{"name": "envoy.filters.http.router",
                          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        "access_log": [access_log(AccessLog(_PROBE_PROVIDER, expression)) for expression in expressions],
    }
    return {"static_resources": {"listeners": [{
        "name": "cel_check",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
        "filter_chains": [{"filters": [{"name": HCM_FILTER, "typed_config": typed(HTTP_CONNECTION_MANAGER, **manager)}]}],
    }]}}


def _envoy_verdict(envoy: str, expressions: list[str], timeout: float) -> str | None:
    with tempfile.TemporaryDirectory(prefix="meshwright-cel-") as scratch:
        path = os.path.join(scratch, "cel.json")
        with open(path, "w") as handle:
            json.dump(_probe_bootstrap(expressions), handle)
        return envoy_validate(envoy, path, timeout)


def _reason(error: str) -> str:
    """Envoy's words after its prefix: the CEL parser's message and the caret line."""
    text = error.split(_PARSE_ERROR, 1)[1] if _PARSE_ERROR in error else error
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def check_cel_expressions(mesh: Mesh, envoy: str, timeout: float, problems: Problems) -> None:
    """One Envoy run for all expressions; when it refuses them, one run per expression tells
    which (the rare path)."""
    found = filter_expressions(mesh)
    distinct = list(dict.fromkeys(expression for dummy, dummy, expression in found))
    if not distinct or _envoy_verdict(envoy, distinct, timeout) is None:
        return
    for expression in distinct:
        error = _envoy_verdict(envoy, [expression], timeout)
        if error is None:
            continue
        for telemetry, path, used in found:
            if used == expression:
                problems.add(telemetry, path, f"Envoy cannot parse the CEL expression {expression!r}: {_reason(error)}")
