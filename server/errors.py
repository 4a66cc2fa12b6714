"""Our exception hierarchy and the one translator to OpenAI's error envelope.

Errors are raised, never returned. Every handler result, Litestar's own validation and routing
errors included, leaves the server as `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
import structlog
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException

from server.protocol.errors import ErrorBody, ErrorResponse

log = structlog.get_logger("server.errors")


class ServerError(Exception):
    status_code = 500
    error_type = "server_error"
    code: str | None = None
    headers: dict[str, str] | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequestError(ServerError):
    status_code = 400
    error_type = "invalid_request_error"


class UnsupportedParameterError(InvalidRequestError):
    code = "unsupported_parameter"


class ContextLengthError(InvalidRequestError):
    """Prompt plus max_tokens do not fit the alias's n_ctx: refused before any decoding."""

    code = "context_length_exceeded"

    def __init__(self, message: str, *, param: str | None = "messages") -> None:
        super().__init__(message, param=param)


class WrongModelKindError(InvalidRequestError):
    code = "model_not_supported"


class ModelNotFoundError(ServerError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"

    def __init__(self, alias: str) -> None:
        super().__init__(f"The model `{alias}` does not exist. See GET /v1/models.", param="model")


class ModelLoadError(ServerError):
    """The alias's model could not be loaded. Only requests for that alias fail; the next one retries."""

    status_code = 503
    error_type = "server_error"
    code = "model_load_failed"


class EngineError(ServerError):
    """llama.cpp failed while serving a request."""


class AuthenticationError(ServerError):
    """No key, or not one of the configured keys. The message never echoes what was sent."""

    status_code = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"
    headers = {"WWW-Authenticate": "Bearer"}


class QueueFullError(ServerError):
    """The alias already has `max_queue` requests waiting: refuse now instead of piling up."""

    status_code = 429
    error_type = "requests"  # what OpenAI itself sends with 429
    code = "rate_limit_exceeded"

    def __init__(self, alias: str, waiting: int, retry_after: int) -> None:
        super().__init__(
            f"The model `{alias}` is busy and {waiting} request(s) are already waiting for it. Retry later.",
            param="model",
        )
        self.headers = {"Retry-After": str(retry_after)}


class ModelTooLargeError(ServerError):
    """The alias's estimated footprint exceeds pool.memory_budget even with every other model unloaded."""

    status_code = 503
    code = "model_too_large"


class RequestTimeoutError(ServerError):
    """The client did not send its whole request body within --body-read-timeout."""

    status_code = 408
    error_type = "invalid_request_error"
    code = "request_timeout"


class NotReadyError(ServerError):
    status_code = 503
    code = "not_ready"


class RegistryRejectedError(InvalidRequestError):
    """A reload asked for a models.yaml with problems; the registry in force stays."""

    code = "invalid_registry"


def error_response(status_code: int, body: ErrorBody, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(
        content=ErrorResponse(error=body),
        status_code=status_code,
        media_type=MediaType.JSON,
        headers=headers,
    )


def error_event(exc: BaseException) -> bytes:
    """The body of the SSE event sent when a stream fails after its headers went out."""
    _, body = _describe(exc)
    return msgspec.json.encode(ErrorResponse(error=body))


def status_of(exc: BaseException) -> int:
    """The HTTP status an exception leaves as (for logs and metrics of failed requests)."""
    return _describe(exc)[0]


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    status, body = _describe(exc)
    if status >= 500:
        log.error("request_failed", path=request.url.path, status=status, error=body.message, exc_info=exc)
    headers = getattr(exc, "headers", None) if status == 405 or isinstance(exc, ServerError) else None
    return error_response(status, body, headers)


def _describe(exc: BaseException) -> tuple[int, ErrorBody]:
    if isinstance(exc, ServerError):
        return exc.status_code, ErrorBody(
            message=exc.message, type=exc.error_type, param=exc.param, code=exc.code
        )
    if isinstance(exc, ValidationException):
        return 400, _validation_body(exc)
    if isinstance(exc, HTTPException) and isinstance(exc.__cause__, SerializationException):
        return 400, ErrorBody(message=f"Request body is not valid JSON: {exc.detail}",
                              type="invalid_request_error", code="invalid_json")
    if isinstance(exc, HTTPException):
        error_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(exc.status_code)
        return exc.status_code, ErrorBody(message=str(exc.detail), type=error_type, code=code)
    return 500, ErrorBody(message="Internal server error.", type="server_error")


def _validation_body(exc: ValidationException) -> ErrorBody:
    """Turn Litestar's report (`extra=[{"message", "key", "source"}]`) into one message naming the field."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    first = extra[0] if extra and isinstance(extra[0], dict) else {}
    key = first.get("key")
    detail = first.get("message") or str(exc.detail)
    if key == "data":  # the body as a whole: name the missing field when msgspec says which
        missing = _MISSING_FIELD.search(detail)
        key = missing.group(1) if missing else None
    if key:
        return ErrorBody(message=f"Invalid value for `{key}`: {detail}", type="invalid_request_error",
                         param=key, code="invalid_value")
    if not extra:  # Litestar reports undecodable bodies without per-field details
        return ErrorBody(message=f"Request body is not valid JSON: {detail}", type="invalid_request_error",
                         code="invalid_json")
    return ErrorBody(message=f"Invalid request body: {detail}", type="invalid_request_error", code="invalid_value")


_MISSING_FIELD = re.compile(r"missing required field `([^`]+)`")
