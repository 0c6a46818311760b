"""What the OpenAPI document says of the request bodies handlers read themselves (a run's
arguments, a key-value entry, an archive, an upload) rather than through a typed `data`
parameter: declared with `opt={"body": ...}` on the handler, added by `server/openapi.py`.

Each is `{media type: JSON Schema}`, documented as optional: a handler that needs its body
answers 400 without it.
"""

from __future__ import annotations

from typing import Any

JSON_VALUE = "#/components/schemas/JsonValue"  # any JSON value (a named component)
_REF = "#/components/schemas/"

Body = dict[str, dict[str, Any]]

# Named components of the document, for the bodies below.
SCHEMAS: dict[str, dict[str, Any]] = {
    "RunArgs": {
        "type": "object", "additionalProperties": {"$ref": JSON_VALUE},
        "description": "main's arguments by name (left out: none); `$var:`, `$res:` and `$cred:` strings are references",
    },
    "CancelReason": {"type": "object", "properties": {"reason": {"type": "string"}}},
    "ExecuteIn": {
        "type": "object", "properties": {"inputs": {"type": "object", "additionalProperties": {"$ref": JSON_VALUE},
                                                    "description": "the flow's inputs by name (left out: none)"}},
    },
    "DecisionIn": {
        "type": "object", "properties": {"values": {"type": "object", "additionalProperties": {"$ref": JSON_VALUE},
                                                    "description": "the approval form's values by name"}},
    },
    "OpenAPIImportIn": {
        "type": "object", "required": ["folder"],
        "properties": {
            "folder": {"type": "string", "description": "the path the generated routes go under"},
            "spec": {"type": "string", "description": "the OpenAPI document's text (JSON or YAML); or `url`"},
            "url": {"type": "string", "description": "where to fetch the document from; or `spec`"},
        },
    },
    "OpenAPIUpload": {
        "type": "object", "required": ["file", "folder"],
        "properties": {"file": {"type": "string", "format": "binary", "description": "the document (JSON or YAML)"},
                       "folder": {"type": "string"}},
    },
    "InlineCheckpointIn": {
        "type": "object", "required": ["key"],
        "properties": {
            "key": {"type": "string", "description": "the step's key"},
            "result": {"$ref": JSON_VALUE, "description": "its result, or wmill's `__wmill_error` marker"},
            "started_at": {"type": "string"}, "duration_ms": {"type": "integer"},
        },
    },
}

ANY_JSON: Body = {"application/json": {"$ref": JSON_VALUE}}
INLINE_CHECKPOINT: Body = {"application/json": {"$ref": _REF + "InlineCheckpointIn"}}
RUN_ARGS: Body = {"application/json": {"$ref": _REF + "RunArgs"}}
# The archive's kind is read from its bytes, whatever the Content-Type says.
ARCHIVE: Body = {"application/octet-stream": {
    "type": "string", "format": "binary", "description": "a zip or tar(.gz) archive of the folder's files",
}}
CANCEL_REASON: Body = {"application/json": {"$ref": _REF + "CancelReason"}}
OPENAPI_IMPORT: Body = {
    "application/json": {"$ref": _REF + "OpenAPIImportIn"},
    "multipart/form-data": {"$ref": _REF + "OpenAPIUpload"},
}
EXECUTE_IN: Body = {"application/json": {"$ref": _REF + "ExecuteIn"}}
DECISION_IN: Body = {"application/json": {"$ref": _REF + "DecisionIn"}}
