"""Who is acting, in which workspace, with which role: what every service call is given."""

from __future__ import annotations

import dataclasses
import time

ROLES = ("viewer", "executor", "editor", "admin")
RANK = {role: rank for rank, role in enumerate(ROLES)}


def at_least(role: str | None, needed: str) -> bool:
    """True when `role` is `needed` or above it in viewer < executor < editor < admin."""
    return role is not None and RANK[role] >= RANK[needed]


@dataclasses.dataclass(frozen=True, slots=True)
class Actor:
    username: str | None  # None: nobody is signed in (registration, auth off)
    workspace: str
    role: str | None  # the role in `workspace`; None when not a member
    superadmin: bool = False
    request_id: str = ""
    action: str = ""  # what the request does, for the audit log ("kv.put")


def now_ms() -> int:
    return int(time.time() * 1000)
