"""`/api/v1/kv/{namespace}/{key}`: JSON values by key."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import MediaType, Request, delete, get, put
from litestar.openapi.datastructures import ResponseSpec
from litestar.response.base import ASGIResponse
from litestar.params import Parameter

from app.api.bounds import check_depth
from app.api.context import context
from app.api.documented import ANY_JSON


_ENCODER = msgspec.json.Encoder()


class KvEntryOut(msgspec.Struct, rename="camel"):
    namespace: str
    key: str
    value: Any
    updated_at: int


class KvWritten(msgspec.Struct, rename="camel"):
    namespace: str
    key: str
    updated_at: int


class KvKey(msgspec.Struct, rename="camel"):
    key: str
    updated_at: int


class KvKeys(msgspec.Struct, rename="camel"):
    items: list[KvKey]
    next_cursor: str | None


@put("/kv/{namespace:str}/{key:str}", opt={"role": "editor", "audit": "kv.put", "body": ANY_JSON})
async def put_entry(namespace: str, key: str, request: Request) -> KvWritten:
    """Set a key to the JSON value in the body; durable before the answer."""
    services, actor = context(request)
    body = await request.body()
    check_depth(body)
    value = services.kv.encode(body)
    return KvWritten(namespace, key, await services.kv.put(actor, namespace, key, value))


@get("/kv/{namespace:str}/{key:str}", opt={"role": "viewer"}, responses={200: ResponseSpec(KvEntryOut)})
async def get_entry(request: Request, namespace: str, key: str) -> ASGIResponse:
    """The value of a key, as JSON."""
    services, actor = context(request)
    value, updated_at = await services.kv.get(actor.workspace, namespace, key)
    # The stored text is already canonical JSON: pass it through without decoding it, and
    # answer with the bytes as they are (this is the hottest read of the API).
    body = _ENCODER.encode(KvEntryOut(namespace, key, msgspec.Raw(value.encode()), updated_at))
    return ASGIResponse(body=body, media_type=MediaType.JSON)


@delete("/kv/{namespace:str}/{key:str}", opt={"role": "editor", "audit": "kv.delete"})
async def delete_entry(request: Request, namespace: str, key: str) -> None:
    services, actor = context(request)
    await services.kv.delete(actor, namespace, key)


@get("/kv/{namespace:str}", opt={"role": "viewer"})
async def list_keys(
    request: Request,
    namespace: str,
    prefix: str = "",
    cursor: str | None = None,
    limit: int = Parameter(default=100, ge=1, le=1000),
) -> KvKeys:
    """Keys of a namespace in order, filtered by prefix, a page at a time."""
    services, actor = context(request)
    items, next_cursor = await services.kv.keys(actor.workspace, namespace, prefix, cursor, limit)
    return KvKeys([KvKey(**i) for i in items], next_cursor)


HANDLERS = [put_entry, get_entry, delete_entry, list_keys]
