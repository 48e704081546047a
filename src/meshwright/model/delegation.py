"""VirtualService delegation (Istio's http[].delegate): an http route of a root VirtualService
hands what it matches to the http routes of a delegate, a VirtualService without hosts.

Merged as istiod merges them, so that the routes a proxy gets are Istio's: each delegate
route's matches are narrowed by the root route's (a delegate match needs a root match it does
not conflict with; a delegate route none of whose matches fits is left out), and a delegate
route inherits what the root route sets and it does not (rewrite, timeout, retries, fault,
mirrors, CORS, headers, a direct response).
"""

from __future__ import annotations

import dataclasses

from meshwright.model.resource import Resource, exported_to

# Fields of the root route a delegate route takes when it does not set them (Istio's list).
INHERITED = ("rewrite", "directResponse", "timeout", "retries", "fault", "mirror", "mirrorPercent", "mirrorPercentage", "corsPolicy", "mirrors", "headers")
_STRING_MATCHES = ("uri", "scheme", "method", "authority")
_MAP_MATCHES = ("headers", "withoutHeaders", "queryParams")


def is_delegate(virtual_service: Resource) -> bool:
    """A VirtualService without hosts routes only for the roots that delegate to it."""
    return not virtual_service.spec.get("hosts")


def delegate_key(route: dict, namespace: str) -> tuple[str, str]:
    """(namespace, name) of the delegate an http route names (its namespace: the root's by default)."""
    return route["delegate"].get("namespace", namespace), route["delegate"]["name"]


def merged_virtual_services(virtual_services: list[Resource]) -> list[Resource]:
    """The VirtualServices as proxies use them: roots with their delegates' routes merged in,
    no delegates. A delegate that does not exist or is not exported to the root's namespace
    gives no routes (validation reports it)."""
    delegates = {(vs.namespace, vs.name): vs for vs in virtual_services if is_delegate(vs)}
    out = []
    for virtual_service in virtual_services:
        if is_delegate(virtual_service):
            continue
        routes = virtual_service.spec.get("http") or []
        if any("delegate" in route for route in routes):
            virtual_service = dataclasses.replace(virtual_service, spec={**virtual_service.spec, "http": _merged_routes(virtual_service, routes, delegates)})
        out.append(virtual_service)
    return out


def _merged_routes(root: Resource, routes: list[dict], delegates: dict) -> list[dict]:
    merged = []
    for route in routes:
        if "delegate" not in route:
            merged.append(route)
            continue
        delegate = delegates.get(delegate_key(route, root.namespace))
        if delegate is not None and exported_to(delegate, root.namespace):
            merged += [m for m in (merge_route(route, sub) for sub in delegate.spec.get("http") or []) if m is not None]
    return merged


def merge_route(root: dict, delegate: dict) -> dict | None:
    """A delegate route under a root route, or None when its matches conflict with the root's."""
    matches = merge_matches(root.get("match") or [], delegate.get("match") or [])
    if matches is None:
        return None
    out = {key: value for key, value in delegate.items() if key != "match"}
    if matches:
        out["match"] = matches
    name = _joined_name(root.get("name", ""), delegate.get("name", ""))
    if name:
        out["name"] = name
    for field in INHERITED:
        if field not in out and field in root:
            out[field] = root[field]
    return out


def _joined_name(root: str, delegate: str) -> str:
    return f"{root}-{delegate}" if root and delegate else delegate or root


def merge_matches(root: list[dict], delegate: list[dict]) -> list[dict] | None:
    """Each delegate match merged with every root match it does not conflict with; None when
    one of them fits no root match."""
    if not root:
        return delegate
    if not delegate:
        return root
    out = []
    for sub in delegate:
        fitting = [merge_match(match, sub) for match in root if not has_conflict(match, sub)]
        if not fitting:
            return None
        out += fitting
    return out


def merge_match(root: dict, delegate: dict) -> dict:
    out = dict(delegate)
    name = _joined_name(root.get("name", ""), delegate.get("name", ""))
    if name:
        out["name"] = name
    for field in (*_STRING_MATCHES, "port", "sourceNamespace", "statPrefix"):
        if field not in out and field in root:
            out[field] = root[field]
    for field in (*_MAP_MATCHES, "sourceLabels"):
        both = {**(root.get(field) or {}), **(delegate.get(field) or {})}
        if both:
            out[field] = both
    if not out.get("gateways") and root.get("gateways"):
        out["gateways"] = root["gateways"]
    return out


def has_conflict(root: dict, leaf: dict) -> bool:
    """Whether a delegate match asks for what its root match excludes (Istio's rules)."""
    if any(_string_match_conflict(root.get(field), leaf.get(field)) for field in _STRING_MATCHES):
        return True
    for field in _MAP_MATCHES:
        if any(_string_match_conflict((root.get(field) or {}).get(key), value) for key, value in (leaf.get(field) or {}).items()):
            return True
    if root.get("ignoreUriCase", False) != leaf.get("ignoreUriCase", False):
        return True
    if root.get("port") and leaf.get("port") and root["port"] != leaf["port"]:
        return True
    if root.get("sourceNamespace") and leaf.get("sourceNamespace") != root["sourceNamespace"]:
        return True
    if any(key in (root.get("sourceLabels") or {}) and root["sourceLabels"][key] != value for key, value in (leaf.get("sourceLabels") or {}).items()):
        return True
    root_gateways, leaf_gateways = root.get("gateways") or [], leaf.get("gateways") or []
    return bool(root_gateways and leaf_gateways and not set(leaf_gateways) <= set(root_gateways))


def _string_match_conflict(root: dict | None, leaf: dict | None) -> bool:
    """A delegate's string match must be within its root's: the same exact value, a longer
    prefix or an exact value under the root's prefix; regexes only without the other's."""
    if root is None or leaf is None:
        return False
    if "regex" in root or "regex" in leaf:
        return True
    if "exact" in root:
        return "prefix" in leaf or leaf.get("exact") != root["exact"]
    if "prefix" in root:
        value = leaf.get("prefix", leaf.get("exact"))
        return value is None or not value.startswith(root["prefix"])
    return True
