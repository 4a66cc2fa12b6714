"""One log line and one metrics sample per request, and the request id.

The request id comes from an incoming `X-Request-ID` (if it is short and printable) or is made up; it
is echoed in the response header and bound to every log line written while the request runs. The
`model` label is read from the JSON body here, cheaply (a Struct with one field; msgspec skips the
rest), so controllers stay untouched; a name not in the registry is labelled `unknown`, which keeps
clients from inflating the label set. Streams are timed to their last byte.

This runs for every request, and for small ones (`GET /v1/models`, probes) it used to cost more than
the rest of the stack: it sticks to plain tuple and list work (no header wrapper objects, no random
bytes from the OS per request) and hands one tuple per request to RequestRecords, which writes access
lines and request metrics in batches.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Litestar
from litestar.types import ASGIApp, HTTPScope, Message, Receive, ReceiveMessage, Scope, Send

from server.errors import ClientLeft, RequestTimeoutError
from server.http.errors import status_of
from server.http.json_request import UNDECODABLE
from server.state import ServerState, server_state
from server.telemetry.logging import RUNNING, RunningRequest

if TYPE_CHECKING:
    from server.telemetry.request_records import RequestRecords

REQUEST_ID_HEADER = "X-Request-ID"
CLIENT_CLOSED = 499
QUIET_ROUTES = frozenset({"/health", "/ready", "/metrics"})  # probes and scrapes log at debug level


class _ModelField(msgspec.Struct):
    model: Any = None


_decode_model = msgspec.json.Decoder(_ModelField).decode


class RequestObserver:
    """Request id, access line and request metrics: an ASGI wrapper around Litestar's whole handler
    (`wrap_app`), outside Litestar's exception handling, whose error answers come through our `send` like
    any other. As a Litestar middleware it cost a second exception-handling layer on every route, about
    a twentieth of a `GET /v1/models`."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self._state = state
        self._records: RequestRecords = state.request_records
        self._ids = RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope["method"]  # type: ignore[typeddict-item]  # http only, checked above
        request_id = _incoming_id(scope["headers"]) or self._ids.next()
        id_header = (_ID_NAME, request_id.encode("latin-1"))
        running = RunningRequest(request_id)
        bound = RUNNING.set(running)
        status = 500
        sent_start = False

        def send_with_id(message: Message) -> Awaitable[None]:  # no coroutine of its own: send's is awaited
            nonlocal status, sent_start
            if message["type"] == "http.response.start":
                status, sent_start = message["status"], True
                message["headers"] = [*message.get("headers", ()), id_header]  # nothing else sets it
            return send(message)

        model = "-"
        try:
            if method == "POST":
                receive, model = await _peek_model(scope, receive, self._state)  # type: ignore[arg-type]
            await self.app(scope, receive, send_with_id)
        except ClientLeft:
            # Nobody to answer and nothing gone wrong: recorded as nginx's 499, not handed to granian (which
            # would log it as an error with its traceback).
            if not sent_start:
                status = CLIENT_CLOSED
        except BaseException as exc:
            if not sent_start:
                # A request cancelled before its answer began: its client left (nginx's 499), not a failure.
                status = CLIENT_CLOSED if isinstance(exc, asyncio.CancelledError) else status_of(exc)
            raise
        finally:
            seconds = time.perf_counter() - started
            template = scope.get("path_template")  # None: no route matched (a 404 from the router, a preflight)
            route = template or scope["path"]
            prompt = running.prompt_tokens
            self._records.add((request_id, prompt is None and route in QUIET_ROUTES, method, route, model, status,
                               seconds, prompt, running.completion_tokens, template is not None))
            RUNNING.reset(bound)


def wrap_app(app: Litestar) -> Litestar:
    """Put RequestObserver around everything the app does for a request (CORS and error answers included);
    lifespan events pass straight through (Litestar handles them before its handler)."""
    app.asgi_handler = RequestObserver(app.asgi_handler, server_state(app))
    return app


_ID_NAME = REQUEST_ID_HEADER.lower().encode("latin-1")


class RequestIds:
    """Made-up request ids: 32 hex digits, a random half per app and a counter. Unique within the
    process and across restarts without asking the OS for random bytes on every request."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._count = itertools.count(int.from_bytes(secrets.token_bytes(4), "big"))

    def next(self) -> str:
        return f"{self._prefix}{next(self._count) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


def _incoming_id(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The client's X-Request-ID when it is short and printable (header names arrive lower-cased)."""
    for name, value in headers:
        if name == _ID_NAME:
            text = value.decode("latin-1")
            return text if 0 < len(text) <= 128 and text.isprintable() else None
    return None


def _failing(exc: Exception) -> Receive:
    async def receive() -> ReceiveMessage:
        raise exc

    return receive


async def _peek_model(scope: HTTPScope, receive: Receive, state: Any) -> tuple[Receive, str]:
    """Read a POST body ahead of Litestar to label the request with its model, then hand the same bytes
    on. A body declared above the size limit is left alone (Litestar refuses it with a 413); one sent
    without a length is read up to the limit, the rest left to Litestar. The whole read gets
    --body-read-timeout seconds: a client that sends headers and then trickles or withholds its body
    would otherwise hold its connection for good (granian times out headers only). Past it, 408."""
    if scope["method"] != "POST":
        return receive, "-"
    limit = state.settings.max_body_bytes
    length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
    if length is not None and (not length.isdigit() or int(length) > limit):
        return receive, "-"
    messages: list[ReceiveMessage] = []
    chunks: list[bytes] = []

    async def read() -> None:
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if not message.get("more_body", False) or size > limit:
                return

    try:
        await asyncio.wait_for(read(), state.settings.body_read_timeout)
    except asyncio.TimeoutError:
        # Raised where Litestar reads the body, inside its exception handling: answered as a 408.
        return _failing(RequestTimeoutError(f"The request body did not arrive within "
                                            f"{state.settings.body_read_timeout:g} seconds.")), "-"

    if messages and messages[-1]["type"] == "http.disconnect":  # it left before its body was complete
        raise ClientLeft("client disconnected while sending its body")

    async def replay() -> ReceiveMessage:
        return messages.pop(0) if messages else await receive()

    body = b"".join(chunks)
    if messages and messages[-1].get("more_body", False):  # past the size limit: Litestar answers 413
        return replay, "-"
    try:
        name = _decode_model(body).model
    except (msgspec.DecodeError, msgspec.ValidationError, *UNDECODABLE):  # Litestar answers these with a 400
        name = None
    if not isinstance(name, str):
        return replay, "-"
    return replay, name if state.pool.registry.get(name) is not None else "unknown"
