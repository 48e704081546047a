"""Ask an Envoy binary on the host what it is and whether it accepts a config.

Standard library only: shipped to proxy hosts as Ansible module_utils.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile

from ansible.module_utils.mesh_envoy_validate import EnvoyBinaryError, envoy_validate

# `envoy --version` prints e.g. "envoy  version: 9e5580.../1.40.0/Clean/RELEASE/BoringSSL"
# (the admin /server_info "version" is the part after "version: ").
_VERSION = re.compile(r"\b[0-9a-f]{7,40}/([0-9]+\.[0-9]+\.[0-9]+[^/\s]*)/")


def parse_version(text: str) -> str | None:
    """"9e5580.../1.40.0/Clean/RELEASE/BoringSSL" (or a whole --version line) -> "1.40.0"."""
    match = _VERSION.search(text)
    return match.group(1) if match else None


def envoy_version(envoy: str, timeout: float = 60) -> str:
    """The version the binary reports, e.g. "1.40.0"."""
    try:
        result = subprocess.run([envoy, "--version"], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise EnvoyBinaryError(f"cannot run {envoy} --version: {error}") from error
    version = parse_version(result.stdout + result.stderr)
    if result.returncode != 0 or version is None:
        output = (result.stdout + result.stderr).strip()[-500:]
        raise EnvoyBinaryError(f"{envoy} --version exited {result.returncode} without a version: {output}")
    return version


def validate_config(envoy: str, bootstrap: str, timeout: float = 120) -> str | None:
    """`envoy --mode validate` (meshwright's one, mesh_envoy_validate) on a bootstrap (text), in a
    scratch folder that is removed afterwards. None when Envoy accepts it, else the last lines
    of what Envoy said."""
    with tempfile.TemporaryDirectory(prefix="meshwright-validate-") as scratch:
        path = os.path.join(scratch, "bootstrap.yaml")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(bootstrap)
        return envoy_validate(envoy, path, timeout, more_time="is the host overloaded?")
