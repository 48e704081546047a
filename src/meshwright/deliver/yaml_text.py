"""Config files as YAML text, fast: the text PyYAML's safe dumper writes for the same data
(sorted keys, block style, width 1000, no aliases), without building its node tree.

A proxy that sees 10,000 services has a cds file of 100 MB; PyYAML's representer spends
about 10 µs on every string and mapping of it, most of it deciding again how to write the
same few thousand distinct strings. Here each distinct string is decided once: plain when it
is plainly plain (the common case, by a pattern that stays inside what PyYAML writes plain),
otherwise as PyYAML writes it alone. What this module is not sure to write exactly as PyYAML
does (a string PyYAML would break over lines, a long key, a type other than JSON's) sends
the whole document to PyYAML: the text is the same either way
(tests/unit/test_yaml_text.py compares them on every golden case and on generated data).
"""
# Exact types, not isinstance: a bool is an int and a subclass may dump otherwise; such values go to PyYAML.
# pylint: disable=unidiomatic-typecheck

from __future__ import annotations

import re

import yaml


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # libyaml's emitter when PyYAML has it: the same text, faster
    """Never anchors and aliases: compiled config shares objects between resources (they are
    never changed), and each file spells every resource out whole, as Envoy's users read it."""

    def ignore_aliases(self, data) -> bool:
        return True


WIDTH = 1000

# Strings PyYAML writes plain: no indicator first, none of ": ", " #", spaces, quotes or
# non-ASCII anywhere, not ending in ":"; minus the words its resolvers would read back as
# a bool or null (the starting letters exclude numbers, dates and the rest).
_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_./|;=+@:-]*(?<!:)\Z")
_RESOLVED_WORDS = frozenset(("y", "n", "yes", "no", "true", "false", "on", "off", "null"))
# IPv4 addresses: four numbers read as no number, date or time, so PyYAML writes them plain.
_IPV4 = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}\Z")
# Longest string not of _PLAIN this module writes itself.
_LONGEST = 512
_CACHE_LIMIT = 1 << 18


class _Unsure(Exception):
    """The document holds something PyYAML might write differently than this module."""


def _alone(value) -> str:
    """How PyYAML writes value as the value of a block mapping."""
    text = yaml.dump({"k": value}, Dumper=_Dumper, default_flow_style=False, width=WIDTH)
    if text.count("\n") != 1:
        raise _Unsure(value)
    return text[3:-1]


def _key_alone(key) -> str:
    text = yaml.dump({key: 0}, Dumper=_Dumper, default_flow_style=False, width=WIDTH)
    if text.count("\n") != 1 or not text.endswith(": 0\n"):
        raise _Unsure(key)
    return text[:-4]


_multilines: dict[tuple[str, int], str] = {}


def _multiline(value: str, indent: int) -> str:
    """A string with line breaks as the value of a mapping at column indent: PyYAML writes
    it on several lines, continued at that column, so it is asked with the same nesting."""
    text = _multilines.get((value, indent))
    if text is None:
        if len(value) > 64 * _LONGEST or indent % 2:
            raise _Unsure(value)
        depth = indent // 2
        document: dict = {"k": value}
        for dummy in range(depth):
            document = {"a": document}
        lines = yaml.dump(document, Dumper=_Dumper, default_flow_style=False, width=WIDTH).split("\n")[depth:-1]
        if not lines[0].startswith(" " * indent + "k: ") or any(len(line) >= WIDTH - 8 - _LONGEST // 4 for line in lines):
            raise _Unsure(value)
        text = "\n".join(lines)[indent + 3:]
        if len(_multilines) >= 1024:
            _multilines.clear()
        _multilines[(value, indent)] = text
    return text


_strings: dict[str, str] = {}
_keys: dict[str, str] = {}


def _string(value: str) -> str:
    text = _strings.get(value)
    if text is None:
        if _PLAIN.match(value) and value.lower() not in _RESOLVED_WORDS or _IPV4.match(value):
            text = value
        elif len(value) > _LONGEST:
            raise _Unsure(value)
        else:
            text = _alone(value)
        if len(_strings) >= _CACHE_LIMIT:
            _strings.clear()
        _strings[value] = text
    return text


def _key(key) -> str:
    if not isinstance(key, str):
        raise _Unsure(key)
    text = _keys.get(key)
    if text is None:
        if len(key) >= 100:  # PyYAML writes keys of 128 characters and more as complex keys
            raise _Unsure(key)
        text = key if _PLAIN.match(key) and key.lower() not in _RESOLVED_WORDS else _key_alone(key)
        if len(_keys) >= _CACHE_LIMIT:
            _keys.clear()
        _keys[key] = text
    return text


def _scalar(value) -> str:
    if isinstance(value, str):
        return _string(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if type(value) is int:
        return str(value)
    if type(value) is float:
        return _alone(value)
    raise _Unsure(value)


def _mapping(mapping: dict, indent: int, first: str, lines: list[str], cache: TextCache | None = None, in_sequence: bool = False) -> None:
    """The mapping's keys at column indent; the first line starts with first (what a
    sequence item put before it), the others with spaces. in_sequence: the mapping is an item of a
    sequence (a resource in its list): the values of its fields are what cache keeps."""
    pad = " " * indent
    prefix = first
    for key, value in sorted(mapping.items()):  # keys are distinct: values are never compared
        head = f"{prefix}{_keys.get(key) or _key(key)}:"
        prefix = pad
        if type(value) is dict and value:
            lines.append(head)
            if cache is not None and in_sequence:
                lines += cache.lines(value, indent + 2, _mapping)
            else:
                _mapping(value, indent + 2, pad + "  ", lines, cache)
        elif type(value) is list and value:
            lines.append(head)
            # PyYAML writes a mapping's sequences unindented
            if cache is not None and in_sequence:
                lines += cache.lines(value, indent, _sequence)
            else:
                _sequence(value, indent, pad, lines, cache)
        else:
            lines.append(_line(f"{head} ", value, indent))


def _sequence(sequence: list, indent: int, first: str, lines: list[str], cache: TextCache | None = None) -> None:
    pad = " " * indent
    prefix = first
    for item in sequence:
        head = prefix + "- "
        prefix = pad
        if type(item) is dict and item:
            _mapping(item, indent + 2, head, lines, cache, in_sequence=True)
        elif type(item) is list and item:
            _sequence(item, indent + 2, head, lines, cache)
        else:
            lines.append(_line(head, item))


class TextCache:
    """The lines of the values of resources' fields, by the object and its column, for one
    run that writes many files: proxies of a class share those objects (compiled config is
    never changed), so each is written once. Holds the objects, so no id is reused while it
    is kept; emptied when it grows past `limit` entries."""

    def __init__(self, limit: int = 1 << 18) -> None:
        self._lines: dict[tuple[int, int], tuple[object, list[str]]] = {}
        self._limit = limit

    def lines(self, value, indent: int, write) -> list[str]:
        key = (id(value), indent)
        found = self._lines.get(key)
        if found is None:
            lines: list[str] = []
            write(value, indent, " " * indent, lines)
            if len(self._lines) >= self._limit:
                self._lines.clear()
            found = self._lines[key] = (value, lines)
        return found[1]


def _line(head: str, value, indent: int | None = None) -> str:
    """head, then value: a scalar, or an empty mapping or sequence. indent: the column of
    the mapping whose value it is (None for a sequence's item), where the lines of a
    multi-line string continue."""
    if type(value) is dict:
        return head + "{}"
    if type(value) is list:
        return head + "[]"
    if type(value) is str and "\n" in value and indent is not None:
        return head + _multiline(value, indent)
    text = _scalar(value)
    # Past the width PyYAML wraps a scalar at its spaces, and a double-quoted one anywhere.
    if len(head) + len(text) >= WIDTH - 8 and (" " in text or text.startswith('"')):
        raise _Unsure(value)
    return head + text


def pyyaml_text(document) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=True, default_flow_style=False, width=WIDTH)


def yaml_text(document, cache: TextCache | None = None) -> str:
    """document (a mapping of JSON's types) as the YAML text pyyaml_text gives, faster; with
    a cache, the values of resources' fields it has seen are not written again."""
    if type(document) is not dict or not document:
        return pyyaml_text(document)
    lines: list[str] = []
    try:
        _mapping(document, 0, "", lines, cache)
    except (_Unsure, TypeError):  # TypeError: keys that do not sort
        return pyyaml_text(document)
    lines.append("")
    return "\n".join(lines)
