"""Our exception hierarchy, free of any framework: the engine, its worker processes and the pool raise
these, and server/http/errors.py is the one place that turns them into OpenAI's error envelope.
Errors are raised, never returned.
"""

from __future__ import annotations

import asyncio


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

    def __init__(self, message: str, *, param: str | None = "prompt") -> None:
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


class ModelUnloadedError(ServerError):
    """The alias was unloaded (evicted, idle, by an admin, at shutdown) while this request waited for it or
    ran on it: not the server's fault, and the same request again loads it."""

    status_code = 503
    code = "model_unloaded"
    headers = {"Retry-After": "1"}


class ClientLeft(asyncio.CancelledError):
    """The client went away before its answer was complete (a disconnect while its body arrived or while
    its non-streamed answer was made): the work is cancelled as any cancellation is, and the request is
    recorded as nginx's 499, not an error. Distinct from a cancellation from outside (shutdown)."""


class ModelCrashedError(ServerError):
    """The alias's worker process died (signal, abort, memory limit) while this request needed it. Only that
    alias's requests fail; the next request starts a new worker, unless it crashed too often lately."""

    status_code = 503
    code = "model_crashed"

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message, param="model")
        if retry_after is not None:
            self.headers = {"Retry-After": str(retry_after)}


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
