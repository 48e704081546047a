"""The bootstrap a proxy's bundle carries for `envoy --mode validate`: its whole config as
static resources, so the host's Envoy (check/envoy_binary.py runs it) checks all of it
before the config is swapped in."""

from __future__ import annotations

import base64
import copy
import json

from meshwright.check.envoy_sample import ShapeCache, sampled_config
from meshwright.compile.envoy_values import HCM_FILTER
from meshwright.compile.request_authentication import JWT_FILTER
from meshwright.compile.secrets import DEFAULT_SECRET, secret_names, with_secret_references
from meshwright.deliver.files import bootstrap_file, serialize, with_inline_endpoints
from meshwright.deliver.placeholder_secrets import placeholder_pem, placeholder_secret


def validation_bootstrap(config, bootstrap: dict, memos: tuple[dict, dict] | None = None, credentials_dir: str = "") -> dict:
    """The proxy's whole config as static resources (routes and endpoints inlined), so that
    `envoy --mode validate`, which does not read dynamic sources, checks all of it. memos: a
    run's (deliver.files.RenderCache.memo), for the clusters' fields other proxies
    share: their secret references made static, and the names of those secrets.
    credentials_dir: the MeshConfig's, whose files gateways' TLS contexts name."""
    return with_static_resources(bootstrap, *static_resources(config, memos, credentials_dir))


def sampled_validation_bootstrap(mesh, config, config_dir: str, cache: ShapeCache) -> str:
    """validation_bootstrap's text with one cluster and virtual host of each shape
    (check/envoy_sample.py): what `meshwright validate` and `render` show Envoy. config: a
    class's shared config (compile/build.py shared_config): the proxies of a class differ
    only in names and stat names, which Envoy takes as they come."""
    config = sampled_config(config, cache)
    dummy, bootstrap = bootstrap_file(config.proxy, config.telemetry, mesh.settings, config_dir, "yaml", config.bootstrap_patches, config.stat_tags)
    return serialize(validation_bootstrap(config, bootstrap, None, mesh.settings.credentials_dir), "yaml")


def with_static_resources(bootstrap: dict, listeners: list[dict], clusters: list[dict], secrets: list[dict]) -> dict:
    """The bootstrap without its dynamic sources, these resources after its own."""
    out = copy.deepcopy(bootstrap)
    out.pop("dynamic_resources", None)
    out["static_resources"]["listeners"] += listeners
    out["static_resources"]["clusters"] += clusters
    if secrets:
        out["static_resources"]["secrets"] = secrets
    return out


def static_resources(config, memos: tuple[dict, dict] | None = None, credentials_dir: str = "") -> tuple[list[dict], list[dict], list[dict]]:
    """(listeners, clusters, secrets) of validation_bootstrap: the proxy's config made static."""
    routes = {r["name"]: r for r in config.routes}
    listeners = copy.deepcopy(config.listeners)
    for listener in listeners:
        for chain in listener["filter_chains"]:
            if credentials_dir and "transport_socket" in chain:
                _placeholder_credential_files(chain["transport_socket"]["typed_config"].get("common_tls_context") or {}, credentials_dir)
            for network_filter in chain["filters"]:
                manager = network_filter["typed_config"]
                if network_filter["name"] == HCM_FILTER and "rds" in manager:
                    manager["route_config"] = routes[manager.pop("rds")["route_config_name"]]
                if network_filter["name"] == HCM_FILTER:
                    _placeholder_jwks_files(manager["http_filters"])
    names: set[str] = set()

    def static(reference: dict) -> dict:
        names.add(reference["name"])
        return _without_sds_config(reference)

    listeners = with_secret_references(listeners, static)
    clusters = with_inline_endpoints(config.clusters, config.endpoints)
    names |= secret_names(clusters, memos[1] if memos else None)
    clusters = with_secret_references(clusters, _without_sds_config, memos[0] if memos else None)
    return listeners, clusters, _static_secrets(names)


def _without_sds_config(reference: dict) -> dict:
    """A secret reference that names a static secret (the SDS config taken out)."""
    return {key: value for key, value in reference.items() if key != "sds_config"}


def _static_secrets(names: set[str]) -> list[dict]:
    """Stand-ins for the secrets of these names, which references name without an SDS
    config: the proxy's certificate files may not exist where the config is checked."""
    return [placeholder_secret(name, "tls_certificate" if name == DEFAULT_SECRET else "validation_context") for name in sorted(names)]


def _coordinate(hex_digits: str) -> str:
    return base64.urlsafe_b64encode(bytes.fromhex(hex_digits)).rstrip(b"=").decode()


# A public key that is P-256's base point (private key 1): public, deterministic, never trusted.
PLACEHOLDER_JWKS = json.dumps({"keys": [{
    "kty": "EC", "crv": "P-256", "kid": "meshwright-validate-placeholder",
    "x": _coordinate("6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296"),
    "y": _coordinate("4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5"),
}]}, sort_keys=True)


def _placeholder_jwks_files(http_filters: list[dict]) -> None:
    """JWKS files (RequestAuthentication's file:// jwksUri) live on the proxy's host and may
    not exist where the config is checked; Envoy's validate mode reads them, so the check
    uses inline stand-in keys (the file is read by the proxy itself)."""
    for http_filter in http_filters:
        if http_filter["name"] != JWT_FILTER:
            continue
        for provider in http_filter["typed_config"]["providers"].values():
            if "filename" in provider.get("local_jwks", {}):  # remote_jwks: fetched by the proxy, nothing to read here
                provider["local_jwks"] = {"inline_string": PLACEHOLDER_JWKS}


def _placeholder_credential_files(context: dict, credentials_dir: str) -> None:
    """A gateway's credential files (compile/gateway_tls.py server_certificates) are on its
    host, in credentials_dir, and may not exist where the config is checked; Envoy's validate
    mode reads them, so the check uses the stand-in certificate (the proxy reads the files)."""
    certificate, key = placeholder_pem()

    def stand_in(source: dict, pem: str) -> dict:
        return {"inline_string": pem} if source.get("filename", "").startswith(credentials_dir.rstrip("/") + "/") else source

    for pair in context.get("tls_certificates") or []:
        pair["certificate_chain"] = stand_in(pair["certificate_chain"], certificate)
        pair["private_key"] = stand_in(pair["private_key"], key)
    validation = context.get("validation_context")
    if validation and "trusted_ca" in validation:
        validation["trusted_ca"] = stand_in(validation["trusted_ca"], certificate)
