"""The one translator from exceptions to OpenAI's error envelope, for responses and for SSE streams.

Every handler result, Litestar's own validation and routing errors included, leaves the server as
`{"error": {"message", "type", "param", "code"}}`; on the Anthropic Messages routes (/v1/messages...) as
Anthropic's `{"type": "error", "error": {"type", "message"}}`, its type chosen by the HTTP status; on
Ollama's routes (/api/...) as Ollama's `{"error": "message"}`.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
import structlog
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException

from server.errors import ServerError
from server.protocol.anthropic_response import AnthropicError, AnthropicErrorBody
from server.protocol.errors import ErrorBody, ErrorResponse

log = structlog.get_logger("server.errors")


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


def anthropic_error_event(exc: BaseException) -> bytes:
    """The data of the `error` event sent when a Messages stream fails after its headers went out."""
    return msgspec.json.encode(_anthropic(*_describe(exc)))


def ollama_error_event(exc: BaseException) -> bytes:
    """The NDJSON line sent when an Ollama stream fails after its headers went out."""
    return msgspec.json.encode({"error": _describe(exc)[1].message}) + b"\n"


def status_of(exc: BaseException) -> int:
    """The HTTP status an exception leaves as (for logs and metrics of failed requests)."""
    return _describe(exc)[0]


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    status, body = _describe(exc)
    if isinstance(exc, HTTPException) and status in (404, 405):
        body = _routing_body(request, status, exc)
    if status >= 500:
        log.error("request_failed", path=request.url.path, status=status, error=body.message, exc_info=exc)
    headers = getattr(exc, "headers", None) if status == 405 or isinstance(exc, ServerError) else None
    path = request.url.path
    if path.startswith(OLLAMA_ROUTES):
        return Response(content={"error": body.message}, status_code=status, media_type=MediaType.JSON,
                        headers=headers)
    if path == ANTHROPIC_ROUTES or path.startswith(ANTHROPIC_ROUTES + "/"):
        return Response(content=_anthropic(status, body), status_code=status, media_type=MediaType.JSON,
                        headers=headers)
    return error_response(status, body, headers)


ANTHROPIC_ROUTES = "/v1/messages"
OLLAMA_ROUTES = "/api/"  # Ollama's errors are `{"error": "message"}`
# Anthropic's error types by HTTP status (its SDK picks the exception class by status, clients read the type).
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 408: "timeout_error", 413: "request_too_large",
                    429: "rate_limit_error", 503: "overloaded_error", 504: "timeout_error"}


def _anthropic(status: int, body: ErrorBody) -> AnthropicError:
    fallback = "invalid_request_error" if status < 500 else "api_error"
    return AnthropicError(error=AnthropicErrorBody(type=_ANTHROPIC_TYPES.get(status, fallback),
                                                   message=body.message))


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


def _routing_body(request: Request[Any, Any, Any], status: int, exc: HTTPException) -> ErrorBody:
    """No route for this path (404), or not for this method (405): say so, and for a path that exists
    under /v1, say where (a client's base URL that lacks /v1 is the usual cause)."""
    method, path = request.method, request.url.path
    if status == 405:
        allowed = (exc.headers or {}).get("allow", "")
        return ErrorBody(message=f"{method} is not allowed on {path}. Allowed: {allowed}.",
                         type="invalid_request_error", code="method_not_allowed")
    message = f"No route {method} {path}."
    if not path.startswith("/v1/"):
        known = {route.path for route in request.app.routes}
        if "/v1" + path in known:
            message += f" Did you mean /v1{path}? The OpenAI API is under /v1: end the client's base URL with /v1."
        else:
            message += " The OpenAI API is under /v1 (e.g. POST /v1/chat/completions); see /docs."
    return ErrorBody(message=message, type="invalid_request_error", code="not_found")


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
