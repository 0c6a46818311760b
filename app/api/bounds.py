"""What numbers and nesting the wire may carry, declared once and checked where input enters.

Every number of a request that reaches the database is bounded where it is declared: the
fields of body Structs by the types here (msgspec `Meta`), query parameters by Litestar's
`Parameter(ge=..., le=...)` with the limits here (Litestar does not apply a `Meta` to a query
parameter). Both show in the OpenAPI document, and an out-of-range value is a 400 naming the
field, never a statement the database refuses. JSON numbers such as `1e20` are floats and
are refused where an integer is expected.

JSON bodies are nested `MAX_JSON_DEPTH` levels at most: deeper ones are a 400 before they
are decoded (a decoder, and every walk over the value afterwards, would recurse that deep).
"""

from __future__ import annotations

import itertools
import re
from typing import Annotated

from msgspec import Meta

from app.errors import BadRequest

INT32_MAX = 2**31 - 1
EPOCH_MS_MAX = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: any date a user means
DAY_S = 86_400
YEAR_S = 365 * DAY_S

EpochMs = Annotated[int, Meta(ge=0, le=EPOCH_MS_MAX, description="epoch milliseconds")]
Priority = Annotated[int, Meta(ge=-32_768, le=32_767)]  # higher runs first
Percent = Annotated[int, Meta(ge=0, le=100)]
TimeoutS = Annotated[float, Meta(gt=0, le=7 * DAY_S)]
WindowS = Annotated[float, Meta(gt=0, le=YEAR_S)]
CacheTtlS = Annotated[float, Meta(ge=0, le=YEAR_S)]
BackoffS = Annotated[float, Meta(ge=0, le=DAY_S)]
Attempts = Annotated[int, Meta(ge=0, le=100)]
ConcurrencyLimit = Annotated[int, Meta(ge=1, le=100_000)]
MAX_PAGE_NUMBER = 1_000_000
Count = Annotated[int, Meta(ge=1, le=100)]  # fire times of a schedule's preview
MAX_DELAY_S = 10 * YEAR_S  # how far ahead a run may be scheduled

MAX_JSON_DEPTH = 64

# A JSON string (its brackets are text), then the brackets: only these count for nesting.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def check_depth(body: bytes | str) -> None:
    """BadRequest when the JSON text nests arrays and objects deeper than `MAX_JSON_DEPTH`.

    Costs two byte counts for a body with few brackets (nearly every one); a body with many
    is measured in C-speed passes (strings blanked, brackets kept, a running sum)."""
    raw = body.encode() if isinstance(body, str) else body
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS).translate(_STEPS)
    depth = max(itertools.accumulate(memoryview(brackets).cast("b")), default=0)
    if depth > MAX_JSON_DEPTH:
        raise BadRequest(
            f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels", {"maxDepth": MAX_JSON_DEPTH}
        )


def seconds_from_now(text: str | None, name: str) -> float | None:
    """A query parameter in seconds (`scheduled_in_secs`, say): a finite number from 0 up to
    ten years, or BadRequest naming it."""
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        raise BadRequest(f"{name} is a number of seconds", {"field": name}) from None
    if not 0 <= seconds <= MAX_DELAY_S:  # also refuses nan and inf
        raise BadRequest(f"{name} must be between 0 and {MAX_DELAY_S} seconds", {"field": name})
    return seconds
