"""Envoy's own view of generated config: every resource must parse into its Envoy proto
(xds-protos), unknown fields rejected, every typed_config's @type known."""

from __future__ import annotations

import functools
import importlib
import json
import re
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


# Fields that are proto strings (or lists of them) wherever Envoy's config protos have them
# (tests/unit/test_envoy_proto_shapes.py checks that), as is the name of every resource
# (not every nested "name": a SocketOption's is a number): any text parses there, so a
# resource's verdict does not depend on their values, only on everything else.
FREE_TEXT_FIELDS = ("cluster_name", "service_name", "alt_stat_name", "sni", "stat_prefix", "address", "cluster", "domains")
# (field, its first field) pairs where the inner field is text in every message the outer one
# may hold, the SPIFFE ID in a peer's subject alt name matcher: `"matcher":{"exact":...`.
FREE_TEXT_FIRST_FIELDS = (("matcher", "exact"),)
# In compact JSON: such a field's string, or its list of strings (a string's body unrolled:
# runs of plain characters at a time, which is twice as fast as one character at a time).
_STRING = r'"[^"\\]*(?:\\.[^"\\]*)*"'
_FREE_TEXT = re.compile(r'"(%s)":(?:%s|\[(?:%s,?)*\])' % ("|".join(
    FREE_TEXT_FIELDS + tuple(f'{outer}":\\{{"{inner}' for outer, inner in FREE_TEXT_FIRST_FIELDS)), _STRING, _STRING))
# Fields that are proto uint32 (or its wrapper, google.protobuf.UInt32Value) wherever Envoy's
# config protos have them (tests/unit/test_envoy_proto_shapes.py): any number of up to nine
# digits parses there, so a load assignment's verdict does not depend on its endpoints' ports
# and weights (Marathon's tasks come and go on ports of their own). Taken out of load
# assignments' shapes alone: the other types do not pay for a second pass.
UINT32_FIELDS = ("port_value", "load_balancing_weight")
LOAD_ASSIGNMENT = "envoy.config.endpoint.v3.ClusterLoadAssignment"
_UINT32 = re.compile(r'"(%s)":[0-9]{1,9}(?![0-9.eE])' % "|".join(UINT32_FIELDS))
# Fields whose items resources of different proxies share (the same objects): a route
# configuration's virtual hosts are built once per mesh (compile/virtual_hosts.py), so the
# shape of each is written once per run and a route configuration's is the join of theirs.
SHARED_ITEMS = {"envoy.config.route.v3.RouteConfiguration": "virtual_hosts"}


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _shape_text(value, numbers: bool = False) -> str:
    """Compact JSON with the text of FREE_TEXT_FIELDS taken out (TypeError, ValueError when
    value is not plain JSON data). Keys in the order they were made: the same code makes
    the same order, and two orders of one resource would only cost a second parse (equal
    text is equal content)."""
    text = _FREE_TEXT.sub(r'"\1":_', _ENCODER.encode(value))
    return _UINT32.sub(r'"\1":0', text) if numbers else text


def resource_shape(type_name: str, resource: dict, items: dict[int, tuple[dict, str]] | None = None) -> str | None:
    """The type and the resource's shape: its compact JSON with the text of FREE_TEXT_FIELDS
    and its name taken out, so two clusters that differ only in names and addresses share
    it. None when the resource is not plain JSON data (then it is checked on its own).
    items: the run's shapes of SHARED_ITEMS by object (the same text, written once)."""
    unnamed = {**resource, "name": ""} if "name" in resource else resource
    field = SHARED_ITEMS.get(type_name)
    shared = unnamed.get(field) if field else None
    try:
        # Exact types: only plain JSON lists of objects are shared.
        if items is None or type(shared) is not list or not all(type(item) is dict for item in shared):  # pylint: disable=unidiomatic-typecheck
            return type_name + "\n" + _shape_text(unnamed, type_name == LOAD_ASSIGNMENT)
        # The JSON encoder writes a list item by item with "," between: the same text.
        parts = _shape_text({**unnamed, field: _MARK}).split(f'"{field}":{_ENCODER.encode(_MARK)}')
        if len(parts) != 2:
            return type_name + "\n" + _shape_text(unnamed)
        return type_name + "\n" + parts[0] + f'"{field}":[' + ",".join(_item_shape(item, items) for item in shared) + "]" + parts[1]
    except (TypeError, ValueError):
        return None


_MARK = "\0shared items"  # where the items go in the text of the rest


def _item_shape(item: dict, items: dict[int, tuple[dict, str]]) -> str:
    found = items.get(id(item))
    if found is None:
        found = items[id(item)] = (item, _shape_text(item))  # holds the item: its id is not reused
    return found[1]


class ResourceVerdicts:
    """check_resource by shape, for one run: classes of proxies share most of their
    resources, services' clusters differ mostly in names, and the same shape gets the same
    verdict, so each distinct shape is parsed once.
    A resource object met again (classes hold the same objects: compiled config is never
    changed once built) is not even serialized again.
    Beyond `limit` entries a table is emptied: what proxies share is met again soon and
    comes back; what was one proxy's own would only cost memory."""

    def __init__(self, limit: int = 1 << 17) -> None:
        self._verdicts: dict[str, str | None] = {}  # shape -> verdict
        # id -> (the object, which keeps its id from being reused, its type and its verdict)
        self._seen: dict[int, tuple[dict, str, str | None]] = {}
        self._items: dict[int, tuple[dict, str]] = {}  # id -> (a shared item, its shape)
        self._limit = limit

    def check(self, type_name: str, resource: dict) -> str | None:
        seen = self._seen.get(id(resource))
        if seen is not None and seen[1] == type_name:
            return seen[2]
        verdict = self._check(type_name, resource)
        if len(self._seen) >= self._limit:
            self._seen.clear()
        self._seen[id(resource)] = (resource, type_name, verdict)
        return verdict

    def _check(self, type_name: str, resource: dict) -> str | None:
        if len(self._items) >= self._limit:
            self._items.clear()
        shape = resource_shape(type_name, resource, self._items)
        if shape is None:
            return check_resource(type_name, resource)
        if shape in self._verdicts:
            return self._verdicts[shape]
        if len(self._verdicts) >= self._limit:
            self._verdicts.clear()
        verdict = self._verdicts[shape] = check_resource(type_name, resource)
        return verdict


TYPES = {
    "listeners": "envoy.config.listener.v3.Listener",
    "routes": "envoy.config.route.v3.RouteConfiguration",
    "clusters": "envoy.config.cluster.v3.Cluster",
    "endpoints": "envoy.config.endpoint.v3.ClusterLoadAssignment",
    "bootstrap": "envoy.config.bootstrap.v3.Bootstrap",
}
