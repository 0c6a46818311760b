"""The one error hierarchy of Flowmill. Services raise these; `server/errors.py` maps them
to HTTP once, as `{"error": {"code", "message", "details"}}`."""

from __future__ import annotations

from typing import Any


class FlowmillError(Exception):
    """Base of every error a user may see."""

    status = 500
    code = "internal_error"
    headers: dict[str, str] | None = None  # sent with the answer (Allow, WWW-Authenticate, ...)

    def __init__(self, message: str, details: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if headers is not None:
            self.headers = headers


class ConfigError(FlowmillError):
    """Settings or the data dir are unusable: the server refuses to start."""

    code = "config_error"


class StartupError(FlowmillError):
    """The server cannot start (port in use, corrupt database, ...): one line for the user."""

    code = "startup_error"


class BadRequest(FlowmillError):
    status = 400
    code = "bad_request"


class InvalidArguments(BadRequest):
    """A run's arguments do not fit its script's `main`: details `{"fields": [names],
    "errors": [{"field", "message"}]}`, where `field` says where inside an argument."""

    code = "invalid_arguments"


class Unauthorized(FlowmillError):
    status = 401
    code = "unauthorized"


class Forbidden(FlowmillError):
    status = 403
    code = "forbidden"


class NotFound(FlowmillError):
    status = 404
    code = "not_found"


class MethodNotAllowed(FlowmillError):
    status = 405
    code = "method_not_allowed"


class RequestTimeout(FlowmillError):
    """The client did not send its whole request in time."""

    status = 408
    code = "request_timeout"


class Conflict(FlowmillError):
    status = 409
    code = "conflict"


class TooLarge(FlowmillError):
    status = 413
    code = "too_large"


class Invalid(FlowmillError):
    """Well-formed but unacceptable content (YAML, schema)."""

    status = 422
    code = "invalid"


class RateLimited(FlowmillError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, {"retryAfterS": retry_after_s})
        self.retry_after_s = retry_after_s


class Unavailable(FlowmillError):
    status = 503
    code = "unavailable"
