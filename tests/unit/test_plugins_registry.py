"""The plugin registry: properties and outputs checked against the manifests, plain and async
run functions, invalid plugins refused, and discovery from entry points with a broken
third-party plugin skipped."""

from __future__ import annotations

import importlib.metadata
import logging
import sys
import threading
import types
from typing import Any

import pytest

from app.plugins import Manifest, Plugin, Registry, default_registry
from app.plugins import registry as registry_module
from app.plugins.schema import EMPTY, obj
from tests.unit.test_plugins import BRIEF_IDS, REGISTRY, failure, run

# -- the registry ----------------------------------------------------------------------------------


def _plugin(type_id: str, run: Any, output_schema: dict[str, Any] | None = None,
            input_schema: dict[str, Any] | None = None, **manifest: Any) -> Plugin:
    manifest.setdefault("category", type_id.split(".")[0])
    return Plugin(Manifest(id=type_id, name=type_id, description="a test plugin",
                           input_schema=input_schema or obj({"items": {"type": "array", "default": []}}),
                           output_schema=output_schema or obj({"count": {"type": "integer"}}, ["count"]),
                           **manifest), run)


def test_properties_errors_name_where_they_are() -> None:
    failed = failure("http.request", {"url": 5, "retries": "x", "auth": {"type": "basic"}})
    assert failed.name == "InvalidProperties"
    assert "properties.url: 5 is not of type 'string'" in failed.message
    assert "properties.retries" in failed.message and "properties.auth" in failed.message
    assert "properties: 'url' is a required property" in failure("http.request", {}).message


def test_outputs_are_checked_against_the_output_schema() -> None:
    registry = Registry([_plugin("test.bad", lambda p, ctx: {"count": "three"}),
                         _plugin("test.list", lambda p, ctx: [1]),
                         _plugin("test.none", lambda p, ctx: None, output_schema=EMPTY)])
    failed = failure("test.bad", {}, registry=registry)
    assert failed.name == "InvalidOutput" and "outputs.count: 'three' is not of type 'integer'" in failed.message
    assert failure("test.list", {}, registry=registry).name == "InvalidOutput"
    assert run("test.none", {}, registry=registry) == {}


def test_a_plain_function_runs_on_a_thread_and_an_async_one_on_the_loop() -> None:
    seen: dict[str, int] = {}

    def blocking(properties: dict[str, Any], ctx: Any) -> dict[str, Any]:
        seen["sync"] = threading.get_ident()
        properties["items"].append(1)  # defaults are the run's own: mutating them changes nothing later
        return {"count": len(properties["items"])}

    async def on_loop(properties: dict[str, Any], ctx: Any) -> dict[str, Any]:
        seen["async"] = threading.get_ident()
        return {"count": 0}

    registry = Registry([_plugin("test.sync", blocking), _plugin("test.async", on_loop)])
    assert run("test.sync", {}, registry=registry) == {"count": 1}
    assert run("test.sync", {}, registry=registry) == {"count": 1}
    run("test.async", {}, registry=registry)
    assert seen["async"] == threading.get_ident() != seen["sync"]


def test_an_unexpected_exception_is_the_tasks_failure() -> None:
    def broken(properties: dict[str, Any], ctx: Any) -> dict[str, Any]:
        raise KeyError("missing")

    failed = failure("test.broken", {}, registry=Registry([_plugin("test.broken", broken)]))
    assert failed.name == "KeyError" and "missing" in failed.message


@pytest.mark.parametrize("bad, why", [
    (_plugin("Test.x", lambda p, c: {}), "lowercase"),
    (_plugin("other.x", lambda p, c: {}, category="test"), "category"),
    (_plugin("test.x", None), "control"),
    (_plugin("test.x", lambda p, c: {}, control=True), "control"),
    (_plugin("test.x", lambda p, c: {}, role="root"), "role"),
    (_plugin("test.x", lambda p, c: {}, input_schema={"type": "nonsense"}), "JSON Schema"),
])
def test_invalid_plugins_are_refused(bad: Plugin, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        Registry([bad])


def test_an_id_is_registered_once() -> None:
    registry = Registry([_plugin("test.x", lambda p, c: {"count": 1})])
    with pytest.raises(ValueError, match="already"):
        registry.add(_plugin("test.x", lambda p, c: {"count": 2}))


# -- discovery -------------------------------------------------------------------------------------

GROUP = registry_module.ENTRY_POINT_GROUP


def _fake_distribution(monkeypatch: pytest.MonkeyPatch, *entry_points: tuple[str, str]) -> None:
    """Entry points of the `flowmill.plugins` group, as an installed distribution would declare them."""
    found = [importlib.metadata.EntryPoint(name, value, GROUP) for name, value in entry_points]

    def entry_points_of(**selection: Any) -> list[importlib.metadata.EntryPoint]:
        return found if selection.get("group") == GROUP else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points_of)


def test_entry_points_name_a_module_or_a_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("flowmill_acme_plugins")
    module.PLUGINS = [_plugin("acme.count", lambda p, c: {"count": len(p["items"])})]  # type: ignore[attr-defined]
    module.ONE = _plugin("acme.one", lambda p, c: {"count": 1})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "flowmill_acme_plugins", module)
    _fake_distribution(monkeypatch, ("acme", "flowmill_acme_plugins"), ("one", "flowmill_acme_plugins:ONE"))
    registry = default_registry()
    assert {m.id for m in registry.all()} == BRIEF_IDS | {"acme.count", "acme.one"}
    assert "acme" in registry.categories()
    assert run("acme.count", {"items": [1, 2, 3]}, registry=registry) == {"count": 3}


def test_a_broken_third_party_plugin_is_logged_and_skipped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    module = types.ModuleType("flowmill_mixed_plugins")
    module.PLUGINS = [_plugin("mixed.good", lambda p, c: {"count": 0}),  # type: ignore[attr-defined]
                      _plugin("util.log", lambda p, c: {"count": 0}),  # takes a built-in's id
                      _plugin("mixed.bad", lambda p, c: {}, input_schema={"type": 12})]
    module.NOT_A_PLUGIN = {"id": "mixed.dict"}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "flowmill_mixed_plugins", module)
    _fake_distribution(monkeypatch, ("missing", "flowmill_no_such_module_anywhere"),
                       ("mixed", "flowmill_mixed_plugins"), ("dict", "flowmill_mixed_plugins:NOT_A_PLUGIN"),
                       ("attr", "flowmill_mixed_plugins:NO_SUCH_ATTRIBUTE"))
    with caplog.at_level(logging.WARNING, logger="flowmill.plugins"):
        registry = default_registry()
    assert {m.id for m in registry.all()} == BRIEF_IDS | {"mixed.good"}
    assert registry.plugin("util.log") is REGISTRY.plugin("util.log")
    skipped = "\n".join(record.getMessage() for record in caplog.records)
    for name in ("'missing'", "'dict'", "'attr'", "util.log", "mixed.bad"):
        assert name in skipped


def test_listing_entry_points_that_fails_leaves_the_built_ins(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(**selection: Any) -> list[Any]:
        raise OSError("unreadable metadata")

    monkeypatch.setattr(importlib.metadata, "entry_points", broken)
    assert {m.id for m in default_registry().all()} == BRIEF_IDS
