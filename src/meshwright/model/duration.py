"""Istio's duration strings ("500ms", "1.5s", "2m", "1h"): the one parser that the model,
the schema checks and the compiler share."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Istio duration ("500ms", "1.5s", "2m", "1h") to seconds; ValueError if malformed."""
    match = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
