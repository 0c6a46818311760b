"""The secret values each run has been given, kept out of what the run leaves behind.

A run learns a secret when its arguments' `$var:`/`$res:`/`$cred:` references are resolved, or
when its token reads a secret variable, a resource holding one, or a credential. Each such value
is masked (`***`) in the run's log lines, its result and its error as they are stored, the way
CI systems mask their secrets. Values shorter than `MIN_LENGTH` are not masked: masking every
`1` or `ab` in a log would hide the log, not the secret.

The masks live in the process that carries the run out (the one its lines and result pass
through); they are forgotten when the run ends.
"""

from __future__ import annotations

import msgspec

MASK = "***"
MIN_LENGTH = 4


class Masks:
    """run id -> the secret values it was given."""

    def __init__(self) -> None:
        self._runs: dict[str, set[str]] = {}

    def learn(self, run_id: str | None, value: str) -> None:
        """Remember that run `run_id` was given the secret `value`."""
        if run_id is None or len(value) < MIN_LENGTH:
            return
        self._runs.setdefault(run_id, set()).add(value)

    def of(self, run_id: str) -> set[str]:
        """The run's secrets: a live set, which grows as the run learns more."""
        return self._runs.setdefault(run_id, set())

    def forget(self, run_id: str) -> None:
        self._runs.pop(run_id, None)


def hide(text: str, secrets: set[str]) -> str:
    """`text` with every secret of `secrets` replaced by `***` (the longest first, so a secret
    that holds another is masked whole)."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def hide_json(text: str, secrets: set[str]) -> str:
    """JSON text with the secrets masked inside its strings (keys included); its numbers and
    structure are left whole, so a secret such as `1234` cannot break the document."""
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return hide(text, secrets)
    return msgspec.json.encode(_walk(value, secrets)).decode()


def _walk(value: object, secrets: set[str]) -> object:
    if isinstance(value, str):
        return hide(value, secrets)
    if isinstance(value, list):
        return [_walk(item, secrets) for item in value]
    if isinstance(value, dict):
        return {hide(key, secrets): _walk(item, secrets) for key, item in value.items()}
    return value
