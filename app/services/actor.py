"""Who is acting, in which workspace, with which role: what every service call is given."""

from __future__ import annotations

import dataclasses
import time

from app.errors import Forbidden

ROLES = ("viewer", "executor", "editor", "admin")
RANK = {role: rank for rank, role in enumerate(ROLES)}
OPTIONAL = "optional"  # a handler's opt["role"] when it works signed in or not (registration)


def lowest(role: str, other: str) -> str:
    """The lower of two roles."""
    return role if RANK[role] <= RANK[other] else other


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
    # Set when the caller holds a run's token (WM_TOKEN): the run it belongs to and when the
    # token expires (epoch seconds). Such a caller acts as the run's identity, only while the
    # run lives, and cannot make anything that would outlive it (tokens, users, members).
    run_id: str | None = None
    run_token_exp: int | None = None
    run_cap: str | None = None  # a run's token: the most it may hold
    status: int = 200  # what the request answers when it succeeds, for its audit entry
    # The targets a service audited in the transaction of its change (`audit.entry`); a
    # mutating request that succeeds with none is audited by the server (middleware). None:
    # nothing to track (a read, a handler that declares no audit).
    audited: list[str] | None = None


def refuse_run_token(actor: Actor, what: str) -> None:
    """Forbidden when the caller is a run's token: `what` would outlive the run."""
    if actor.run_id is not None:
        raise Forbidden(f"a run's token cannot {what}")


def now_ms() -> int:
    return int(time.time() * 1000)
