"""The reference: a bare Litestar handler on Granian's embedded server, served the way
Flowmill serves itself (one process, ASGI without lifespan)."""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from granian.constants import Interfaces
from granian.server.embed import Server
from litestar import Litestar, Request, get, post, put


@get("/ref/{key:str}")
async def read(key: str) -> dict[str, Any]:
    """A small JSON object, as a key-value read answers."""
    return {"key": key, "value": {"n": 1}}


@put("/ref/{key:str}")
async def write(key: str, request: Request) -> dict[str, Any]:
    """Decode the JSON body, answer a small JSON object, as a key-value write does."""
    await request.json()
    return {"key": key, "updatedAt": 0}


@post("/ref/{key:str}", status_code=200)
async def submit(key: str, request: Request) -> dict[str, Any]:
    """Decode the JSON body and echo it, as a synchronous script run does."""
    return {"key": key, "body": await request.json()}


async def serve(port: int) -> None:
    """Serve on 127.0.0.1:`port` until SIGINT or SIGTERM."""
    server = Server(
        Litestar([read, write, submit], openapi_config=None, logging_config=None),
        address="127.0.0.1", port=port, interface=Interfaces.ASGINL, log_enabled=False, backlog=1024,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.stop)
    await server.serve()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))
