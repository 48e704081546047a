"""Envoy's own view of generated config: every resource must parse into its Envoy proto
(xds-protos), unknown fields rejected, every typed_config's @type known."""

from __future__ import annotations

import collections
import functools
import hashlib
import importlib
import json
import pkgutil

from google.protobuf import json_format

from meshwright.compile.envoy_values import TYPE_PREFIX


@functools.lru_cache(maxsize=None)
def _import_package(package: str) -> bool:
    """Import every *_pb2 module of a proto package (registers its types)."""
    try:
        module = importlib.import_module(package)
    except ImportError:
        return False
    for path in getattr(module, "__path__", []):
        for info in pkgutil.iter_modules([path]):
            if info.name.endswith("_pb2"):
                importlib.import_module(f"{package}.{info.name}")
    return True


@functools.lru_cache(maxsize=None)
def message_class(type_name: str):
    """The generated class of a full proto type name, e.g. envoy.config.listener.v3.Listener."""
    from google.protobuf import symbol_database

    package = type_name.rsplit(".", 1)[0]
    _import_package(package)
    try:
        return symbol_database.Default().GetSymbol(type_name)
    except KeyError:
        return None


def _type_urls(value, found: set) -> None:
    if isinstance(value, dict):
        type_url = value.get("@type")
        if isinstance(type_url, str):
            found.add(type_url)
        for item in value.values():
            _type_urls(item, found)
    elif isinstance(value, list):
        for item in value:
            _type_urls(item, found)


def check_resource(type_name: str, resource: dict) -> str | None:
    """None when resource parses as type_name; otherwise the parser's message."""
    found: set = set()
    _type_urls(resource, found)
    for type_url in sorted(found):
        if not type_url.startswith(TYPE_PREFIX) or message_class(type_url[len(TYPE_PREFIX):]) is None:
            return f"unknown type {type_url!r}"
    cls = message_class(type_name)
    try:
        json_format.ParseDict(resource, cls(), ignore_unknown_fields=False)
    except json_format.ParseError as error:
        return str(error)
    return None


def resource_digest(type_name: str, resource: dict) -> bytes | None:
    """SHA-256 of the type and the resource's deterministic JSON serialization; None when the
    resource is not plain JSON data (then it is checked on its own, never shared)."""
    try:
        text = json.dumps(resource, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return None
    return hashlib.sha256(f"{type_name}\n{text}".encode()).digest()  # 32 bytes: half a hex key's memory


class ResourceVerdicts:
    """check_resource by content, for one run: proxies of one scope share most of their
    resources, and the same bytes get the same verdict, so each distinct one is parsed once.
    The least recently used verdicts are dropped beyond `limit`: what proxies share is seen
    again and again and stays; what is one proxy's own would only cost memory."""

    def __init__(self, limit: int = 1 << 17) -> None:
        self._verdicts: collections.OrderedDict[bytes, str | None] = collections.OrderedDict()
        self._limit = limit

    def check(self, type_name: str, resource: dict) -> str | None:
        key = resource_digest(type_name, resource)
        if key is None:
            return check_resource(type_name, resource)
        if key in self._verdicts:
            self._verdicts.move_to_end(key)
            return self._verdicts[key]
        verdict = self._verdicts[key] = check_resource(type_name, resource)
        if len(self._verdicts) > self._limit:
            self._verdicts.popitem(last=False)
        return verdict


TYPES = {
    "listeners": "envoy.config.listener.v3.Listener",
    "routes": "envoy.config.route.v3.RouteConfiguration",
    "clusters": "envoy.config.cluster.v3.Cluster",
    "endpoints": "envoy.config.endpoint.v3.ClusterLoadAssignment",
    "bootstrap": "envoy.config.bootstrap.v3.Bootstrap",
}

