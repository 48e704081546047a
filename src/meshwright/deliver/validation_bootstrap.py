"""The bootstrap a proxy's bundle carries for `envoy --mode validate`: its whole config as
static resources, so the host's Envoy (check/envoy_binary.py runs it) checks all of it
before the config is swapped in."""

from __future__ import annotations

import copy

from meshwright.compile.envoy_values import HCM_FILTER
from meshwright.compile.secrets import DEFAULT_SECRET, secret_references
from meshwright.deliver.files import with_inline_endpoints
from meshwright.deliver.placeholder_secrets import placeholder_secret


def validation_bootstrap(config, bootstrap: dict) -> dict:
    """The proxy's whole config as static resources (routes and endpoints inlined), so that
    `envoy --mode validate`, which does not read dynamic sources, checks all of it."""
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
    names = set()
    for reference in secret_references(resources):
        del reference["sds_config"]
        names.add(reference["name"])
    return [placeholder_secret(name, "tls_certificate" if name == DEFAULT_SECRET else "validation_context") for name in sorted(names)]
