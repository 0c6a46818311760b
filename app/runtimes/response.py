"""The names by which a run's result sets the answer of the HTTP route that started it.

Declared once, read by the server (`app/api/respond.py`, which builds the answer) and by the
Python child (which marks a `result` that is `bytes`). A result is a *response object* when it
is a JSON object holding any of these keys; the body is then its `result` key. Flowmill's own
names come first: when a result holds a setting under two names, the first one wins.
"""

from __future__ import annotations

PREFIXES = ("flowmill_", "wm_", "windmill_")  # Flowmill's, Windmill's newer and its original names
SETTINGS = ("status_code", "content_type", "headers", "content_transfer_encoding")
NAMES: dict[str, tuple[str, ...]] = {setting: tuple(p + setting for p in PREFIXES) for setting in SETTINGS}
ALL_NAMES = frozenset(name for names in NAMES.values() for name in names)
BODY = "result"
BASE64 = "base64"  # the one transfer encoding: the body is base64 text of raw bytes
