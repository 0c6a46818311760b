"""`/api/v1/plugins`: the catalogue of task types a flow may use, with their JSON Schemas."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, get

from app.api.context import context
from app.errors import NotFound
from app.plugins import Manifest


class PluginOut(msgspec.Struct, rename="camel"):
    """A plugin's manifest: `inputSchema` describes a task's `properties`, `outputSchema` what
    later tasks read as `outputs.<task>`."""

    id: str
    name: str
    category: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    credential: str | None  # the credential or resource type it takes
    role: str  # the role the flow's identity needs to run it
    control: bool  # flow.*: run by the flow runner itself


def plugin_out(manifest: Manifest) -> PluginOut:
    return PluginOut(
        id=manifest.id, name=manifest.name, category=manifest.category, description=manifest.description,
        input_schema=manifest.input_schema, output_schema=manifest.output_schema, credential=manifest.credential,
        role=manifest.role, control=manifest.control,
    )


@get("/plugins", opt={"role": "viewer"})
async def list_plugins(request: Request, category: str | None = None) -> list[PluginOut]:
    """Every plugin by id, or those of one category."""
    services, _ = context(request)
    return [plugin_out(m) for m in services.plugins.all() if category is None or m.category == category]


@get("/plugins/categories", opt={"role": "viewer"})
async def list_categories(request: Request) -> list[str]:
    """The categories that have plugins, sorted."""
    services, _ = context(request)
    return services.plugins.categories()


@get("/plugins/{plugin_id:str}", opt={"role": "viewer"})
async def get_plugin(request: Request, plugin_id: str) -> PluginOut:
    services, _ = context(request)
    manifest = services.plugins.get(plugin_id)
    if manifest is None:
        raise NotFound(f"no plugin {plugin_id!r}")
    return plugin_out(manifest)


HANDLERS = [list_plugins, list_categories, get_plugin]
