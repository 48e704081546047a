"""VirtualService http routes -> Envoy routes; virtual hosts and route configurations."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from meshwright.compile.clusters import effective_policy, outbound_cluster_name
from meshwright.compile.envoy_values import (
    CORS_FILTER, CORS_POLICY, FAULT, FAULT_FILTER, GRPC_STATUS_CODES, duration, fractional_percent, string_match, typed,
)
from meshwright.compile.proxy import Proxy
from meshwright.mesh import Mesh, labels_match, resolve_host
from meshwright.model.resource import Resource

# Istio's default retry policy when a route sets none.
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
PREVIOUS_HOSTS = "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
PREVIOUS_PRIORITIES = "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig"
REDIRECT_CODES = {301: "MOVED_PERMANENTLY", 302: "FOUND", 303: "SEE_OTHER", 307: "TEMPORARY_REDIRECT", 308: "PERMANENT_REDIRECT"}
MESH_GATEWAY = "mesh"  # the gateway name that means the sidecars


@dataclass(frozen=True)
class RouteContext:
    """Where HTTP routes are built, which decides the matches that apply (Istio's
    sourceMatchHTTP and match.port): the gateways there ("mesh" for a sidecar, a gateway's
    "namespace/name"), the port of the host addressed (a sidecar's service port, a gateway
    server's port; also a redirect's derivePort FROM_REQUEST_PORT) and whether the listener
    terminates TLS (a redirect's default scheme)."""

    gateways: frozenset[str]
    port: int
    tls: bool = False


def sidecar_context(port: int) -> RouteContext:
    return RouteContext(frozenset({MESH_GATEWAY}), port)


def qualified_gateway(name: str, namespace: str) -> str:
    """A gateway name as written in a VirtualService ("mesh", "name" or "namespace/name")
    -> "mesh" or "namespace/name" (short names are in the VirtualService's namespace)."""
    return name if name == MESH_GATEWAY or "/" in name else f"{namespace}/{name}"


def match_applies(match: dict, proxy: Proxy, context: RouteContext, namespace: str) -> bool:
    """Whether a match of a VirtualService in namespace applies where routes are built: its
    port is the host's port, and its gateways name one there, or else (Istio ignores them
    when gateways are named) the proxy has its sourceLabels and is in its sourceNamespace."""
    if match.get("port", context.port) != context.port:
        return False
    if "gateways" in match:
        return any(qualified_gateway(name, namespace) in context.gateways for name in match["gateways"])
    if not labels_match(match.get("sourceLabels") or {}, proxy.label_map):
        return False
    return match.get("sourceNamespace", proxy.namespace) == proxy.namespace


def l4_match_applies(match: dict, proxy: Proxy, context: RouteContext, namespace: str) -> bool:
    """Whether a tcp or tls match of a VirtualService in namespace applies where it is built
    (Istio's matchTCP and matchTLS): every field given holds, the port, one of its gateways,
    the proxy's sourceLabels and sourceNamespace (unlike an HTTP match, naming gateways does
    not set sourceLabels aside)."""
    if match.get("port", context.port) != context.port:
        return False
    if "gateways" in match and not any(qualified_gateway(name, namespace) in context.gateways for name in match["gateways"]):
        return False
    return labels_match(match.get("sourceLabels") or {}, proxy.label_map) and match.get("sourceNamespace", proxy.namespace) == proxy.namespace


def tcp_route_applies(route: dict, proxy: Proxy, context: RouteContext, namespace: str) -> bool:
    """A tcp route applies where it has no match, or one of its matches applies."""
    return any(l4_match_applies(match, proxy, context, namespace) for match in route.get("match") or [{}])


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


def _is_internal_header(name: str) -> bool:
    """Pseudo-headers and Host, which Envoy does not let header operations touch."""
    return name.startswith(":") or name.lower() == "host"


def header_value_options(operations: dict) -> tuple[list, list]:
    """Istio set/add/remove -> (headers_to_add, headers_to_remove), without the Host header
    (authority_rewrite says what becomes of it)."""
    add = []
    for name, value in sorted((operations.get("set") or {}).items()):
        if not _is_internal_header(name):
            add.append({"header": {"key": name, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"})
    for name, value in sorted((operations.get("add") or {}).items()):
        if not _is_internal_header(name):
            add.append({"header": {"key": name, "value": value}, "append_action": "APPEND_IF_EXISTS_OR_ADD"})
    return add, [name for name in operations.get("remove") or [] if not _is_internal_header(name)]


def authority_rewrite(headers: dict) -> str | None:
    """Istio turns a request header operation on :authority or Host into a host rewrite
    ('set' wins over 'add')."""
    request = headers.get("request") or {}
    for operation in ("set", "add"):
        for name, value in sorted((request.get(operation) or {}).items()):
            if name.lower() in (":authority", "host"):
                return value
    return None


def _apply_headers(target: dict, headers: dict) -> None:
    """Header operations onto a route or weighted cluster, after those it already has."""
    for direction in ("request", "response"):
        if direction in headers:
            add, remove = header_value_options(headers[direction])
            if add:
                target.setdefault(f"{direction}_headers_to_add", []).extend(add)
            if remove:
                target.setdefault(f"{direction}_headers_to_remove", []).extend(remove)


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
    for pseudo, field in ((":method", "method"), (":authority", "authority"), (":scheme", "scheme")):
        if field in match:
            headers.append(header_matcher(pseudo, match[field]))
    for name, value in sorted((match.get("headers") or {}).items()):
        headers.append(header_matcher(name.lower(), value))
    for name, value in sorted((match.get("withoutHeaders") or {}).items()):
        matcher = header_matcher(name.lower(), value)
        matcher["invert_match"] = True
        if "string_match" in matcher:
            # Envoy never matches a missing header, inverted or not; Istio's withoutHeaders
            # means "not this value", which a request without the header satisfies.
            matcher["treat_missing_header_as_empty"] = True
        headers.append(matcher)
    if headers:
        out["headers"] = headers
    params = []
    for name, value in sorted((match.get("queryParams") or {}).items()):
        params.append({"name": name, **({"string_match": string_match(value)} if value else {"present_match": True})})
    if params:
        out["query_parameters"] = params
    return out


def header_matcher(name: str, match: dict) -> dict:
    """An Istio StringMatch on a header; an empty one ({}) asks only that the header is there."""
    if not match:
        return {"name": name, "present_match": True}
    return {"name": name, "string_match": string_match(match)}


def hash_policy(mesh: Mesh, host: str, client: Proxy, subset: str, port: int | None) -> dict | None:
    """The consistentHash of the DestinationRule traffic policy that applies to a destination
    (subset and port level included) -> a route hash_policy (Envoy hashes on the route)."""
    policy = effective_policy(mesh, host, client, subset, port)
    consistent = (policy.get("loadBalancer") or {}).get("consistentHash")
    if not consistent:
        return None
    if "httpHeaderName" in consistent:
        return {"header": {"header_name": consistent["httpHeaderName"]}}
    if "httpQueryParameterName" in consistent:
        return {"query_parameter": {"name": consistent["httpQueryParameterName"]}}
    if "httpCookie" in consistent:
        cookie = consistent["httpCookie"]
        out = {"name": cookie["name"]}
        if "path" in cookie:
            out["path"] = cookie["path"]
        if "ttl" in cookie:
            out["ttl"] = duration(cookie["ttl"])
        return {"cookie": out}
    return {"connection_properties": {"source_ip": True}}


def destination_hash_policy(mesh: Mesh, destination: dict, namespace: str, client: Proxy) -> dict | None:
    """namespace: the VirtualService's (short hosts are relative to it); client: the proxy
    (its namespace and labels choose its DestinationRule, as for its clusters)."""
    host = resolve_host(destination["host"], namespace)
    return hash_policy(mesh, host, client, destination.get("subset", ""), destination_port(mesh, destination, namespace))


def retry_policy(retries: dict | None, consistent_hash: bool = False) -> dict:
    """Istio HTTPRetry -> Envoy RetryPolicy ({} when retries are off). None: Istio's default
    (2 attempts on connect failures, refused streams and 503). Retries go to another host than
    the one that failed, except when the route hashes to one host (consistent hashing)."""
    if retries is not None and retries["attempts"] == 0:
        return {}
    policy: dict = {"retry_on": DEFAULT_RETRY_ON, "num_retries": 2, "retriable_status_codes": [503]}
    if retries is not None:
        policy["num_retries"] = retries["attempts"]
        if "retryOn" in retries:
            conditions = retries["retryOn"].split(",")
            codes = sorted({int(c) for c in conditions if c.isdigit()})
            named = [c for c in conditions if not c.isdigit()]
            if codes and "retriable-status-codes" not in named:
                named.append("retriable-status-codes")
            policy["retry_on"] = ",".join(named)
            policy.pop("retriable_status_codes")
            if codes:
                policy["retriable_status_codes"] = codes
    if not consistent_hash:
        policy["retry_host_predicate"] = [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": typed(PREVIOUS_HOSTS)}]
    if retries is not None and "retryIgnorePreviousHosts" in retries:
        # Istio: set, it decides alone whether retries avoid the hosts already tried.
        policy.pop("retry_host_predicate", None)
        if retries["retryIgnorePreviousHosts"]:
            policy["retry_host_predicate"] = [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": typed(PREVIOUS_HOSTS)}]
    policy["host_selection_retry_max_attempts"] = "5"
    if retries is not None and "perTryTimeout" in retries:
        policy["per_try_timeout"] = duration(retries["perTryTimeout"])
    if retries is not None and retries.get("retryRemoteLocalities"):
        policy["retry_priority"] = {"name": "envoy.retry_priorities.previous_priorities", "typed_config": typed(PREVIOUS_PRIORITIES, update_frequency=2)}
    if retries is not None and "backoff" in retries:
        policy["retry_back_off"] = {"base_interval": duration(retries["backoff"])}
    return policy


def weighted_destinations(destinations: list[dict]) -> list[tuple[dict, int]]:
    """Istio's relative weights -> (route entry, weight) of the destinations that get traffic:
    a single destination gets all of it whatever its weight; of several, one of weight 0 (or
    none) gets nothing and the others weight / sum of the weights (Envoy sums them itself)."""
    if len(destinations) == 1:
        return [(destinations[0], 100)]
    return [(entry, entry["weight"]) for entry in destinations if entry.get("weight")]


def route_action(mesh: Mesh, http: dict, namespace: str, client: Proxy) -> dict:
    served = weighted_destinations(http["route"])
    action: dict = {}
    hashing = []
    if len(served) == 1:
        # One destination left (Istio's rewrite to a single cluster): its headers go on the route.
        action["cluster"] = destination_cluster(mesh, served[0][0]["destination"], namespace)
    else:
        clusters = []
        for entry, weight in served:
            weighted = {"name": destination_cluster(mesh, entry["destination"], namespace), "weight": weight}
            _apply_headers(weighted, entry.get("headers") or {})
            authority = authority_rewrite(entry.get("headers") or {})
            if authority:
                weighted["host_rewrite_literal"] = authority
            clusters.append(weighted)
        action["weighted_clusters"] = {"clusters": clusters}
    for entry, dummy in served:
        policy = destination_hash_policy(mesh, entry["destination"], namespace, client)
        if policy and policy not in hashing:
            hashing.append(policy)
    action["timeout"] = duration(http["timeout"]) if "timeout" in http else "0s"
    retries = retry_policy(http.get("retries"), consistent_hash=len(served) == 1 and bool(hashing))
    if retries:
        action["retry_policy"] = retries
    rewrite = http.get("rewrite") or {}
    if "uri" in rewrite:
        action["prefix_rewrite"] = rewrite["uri"]
    if "uriRegexRewrite" in rewrite:
        action["regex_rewrite"] = {"pattern": {"regex": rewrite["uriRegexRewrite"]["match"]}, "substitution": rewrite["uriRegexRewrite"]["rewrite"]}
    # The host: rewrite.authority, else a request header operation on :authority/Host (of
    # the route, else of its only destination).
    authority = rewrite.get("authority") or authority_rewrite(http.get("headers") or {})
    if not authority and len(served) == 1:
        authority = authority_rewrite(served[0][0].get("headers") or {})
    if authority:
        action["host_rewrite_literal"] = authority
    percentage = http.get("mirrorPercentage") or ({"value": http["mirrorPercent"]} if "mirrorPercent" in http else None)
    mirrors = [(http["mirror"], percentage)] if "mirror" in http else []
    mirrors += [(entry["destination"], entry.get("percentage")) for entry in http.get("mirrors") or []]
    policies = [mirror_policy(mesh, target, percentage, namespace) for target, percentage in mirrors]
    if any(policies):
        action["request_mirror_policies"] = [policy for policy in policies if policy]
    if hashing:
        action["hash_policy"] = hashing
    return action


def mirror_policy(mesh: Mesh, target: dict, percentage: dict | None, namespace: str) -> dict | None:
    """A request mirror policy (mirror with mirrorPercentage, or an entry of mirrors): 100%
    by default; Istio mirrors nothing at an explicit 0%."""
    percent = (percentage or {"value": 100})["value"]
    if percent <= 0:
        return None
    return {"cluster": destination_cluster(mesh, target, namespace), "runtime_fraction": {"default_value": fractional_percent(percent)}, "trace_sampled": False}


def redirect_port(redirect: dict, context: RouteContext) -> int | None:
    """The port a redirect names: its port, or with derivePort FROM_REQUEST_PORT the port the
    routes are built for (Envoy cannot read the request's; Istio does the same). None: the
    URL keeps no port; FROM_PROTOCOL_DEFAULT, and a scheme's default port, as Istio writes it."""
    port = redirect.get("port") or (context.port if redirect.get("derivePort") == "FROM_REQUEST_PORT" else None)
    scheme = redirect.get("scheme") or ("https" if context.tls else "http")
    if (scheme, port) in (("http", 80), ("https", 443)):
        return None
    return port


def redirect_action(redirect: dict, context: RouteContext) -> dict:
    out: dict = {}
    if "uri" in redirect:
        out["path_redirect"] = redirect["uri"]
    if "authority" in redirect:
        out["host_redirect"] = redirect["authority"]
    port = redirect_port(redirect, context)
    if port:
        out["port_redirect"] = port
    if "scheme" in redirect:
        out["scheme_redirect"] = redirect["scheme"]
    out["response_code"] = REDIRECT_CODES[redirect.get("redirectCode", 301)]
    return out


def direct_response_action(response: dict) -> dict:
    """Istio's directResponse: the status, and a body of text or bytes (base64, as Envoy's
    JSON takes them too)."""
    out: dict = {"status": response["status"]}
    body = response.get("body") or {}
    if "string" in body:
        out["body"] = {"inline_string": body["string"]}
    elif "bytes" in body:
        out["body"] = {"inline_bytes": body["bytes"]}
    return out


def fault_config(fault: dict) -> dict:
    out: dict = {}
    if "delay" in fault:
        delay = fault["delay"]
        share = delay["percent"] if "percent" in delay else delay.get("percentage", {"value": 100})["value"]
        out["delay"] = {"fixed_delay": duration(delay["fixedDelay"]), "percentage": fractional_percent(share)}
    if "abort" in fault:
        abort = fault["abort"]
        code = {"http_status": abort["httpStatus"]} if "httpStatus" in abort else {"grpc_status": GRPC_STATUS_CODES.index(abort["grpcStatus"])}
        out["abort"] = {**code, "percentage": fractional_percent(abort.get("percentage", {"value": 100})["value"])}
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
    if "unmatchedPreflights" in cors:
        out["forward_not_matching_preflights"] = cors["unmatchedPreflights"] == "FORWARD"
    return typed(CORS_POLICY, **out)


def translate_http_route(mesh: Mesh, proxy: Proxy, virtual_service: Resource, index: int, context: RouteContext) -> list[dict]:
    """One Istio HTTPRoute -> Envoy routes (one per match that applies to this proxy there)."""
    http = virtual_service.spec["http"][index]
    namespace = virtual_service.namespace
    matches = http.get("match") or [{}]
    applicable = [m for m in matches if match_applies(m, proxy, context, namespace)]
    if not applicable:
        return []
    base: dict = {}
    if "redirect" in http:
        base["redirect"] = redirect_action(http["redirect"], context)
    elif "directResponse" in http:
        base["direct_response"] = direct_response_action(http["directResponse"])
    else:
        base["route"] = route_action(mesh, http, namespace, proxy)
    _apply_headers(base, http.get("headers") or {})
    served = weighted_destinations(http.get("route") or [])
    if len(served) == 1:
        _apply_headers(base, served[0][0].get("headers") or {})
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
        # Each route owns its action: EnvoyFilter patches change one route, not its siblings.
        route = {"name": route_name, "match": route_match(match), **(copy.deepcopy(base) if match_index else base)}
        if "statPrefix" in match:
            route["stat_prefix"] = match["statPrefix"]
        routes.append(route)
    return routes


def default_route(mesh: Mesh, proxy: Proxy, service, port) -> dict:
    """The route of a service no VirtualService routes: everything to its cluster, hashed as
    its DestinationRule says (Istio keeps consistent hashing without a VirtualService)."""
    action: dict = {"cluster": outbound_cluster_name(port.number, "", service.hostname), "timeout": "0s", "retry_policy": retry_policy(None)}
    hashing = hash_policy(mesh, service.hostname, proxy, "", port.number)
    if hashing:
        action["hash_policy"] = [hashing]
    return {"name": "default", "match": {"prefix": "/"}, "route": action}


def virtual_service_routes(mesh: Mesh, proxy: Proxy, virtual_service: Resource, context: RouteContext) -> list[dict]:
    """The routes of a VirtualService's http section that apply to the proxy there; none
    means the VirtualService does not route there (Istio then leaves it out)."""
    routes = []
    for index in range(len(virtual_service.spec.get("http") or [])):
        routes.extend(translate_http_route(mesh, proxy, virtual_service, index, context))
    return routes
