"""The user state of a flow (Windmill's `set_flow_user_state` / `get_flow_user_state`).

JSON values by key, kept in the KV store under namespace `flow_user_state` as
`<flow job id>.<key>`. `wmill` addresses the state by the root job of the run that calls it;
Flowmill has no flows yet, so that is the top run of a script and of the runs it started.
"""

from __future__ import annotations

import base64
import re

from app.errors import BadRequest, NotFound
from app.services.actor import Actor
from app.services.jobs import Jobs
from app.services.kv import KeyValueStore

NAMESPACE = "flow_user_state"
MAX_KEY_BYTES = 300
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_.@=+-]+$")


def entry_key(flow_id: str, key: str) -> str:
    """The KV key of `key` in the state of `flow_id`.

    Windmill takes any key; the KV store a narrower set. A key that fits stays readable
    (`<id>.<key>`); any other is base64url after a `:`, which neither a job id nor a plain
    key holds, so two keys never share an entry.
    """
    if len(key.encode()) > MAX_KEY_BYTES:
        raise BadRequest(f"a flow user state key is at most {MAX_KEY_BYTES} bytes")
    plain = f"{flow_id}.{key}"
    if _PLAIN_KEY.match(key) and ".." not in plain:
        return plain
    return f"{flow_id}:{base64.urlsafe_b64encode(key.encode()).decode().rstrip('=')}"


class FlowUserState:
    """Reads and writes flow user state (built per request: it holds no state of its own)."""

    def __init__(self, kv: KeyValueStore, jobs: Jobs) -> None:
        self.kv = kv
        self.jobs = jobs

    async def set(self, actor: Actor, flow_id: str, key: str, body: bytes) -> None:
        """Store the JSON `body` (empty: null) at `key`; 404 when there is no run `flow_id`."""
        await self.jobs.get(actor.workspace, flow_id)
        value = self.kv.encode(body if body.strip() else b"null")
        await self.kv.put(actor, NAMESPACE, entry_key(flow_id, key), value)

    async def get(self, actor: Actor, flow_id: str, key: str) -> str | None:
        """The JSON text at `key`, None when unset; 404 when there is no run `flow_id`."""
        await self.jobs.get(actor.workspace, flow_id)
        try:
            value, _ = await self.kv.get(actor.workspace, NAMESPACE, entry_key(flow_id, key))
        except NotFound:
            return None
        return value
