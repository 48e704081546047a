"""AuthorizationPolicy action CUSTOM -> Envoy's external authorization, as Istio builds it.

A CUSTOM policy names an ext-authz provider of the MeshConfig (envoyExtAuthzHttp or
envoyExtAuthzGrpc, a mesh service and port). Its rules say which requests the authorizer is
asked about: they become the shadow rules of an RBAC filter, whose match writes the policy's
id (prefixed `istio-ext-authz`) into the request's metadata, and the ext_authz filter after
it runs only for requests with that metadata. Both go before the DENY and ALLOW filters
(Istio's order: CUSTOM, DENY, ALLOW), after the JWT filter. On TCP chains, as in Istio, a
gRPC provider is asked about connections the same way (the network RBAC and ext_authz
filters); an HTTP provider cannot be, and validation warns.
"""

from __future__ import annotations

from meshwright.compile.clusters import outbound_cluster_name
from meshwright.compile.envoy_values import TYPE_PREFIX, typed
from meshwright.mesh import Mesh
from meshwright.model.providers import EXT_AUTHZ_GRPC, EXT_AUTHZ_HTTP
from meshwright.model.resource import Resource
from meshwright.registry.model import Service

EXT_AUTHZ = TYPE_PREFIX + "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
NETWORK_EXT_AUTHZ = TYPE_PREFIX + "envoy.extensions.filters.network.ext_authz.v3.ExtAuthz"
NETWORK_EXT_AUTHZ_FILTER = "envoy.filters.network.ext_authz"
CUSTOM = "CUSTOM"
# Istio's names: the shadow rules' stat prefix (and so their metadata key) and policy ids.
SHADOW_PREFIX, POLICY_PREFIX = "istio_ext_authz_", "istio-ext-authz"
DEFAULT_TIMEOUT = "600s"  # Istio's default for both provider types


def custom_policies(policies: list[Resource]) -> list[Resource]:
    return [policy for policy in policies if policy.spec.get("action") == CUSTOM]


def provider_spec(mesh: Mesh, name: str) -> tuple[str, dict] | None:
    """(type, settings) of the MeshConfig's ext-authz provider of that name."""
    for config in mesh.of_kind("MeshConfig"):
        for spec in config.spec.get("extensionProviders") or []:
            for kind in (EXT_AUTHZ_HTTP, EXT_AUTHZ_GRPC):
                if spec["name"] == name and kind in spec:
                    return kind, spec[kind]
    return None


def provider_service(mesh: Mesh, settings: dict) -> Service | None:
    """The mesh service an ext-authz provider names ("[namespace/]hostname")."""
    return mesh.registry.get(settings["service"].rpartition("/")[2])


def ext_authz_services(mesh: Mesh, policies: list[Resource]) -> list[Service]:
    """The authorizers' services the CUSTOM policies of a workload call (their clusters must
    be on the proxy, whatever its Sidecar imports)."""
    found = {}
    for policy in custom_policies(policies):
        provider = provider_spec(mesh, policy.spec["provider"]["name"])
        service = provider_service(mesh, provider[1]) if provider else None
        if service is not None:
            found[service.hostname] = service
    return [found[name] for name in sorted(found)]


def _patterns(names: list[str]) -> dict:
    return {"patterns": [{"exact": name, "ignore_case": True} for name in names]}


def _http_service(settings: dict, host: str, port: int, cluster: str) -> dict:
    """Istio's envoyExtAuthzHttp: the check is an HTTP request to the authorizer with the
    headers it names; the authorizer's headers go upstream on allow, to the client on deny."""
    service: dict = {"server_uri": {"uri": f"http://{host}:{port}", "cluster": cluster, "timeout": settings.get("timeout", DEFAULT_TIMEOUT)}}
    if "pathPrefix" in settings:
        service["path_prefix"] = settings["pathPrefix"]
    request: dict = {}
    if settings.get("includeRequestHeadersInCheck"):
        request["allowed_headers"] = _patterns(settings["includeRequestHeadersInCheck"])
    if settings.get("includeAdditionalHeadersInCheck"):
        request["headers_to_add"] = [{"key": key, "value": value} for key, value in sorted(settings["includeAdditionalHeadersInCheck"].items())]
    if request:
        service["authorization_request"] = request
    response: dict = {}
    for field, envoy_field in (("headersToUpstreamOnAllow", "allowed_upstream_headers"), ("headersToDownstreamOnDeny", "allowed_client_headers"),
                               ("headersToDownstreamOnAllow", "allowed_client_headers_on_success")):
        if settings.get(field):
            response[envoy_field] = _patterns(settings[field])
    if response:
        service["authorization_response"] = response
    return {"http_service": service}


def _grpc_service(settings: dict, service: Service, cluster: str) -> dict:
    return {"envoy_grpc": {"cluster_name": cluster, "authority": service.hostname}, "timeout": settings.get("timeout", DEFAULT_TIMEOUT)}


def _enabled_by(rbac_filter: str) -> dict:
    """Run only where the shadow rules of that RBAC filter matched a CUSTOM rule."""
    return {"filter": rbac_filter, "path": [{"key": f"{SHADOW_PREFIX}shadow_effective_policy_id"}], "value": {"string_match": {"prefix": POLICY_PREFIX}}}


def is_grpc_provider(mesh: Mesh, custom: list[Resource]) -> bool:
    provider = provider_spec(mesh, custom[0].spec["provider"]["name"])
    return provider is not None and provider[0] == EXT_AUTHZ_GRPC


def network_ext_authz_filter(mesh: Mesh, custom: list[Resource], stat_prefix: str) -> dict:
    """The network ext_authz filter of a TCP chain for CUSTOM policies of a gRPC provider."""
    dummy, settings = provider_spec(mesh, custom[0].spec["provider"]["name"])
    service = provider_service(mesh, settings)
    cluster = outbound_cluster_name(int(settings["port"]), "", service.hostname)
    config: dict = {"stat_prefix": stat_prefix, "grpc_service": _grpc_service(settings, service, cluster), "transport_api_version": "V3"}
    if settings.get("failOpen"):
        config["failure_mode_allow"] = True
    config["filter_enabled_metadata"] = _enabled_by("envoy.filters.network.rbac")
    return {"name": NETWORK_EXT_AUTHZ_FILTER, "typed_config": typed(NETWORK_EXT_AUTHZ, **config)}


def _ext_authz_filter(mesh: Mesh, provider: str) -> dict:
    kind, settings = provider_spec(mesh, provider)
    service = provider_service(mesh, settings)
    port = int(settings["port"])
    cluster = outbound_cluster_name(port, "", service.hostname)
    if kind == EXT_AUTHZ_HTTP:
        config = _http_service(settings, service.hostname, port, cluster)
    else:
        config = {"grpc_service": _grpc_service(settings, service, cluster)}
    config["transport_api_version"] = "V3"
    if settings.get("failOpen"):
        config["failure_mode_allow"] = True
    if "statusOnError" in settings:
        config["status_on_error"] = {"code": int(settings["statusOnError"])}
    config["filter_enabled_metadata"] = _enabled_by("envoy.filters.http.rbac")
    return {"name": EXT_AUTHZ_FILTER, "typed_config": typed(EXT_AUTHZ, **config)}


def ext_authz_filter(mesh: Mesh, custom: list[Resource]) -> dict:
    """The ext_authz filter of a workload's CUSTOM policies (one provider: validation refuses
    more); compile/authorization.py puts the shadow RBAC filter that enables it before it."""
    return _ext_authz_filter(mesh, custom[0].spec["provider"]["name"])
