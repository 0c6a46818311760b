"""Durations as flows write them: `500ms`, `2s`, `1m`, `1h30m`, `1d`, a bare number of seconds,
or ISO-8601 (`PT1M30S`, `P1DT2H`), the form Kestra flows use.

Years and months are refused: their length depends on the calendar, and a retry interval or a
timeout should mean the same thing every day.
"""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_NUMBER = r"\d+(?:\.\d+)?"
_SHORT = re.compile(rf"(?:{_NUMBER}\s*(?:ms|s|m|h|d|w)\s*)+")
_SHORT_PART = re.compile(rf"({_NUMBER})\s*(ms|s|m|h|d|w)")
_ISO = re.compile(
    rf"P(?:(?P<w>{_NUMBER})W)?(?:(?P<d>{_NUMBER})D)?"
    rf"(?:T(?:(?P<h>{_NUMBER})H)?(?:(?P<m>{_NUMBER})M)?(?:(?P<s>{_NUMBER})S)?)?",
    re.IGNORECASE,
)


def parse_duration(value: str | int | float) -> float:
    """Seconds in `value`; ValueError (with a message fit for a user) when it is not a
    non-negative duration. Callers that need a positive one check `> 0` themselves."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"not a duration: {value!r} (write e.g. 500ms, 30s, 5m, 1h30m or PT1M)")
    if isinstance(value, (int, float)):
        return _checked(float(value), value)
    text = value.strip()
    seconds: float | None = None
    try:
        seconds = float(text)
    except ValueError:
        if _SHORT.fullmatch(text):
            seconds = sum(float(n) * _UNITS[unit] for n, unit in _SHORT_PART.findall(text))
        else:
            seconds = _iso_seconds(text)
    if seconds is None:
        raise ValueError(f"not a duration: {value!r} (write e.g. 500ms, 30s, 5m, 1h30m or PT1M)")
    return _checked(seconds, value)


def _iso_seconds(text: str) -> float | None:
    match = _ISO.fullmatch(text)
    if match is None or text.upper() in ("P", "PT") or text.upper().endswith("T"):
        return None
    parts = {k: float(v) for k, v in match.groupdict().items() if v is not None}
    if not parts:
        return None
    return (
        parts.get("w", 0.0) * _UNITS["w"]
        + parts.get("d", 0.0) * _UNITS["d"]
        + parts.get("h", 0.0) * _UNITS["h"]
        + parts.get("m", 0.0) * _UNITS["m"]
        + parts.get("s", 0.0)
    )


def _checked(seconds: float, given: object) -> float:
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"not a duration: {given!r} (it must be a finite, non-negative time)")
    return seconds
