"""VirtualService http routes -> Envoy routes; virtual hosts and route configurations."""

from __future__ import annotations

from meshwright.compile.clusters import outbound_cluster_name
from meshwright.compile.envoy_values import (
    CORS_FILTER, CORS_POLICY, FAULT, FAULT_FILTER, duration, fractional_percent, string_match, typed,
)
from meshwright.compile.proxy import Proxy
from meshwright.model.mesh import Mesh, labels_match, resolve_host
from meshwright.model.resource import Resource

# Istio's default retry policy when a route sets none.
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
PREVIOUS_HOSTS = "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
REDIRECT_CODES = {301: "MOVED_PERMANENTLY", 302: "FOUND", 303: "SEE_OTHER", 307: "TEMPORARY_REDIRECT", 308: "PERMANENT_REDIRECT"}


def destination_port(mesh: Mesh, destination: dict, namespace: str) -> int | None:
    """The service port a destination means: its port.number, or the service's only port."""
    if "port" in destination:
        return destination["port"]["number"]
    service = mesh.registry.get(resolve_host(destination["host"], namespace))
    if service is not None and len(service.ports) == 1:
        return service.ports[0].number
    return None


def destination_cluster(mesh: Mesh, destination: dict, namespace: str) -> str:
    host = resolve_host(destination["host"], namespace)
    port = destination_port(mesh, destination, namespace)
    return outbound_cluster_name(port or 0, destination.get("subset", ""), host)


def header_value_options(operations: dict) -> tuple[list, list]:
    """Istio set/add/remove -> (headers_to_add, headers_to_remove)."""
    add = []
    for name, value in sorted((operations.get("set") or {}).items()):
        add.append({"header": {"key": name, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"})
    for name, value in sorted((operations.get("add") or {}).items()):
        add.append({"header": {"key": name, "value": value}, "append_action": "APPEND_IF_EXISTS_OR_ADD"})
    return add, list(operations.get("remove") or [])


def _apply_headers(target: dict, headers: dict, prefix: str = "") -> None:
    for direction in ("request", "response"):
        if direction in headers:
            add, remove = header_value_options(headers[direction])
            if add:
                target[f"{direction}_headers_to_add"] = add
            if remove:
                target[f"{direction}_headers_to_remove"] = remove


def route_match(match: dict) -> dict:
    ignore_case = match.get("ignoreUriCase", False)
    out: dict = {}
    uri = match.get("uri")
    if uri is None:
        out["prefix"] = "/"
    elif "exact" in uri:
        out["path"] = uri["exact"]
    elif "prefix" in uri:
        out["prefix"] = uri["prefix"]
    else:
        out["safe_regex"] = {"regex": uri["regex"]}
    if ignore_case:
        out["case_sensitive"] = False
    headers = []
    for pseudo, field in ((":method", "method"), (":authority", "authority")):
        if field in match:
            headers.append({"name": pseudo, "string_match": string_match(match[field])})
    for name, value in sorted((match.get("headers") or {}).items()):
        headers.append({"name": name.lower(), "string_match": string_match(value)})
    for name, value in sorted((match.get("withoutHeaders") or {}).items()):
        headers.append({"name": name.lower(), "string_match": string_match(value), "invert_match": True})
    if headers:
        out["headers"] = headers
    params = [{"name": name, "string_match": string_match(value)} for name, value in sorted((match.get("queryParams") or {}).items())]
    if params:
        out["query_parameters"] = params
    return out


def hash_policy(mesh: Mesh, host: str, namespace: str, port: int | None) -> list:
    """DestinationRule consistentHash -> route hash_policy (Envoy hashes on the route)."""
    from meshwright.compile.clusters import effective_policy

    policy = effective_policy(mesh, host, namespace, "", port)
    consistent = (policy.get("loadBalancer") or {}).get("consistentHash")
    if not consistent:
        return []
    if "httpHeaderName" in consistent:
        return [{"header": {"header_name": consistent["httpHeaderName"]}}]
    if "httpCookie" in consistent:
        cookie = consistent["httpCookie"]
        out = {"name": cookie["name"]}
        if "path" in cookie:
            out["path"] = cookie["path"]
        if "ttl" in cookie:
            out["ttl"] = duration(cookie["ttl"])
        return [{"cookie": out}]
    return [{"connection_properties": {"source_ip": True}}]


def retry_policy(retries: dict) -> dict:
    """Istio HTTPRetry -> Envoy RetryPolicy ({} when retries are off)."""
    if retries["attempts"] == 0:
        return {}
    conditions = retries.get("retryOn", DEFAULT_RETRY_ON).split(",")
    codes = sorted({int(c) for c in conditions if c.isdigit()})
    named = [c for c in conditions if not c.isdigit()]
    if codes and "retriable-status-codes" not in named:
        named.append("retriable-status-codes")
    policy = {
        "retry_on": ",".join(named),
        "num_retries": retries["attempts"],
        "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": typed(PREVIOUS_HOSTS)}],
        "host_selection_retry_max_attempts": "5",
    }
    if "retriable-status-codes" in named:
        policy["retriable_status_codes"] = codes or [503]
    if "perTryTimeout" in retries:
        policy["per_try_timeout"] = duration(retries["perTryTimeout"])
    return policy


def route_action(mesh: Mesh, http: dict, namespace: str) -> dict:
    destinations = http["route"]
    action: dict = {}
    if len(destinations) == 1:
        action["cluster"] = destination_cluster(mesh, destinations[0]["destination"], namespace)
    else:
        clusters = []
        for entry in destinations:
            weighted = {"name": destination_cluster(mesh, entry["destination"], namespace), "weight": entry.get("weight", 0)}
            _apply_headers(weighted, entry.get("headers") or {})
            clusters.append(weighted)
        action["weighted_clusters"] = {"clusters": clusters}
    action["timeout"] = duration(http["timeout"]) if "timeout" in http else "0s"
    policy = retry_policy(http.get("retries", {"attempts": 2}))
    if policy:
        action["retry_policy"] = policy
    rewrite = http.get("rewrite") or {}
    if "uri" in rewrite:
        action["prefix_rewrite"] = rewrite["uri"]
    if "uriRegexRewrite" in rewrite:
        action["regex_rewrite"] = {"pattern": {"regex": rewrite["uriRegexRewrite"]["match"]}, "substitution": rewrite["uriRegexRewrite"]["rewrite"]}
    if "authority" in rewrite:
        action["host_rewrite_literal"] = rewrite["authority"]
    if "mirror" in http:
        mirror = {"cluster": destination_cluster(mesh, http["mirror"], namespace)}
        mirror["runtime_fraction"] = {"default_value": fractional_percent(http.get("mirrorPercentage", {"value": 100})["value"])}
        action["request_mirror_policies"] = [mirror]
    first = destinations[0]["destination"]
    hashing = hash_policy(mesh, resolve_host(first["host"], namespace), namespace, destination_port(mesh, first, namespace))
    if hashing:
        action["hash_policy"] = hashing
    return action


def redirect_action(redirect: dict) -> dict:
    out: dict = {}
    if "uri" in redirect:
        out["path_redirect"] = redirect["uri"]
    if "authority" in redirect:
        out["host_redirect"] = redirect["authority"]
    if "port" in redirect:
        out["port_redirect"] = redirect["port"]
    if "scheme" in redirect:
        out["scheme_redirect"] = redirect["scheme"]
    out["response_code"] = REDIRECT_CODES[redirect.get("redirectCode", 301)]
    return out


def fault_config(fault: dict) -> dict:
    out: dict = {}
    if "delay" in fault:
        delay = fault["delay"]
        out["delay"] = {"fixed_delay": duration(delay["fixedDelay"]), "percentage": fractional_percent(delay.get("percentage", {"value": 100})["value"])}
    if "abort" in fault:
        abort = fault["abort"]
        out["abort"] = {"http_status": abort["httpStatus"], "percentage": fractional_percent(abort.get("percentage", {"value": 100})["value"])}
    return typed(FAULT, **out)


def cors_config(cors: dict) -> dict:
    out: dict = {}
    if "allowOrigins" in cors:
        out["allow_origin_string_match"] = [string_match(m) for m in cors["allowOrigins"]]
    for istio, envoy in (("allowMethods", "allow_methods"), ("allowHeaders", "allow_headers"), ("exposeHeaders", "expose_headers")):
        if istio in cors:
            out[envoy] = ",".join(cors[istio])
    if "maxAge" in cors:
        out["max_age"] = str(int(duration(cors["maxAge"])[:-1].split(".")[0]))
    if "allowCredentials" in cors:
        out["allow_credentials"] = cors["allowCredentials"]
    return typed(CORS_POLICY, **out)


def translate_http_route(mesh: Mesh, proxy: Proxy, virtual_service: Resource, index: int) -> list[dict]:
    """One Istio HTTPRoute -> Envoy routes (one per match that applies to this proxy)."""
    http = virtual_service.spec["http"][index]
    namespace = virtual_service.namespace
    matches = http.get("match") or [{}]
    applicable = [m for m in matches if labels_match(m.get("sourceLabels") or {}, proxy.label_map)]
    base: dict = {}
    if "redirect" in http:
        base["redirect"] = redirect_action(http["redirect"])
    else:
        base["route"] = route_action(mesh, http, namespace)
    _apply_headers(base, http.get("headers") or {})
    if len(http.get("route") or []) == 1:
        _apply_headers(base, http["route"][0].get("headers") or {})
    per_filter = {}
    if "fault" in http:
        per_filter[FAULT_FILTER] = fault_config(http["fault"])
    if "corsPolicy" in http:
        per_filter[CORS_FILTER] = cors_config(http["corsPolicy"])
    if per_filter:
        base["typed_per_filter_config"] = per_filter
    routes = []
    for match_index, match in enumerate(applicable):
        route_name = http.get("name") or f"{virtual_service.namespace}.{virtual_service.name}.{index}"
        if match.get("name"):
            route_name = f"{route_name}.{match['name']}"
        elif len(applicable) > 1:
            route_name = f"{route_name}.{match_index}"
        routes.append({"name": route_name, "match": route_match(match), **base})
    return routes


def default_route(cluster: str) -> dict:
    """The route of a service no VirtualService routes: everything to its cluster."""
    return {"name": "default", "match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "0s", "retry_policy": retry_policy({"attempts": 2})}}


def virtual_service_routes(mesh: Mesh, proxy: Proxy, virtual_service: Resource) -> list[dict]:
    routes = []
    for index in range(len(virtual_service.spec.get("http") or [])):
        routes.extend(translate_http_route(mesh, proxy, virtual_service, index))
    return routes
