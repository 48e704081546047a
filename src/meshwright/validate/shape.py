"""A small declarative schema language for the Istio API, and its checker.

Each schema node checks one value, reports problems through a callback with the field path,
and returns the value with its invalid parts pruned (INVALID when the value itself is bad).
So every problem of a document is found in one pass, and later checks (references,
semantics) run on what is sound without repeating a shape problem as a second error. Objects reject unknown fields
with a did-you-mean suggestion, and may carry hints: a message for a field people commonly
put in the wrong place, saying how to express the intent instead.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import functools
import ipaddress
import re
from typing import Callable

import re2

from meshwright import names
from meshwright.model.duration import parse_duration
from meshwright.problems import PrunedList

Report = Callable[[tuple, str], None]


class _Invalid:
    def __repr__(self) -> str:
        return "INVALID"


INVALID = _Invalid()


@functools.lru_cache(maxsize=4096)
def close_matches(word: str, possibilities: tuple[str, ...]) -> list[str]:
    """The did-you-mean of a misspelling; remembered, since a generated config repeats its
    mistakes thousands of times and difflib is slow."""
    return difflib.get_close_matches(word, possibilities, n=1, cutoff=0.6)


def type_name(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping"}.get(type(value), type(value).__name__)


def _kept_as_is(value: dict, out: dict) -> dict:
    """value itself when checking kept every field of it as it was, else out: a sound
    document is not copied (the mesh of a large estate then holds it once)."""
    if len(out) == len(value) and all(out.get(key, INVALID) is item for key, item in value.items()):
        return value
    return out


class Schema:
    description = "a value"

    def check(self, value: object, path: tuple, report: Report) -> object:
        """Report problems; return the value with invalid parts pruned, or INVALID."""
        problem = self.problem(value)
        if problem:
            report(path, problem)
            return INVALID
        return value

    def problem(self, value: object) -> str | None:
        """For scalar schemas: what is wrong with value, or None."""
        raise NotImplementedError


class Unsupported(Schema):
    """A field of the Istio API that meshwright does not act on yet: refused, whatever its
    value, with the house message and what to do instead."""

    def __init__(self, instead: str):
        self.instead = instead

    def check(self, value, path, report):
        report(path, f"{path[-1]} is not supported by meshwright yet ({self.instead})")
        return INVALID


class Any(Schema):
    description = "any value"

    def problem(self, value):
        return None


class Str(Schema):
    description = "a string"

    def __init__(self, pattern: str | None = None, pattern_help: str = "", non_empty: bool = False, valid: Callable[[str], bool] | None = None):
        """pattern: a regex the whole value must match (fullmatch: "$" would let a trailing
        newline through); valid: a predicate instead (meshwright.names); pattern_help: what
        either expects, for the message."""
        self.pattern = re.compile(pattern) if pattern else None
        self.valid = valid
        self.pattern_help = pattern_help
        self.non_empty = non_empty

    def problem(self, value):
        if not isinstance(value, str):
            return f"expected {self.description}, got {type_name(value)} {value!r}"
        if self.non_empty and not value:
            return "must not be empty"
        if (self.pattern and not self.pattern.fullmatch(value)) or (self.valid and not self.valid(value)):
            return f"{value!r} is not {self.pattern_help or 'valid'}"
        return None


# Envoy's regex engine is RE2: \pL is a class there, lookaround is not (Python's re differs
# both ways). Errors come back as exceptions, not also as lines on stderr.
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
# Envoy refuses a regex whose compiled RE2 program is larger (its default error level). The
# sizes Envoy reports are those of the pattern's bytes compiled as Latin-1 (\pL+: 12, not
# the 1201 of a UTF-8 program), measured against Envoy 1.40: so they are computed here.
ENVOY_MAX_PROGRAM_SIZE = 100
_PROGRAM_SIZE_OPTIONS = re2.Options()
_PROGRAM_SIZE_OPTIONS.log_errors = False
_PROGRAM_SIZE_OPTIONS.encoding = re2.Options.Encoding.LATIN1


def _envoy_program_size(pattern: str) -> int | None:
    """The RE2 program size Envoy gives the pattern (None where it cannot be told here)."""
    try:
        return re2.compile(pattern.encode(), options=_PROGRAM_SIZE_OPTIONS).programsize
    except re2.error:
        return None


class Regex(Schema):
    description = "a regular expression (RE2)"

    def problem(self, value):
        if not isinstance(value, str):
            return f"expected {self.description}, got {type_name(value)}"
        try:
            re2.compile(value, options=_RE2_OPTIONS)
        except re2.error as error:
            reason = error.args[0].decode(errors="replace") if error.args and isinstance(error.args[0], bytes) else str(error)
            return f"regex {value!r} is not valid RE2, Envoy's regex syntax: {reason} (github.com/google/re2/wiki/Syntax)"
        size = _envoy_program_size(value)
        if size is not None and size > ENVOY_MAX_PROGRAM_SIZE:
            return (f"regex {value!r} is too large for Envoy: its RE2 program size is {size}, Envoy refuses more than {ENVOY_MAX_PROGRAM_SIZE} "
                    "(use fewer repetitions or alternatives)")
        return None


class Base64(Schema):
    description = "base64-encoded bytes"

    def __init__(self, max_bytes: int | None = None):
        self.max_bytes = max_bytes

    def problem(self, value):
        if not isinstance(value, str):
            return f"expected {self.description}, got {type_name(value)}"
        try:
            decoded = base64.b64decode(value, validate=True)
        except binascii.Error:
            return f"{_short(value)!r} is not base64 (A-Z, a-z, 0-9, + and /, padded with = to a multiple of 4 characters)"
        if self.max_bytes is not None and len(decoded) > self.max_bytes:
            return f"{len(decoded)} bytes is too long: at most {self.max_bytes}"
        return None


class Address(Schema):
    description = "an IP address"

    def problem(self, value):
        if not isinstance(value, str):
            return f"expected {self.description}, got {type_name(value)}"
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return f"{value!r} is not an IP address"
        return None


class AddressOrRange(Schema):
    """An IP address or a CIDR range (10.0.0.0/16); host bits may be set (192.192.192.192/24),
    as Istio and Go's ParseCIDR allow."""

    description = "an IP address or a CIDR range"

    def problem(self, value):
        if not isinstance(value, str):
            return f"expected {self.description}, got {type_name(value)}"
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            return f"{value!r} is not {self.description}"
        return None


class Int(Schema):
    def __init__(self, minimum: int | None = None, maximum: int | None = None):
        self.minimum, self.maximum = minimum, maximum

    @property
    def description(self):
        if self.minimum is not None and self.maximum is not None:
            return f"an integer from {self.minimum} to {self.maximum}"
        if self.minimum is not None:
            return f"an integer of at least {self.minimum}"
        return "an integer"

    def problem(self, value):
        if isinstance(value, bool) or not isinstance(value, int):
            return f"expected {self.description}, got {type_name(value)} {value!r}"
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            return f"{value} is out of range: expected {self.description}"
        return None


def Port() -> Int:
    return Int(1, 65535)


class Number(Schema):
    def __init__(self, minimum: float | None = None, maximum: float | None = None):
        self.minimum, self.maximum = minimum, maximum

    @property
    def description(self):
        if self.minimum is not None and self.maximum is not None:
            return f"a number from {self.minimum:g} to {self.maximum:g}"
        return "a number"

    def problem(self, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"expected {self.description}, got {type_name(value)} {value!r}"
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            return f"{value:g} is out of range: expected {self.description}"
        return None


class Bool(Schema):
    description = "true or false"

    def problem(self, value):
        if not isinstance(value, bool):
            return f"expected {self.description}, got {type_name(value)} {value!r}"
        return None


class Duration(Schema):
    description = "a duration such as 500ms, 1.5s, 2m or 1h"

    def __init__(self, minimum_seconds: float = 0.0, maximum: tuple[float, str] | None = None):
        self.minimum_seconds = minimum_seconds
        self.maximum = maximum  # (seconds, how the limit reads: "2160h (90 days, Istio's cap)")

    def problem(self, value):
        try:
            seconds = parse_duration(value)
        except ValueError:
            return f"{value!r} is not {self.description}"
        if seconds < self.minimum_seconds:
            return f"{value!r} is too short: at least {self.minimum_seconds:g}s"
        if self.maximum and seconds > self.maximum[0]:
            return f"{_short(value)!r} is too long: at most {self.maximum[1]}"
        return None


def _short(text: str) -> str:
    return text if len(text) <= 40 else f"{text[:20]}...{text[-10:]}"


class Enum(Schema):
    """One of values. fold_case: the values are upper-case names that may be written in any
    case (Istio parses protocol names so: tcp, Http2); the value kept is the upper-case one,
    which later checks and the compiler compare."""

    def __init__(self, *values, hints: dict[str, str] | None = None, fold_case: bool = False):
        self.values = values
        self.hints = hints or {}
        self.fold_case = fold_case

    @property
    def description(self):
        return "one of " + ", ".join(str(v) for v in self.values) + (" (in any case)" if self.fold_case else "")

    def _key(self, value):
        return value.upper() if self.fold_case and isinstance(value, str) else value

    def check(self, value, path, report):
        checked = super().check(value, path, report)
        return checked if checked is INVALID else self._key(checked)

    def problem(self, value):
        key = self._key(value)
        if key in self.values and type(key) is type(self.values[0]):
            return None
        message = f"{value!r} is not valid: expected {self.description}"
        close = close_matches(str(key), tuple(str(v) for v in self.values))
        if close:
            message += f" (did you mean {close[0]}?)"
        if key in self.hints:
            message += ". " + self.hints[key]
        return message


class ListOf(Schema):
    def __init__(self, item: Schema, min_items: int = 0):
        self.item, self.min_items = item, min_items

    @property
    def description(self):
        return f"a list of {self.item.description}"

    def check(self, value, path, report):
        if not isinstance(value, list):
            report(path, f"expected {self.description}, got {type_name(value)}")
            return INVALID
        if len(value) < self.min_items:
            report(path, f"needs at least {self.min_items} item{'s' if self.min_items > 1 else ''}")
            return INVALID
        items = [self.item.check(item, path + (index,), report) for index, item in enumerate(value)]
        kept = [item for item in items if item is not INVALID]
        if len(kept) < self.min_items:
            return INVALID
        if len(kept) < len(items):
            return PrunedList(kept, [index for index, item in enumerate(items) if item is not INVALID])
        return value if all(item is original for item, original in zip(kept, value)) else kept


class MapOf(Schema):
    """A mapping of names to values."""

    keys = "names"

    def __init__(self, value: Schema):
        self.value = value

    @property
    def description(self):
        return f"a mapping of {self.keys} to {self.value.description}"

    def key(self, key):
        """(the key to keep, or None with the problem)."""
        if not isinstance(key, str):
            return None, f"keys must be strings, got {type_name(key)}"
        return key, None

    def check(self, value, path, report):
        if not isinstance(value, dict):
            report(path, f"expected {self.description}, got {type_name(value)}")
            return INVALID
        out = {}
        for key, item in value.items():
            kept, problem = self.key(key)
            if problem:
                report(path + (key,), problem)
                continue
            checked = self.value.check(item, path + (key,), report)
            if checked is not INVALID:
                out[kept] = checked
        return _kept_as_is(value, out)


class Labels(MapOf):
    """Kubernetes labels (a workload's, a selector's): keys and values as Kubernetes checks
    them, so that a newline or a space never reaches a label Envoy or a host sees."""

    keys = "label keys"

    def __init__(self):
        super().__init__(Str(valid=names.is_label_value, pattern_help=names.LABEL_VALUE_HELP))

    def key(self, key):
        if not names.is_label_key(key):
            return None, f"{key!r} is not {names.LABEL_KEY_HELP}"
        return key, None


class PortMapOf(MapOf):
    """A mapping of port numbers to values (Istio's portLevelMtls); numbers written as
    strings ("8080") are accepted as in YAML keys, and the result has int keys."""

    keys = "port numbers"

    def key(self, key):
        number = int(key) if isinstance(key, str) and key.isdigit() else key
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 65535:
            return None, f"{key!r} is not a port number (1 to 65535)"
        return number, None


class Obj(Schema):
    """A mapping with known fields.

    required: fields that must be present. one_of: groups of which at most one field may be
    set; required_one_of: groups of which exactly one must be; required_any_of: groups of
    which at least one must be (empty_help: why, added to that message). hints: field name -> message
    for fields that are not valid here but that people write, saying what to do instead.
    essential: optional fields that, written but not valid, leave the mapping unsound as a
    whole (as a missing required field does): without them it would mean something else.
    """

    def __init__(
        self,
        name: str,
        fields: dict[str, Schema] | None = None,
        required: tuple[str, ...] = (),
        one_of: tuple[tuple[str, ...], ...] = (),
        required_one_of: tuple[tuple[str, ...], ...] = (),
        required_any_of: tuple[tuple[str, ...], ...] = (),
        hints: dict[str, str] | None = None,
        empty_help: str = "",
        essential: tuple[str, ...] = (),
    ):
        self.name = name
        self.fields = fields if fields is not None else {}
        self.required = required
        self.one_of = one_of
        self.required_one_of = required_one_of
        self.required_any_of = required_any_of
        self.hints = hints or {}
        self.empty_help = empty_help
        self.essential = essential
        self._at_most_one = one_of + required_one_of

    @property
    def description(self):
        return self.name

    def check(self, value, path, report):
        if not isinstance(value, dict):
            report(path, f"expected {self.name} (a mapping), got {type_name(value)} {value!r}")
            return INVALID
        # (A sound mapping, the usual case, is checked without building what it does not need.)
        unknown = [] if value.keys() <= self.fields.keys() else [key for key in value if key not in self.fields]
        for key in unknown:
            report(path + (key,), self.unknown_field_message(key))
        out = {}
        for key, item in value.items():
            if key in self.fields:
                checked = self.fields[key].check(item, path + (key,), report)
                if checked is not INVALID:
                    out[key] = checked
        # A field with a hint says the mapping expresses its intent another way: it is dropped
        # as a whole, and its missing fields would only repeat that, so they are not reported.
        # A mapping with a mistyped field is kept (without it) when it is sound otherwise, so
        # what it holds is still checked.
        if unknown and any(key in self.hints for key in unknown):
            return INVALID
        complain = report if not unknown else (lambda path, message: None)
        valid = True
        for key in self.required:
            if key not in value:
                complain(path, f"missing required field {key!r} of {self.name}")
                valid = False
        for group in self._at_most_one:
            present = [key for key in group if key in value]
            if len(present) > 1:
                complain(path, f"set only one of {', '.join(group)} (found {', '.join(present)})")
                valid = False
        for group in self.required_one_of:
            if not any(key in value for key in group):
                complain(path, f"{self.name} needs one of {', '.join(group)}")
                valid = False
        for group in self.required_any_of:
            if not any(key in value for key in group):
                complain(path, f"{self.name} needs at least one of {', '.join(group)}" + (f": {self.empty_help}" if self.empty_help else ""))
                valid = False
        if not valid or any(key not in out for key in self.required) or any(key in value and key not in out for key in self.essential):
            return INVALID
        return _kept_as_is(value, out)

    def unknown_field_message(self, key) -> str:
        known = sorted(self.fields)
        message = f"unknown field {key!r} in {self.name}"
        close = close_matches(str(key), tuple(known))
        if close:
            message += f" (did you mean {close[0]!r}?)"
        else:
            message += f" (expected one of: {', '.join(known)})"
        if key in self.hints:
            message += ". " + self.hints[key]
        return message
