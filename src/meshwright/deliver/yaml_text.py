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


def _mapping(mapping: dict, indent: int, first: str, lines: list[str]) -> None:
    """The mapping's keys at column indent; the first line starts with first (what a
    sequence item put before it), the others with spaces."""
    pad = " " * indent
    prefix = first
    for key, value in sorted(mapping.items()):  # keys are distinct: values are never compared
        head = f"{prefix}{_keys.get(key) or _key(key)}:"
        prefix = pad
        if type(value) is dict and value:
            lines.append(head)
            _mapping(value, indent + 2, pad + "  ", lines)
        elif type(value) is list and value:
            lines.append(head)
            _sequence(value, indent, pad, lines)  # PyYAML writes a mapping's sequences unindented
        else:
            lines.append(_line(f"{head} ", value))


def _sequence(sequence: list, indent: int, first: str, lines: list[str]) -> None:
    pad = " " * indent
    prefix = first
    for item in sequence:
        head = prefix + "- "
        prefix = pad
        if type(item) is dict and item:
            _mapping(item, indent + 2, head, lines)
        elif type(item) is list and item:
            _sequence(item, indent + 2, head, lines)
        else:
            lines.append(_line(head, item))


def _line(head: str, value) -> str:
    """head, then value: a scalar, or an empty mapping or sequence."""
    if type(value) is dict:
        return head + "{}"
    if type(value) is list:
        return head + "[]"
    text = _scalar(value)
    # Past the width PyYAML wraps a scalar at its spaces, and a double-quoted one anywhere.
    if len(head) + len(text) >= WIDTH - 8 and (" " in text or text.startswith('"')):
        raise _Unsure(value)
    return head + text


def pyyaml_text(document) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=True, default_flow_style=False, width=WIDTH)


def yaml_text(document) -> str:
    """document (a mapping of JSON's types) as the YAML text pyyaml_text gives, faster."""
    if type(document) is not dict or not document:
        return pyyaml_text(document)
    lines: list[str] = []
    try:
        _mapping(document, 0, "", lines)
    except (_Unsure, TypeError):  # TypeError: keys that do not sort
        return pyyaml_text(document)
    lines.append("")
    return "\n".join(lines)
