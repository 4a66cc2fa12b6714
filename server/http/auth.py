"""API keys: a Litestar guard on every route, except those marked public (and /metrics unless the
settings say it needs a key). A key comes as `Authorization: Bearer KEY` or, as Anthropic's clients send
it, `x-api-key: KEY`. Keys are compared in constant time, against every key, every time.

The guard is a coroutine function: Litestar runs a plain function guard in its thread pool, a thread
hop on every request. Without keys the app has no guard at all (see create_app)."""

from __future__ import annotations

import hmac
from pathlib import Path

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from server.errors import AuthenticationError
from server.settings import Settings
from server.state import server_state

PUBLIC = {"public": True}    # route opt: never behind the key (/health, /ready)
METRICS = {"metrics": True}  # route opt: behind the key only with --metrics-need-key


class KeyFileError(Exception):
    pass


def load_api_keys(settings: Settings) -> frozenset[str]:
    """Keys from the settings plus the key file: one per line; blank lines and `#` comments skipped."""
    keys = {key.strip() for key in settings.api_keys if key.strip()}
    if settings.api_key_file:
        try:
            lines = Path(settings.api_key_file).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise KeyFileError(f"cannot read the API key file {settings.api_key_file}: {exc.strerror}") from exc
        keys.update(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))
    return frozenset(keys)


async def require_api_key(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    state = server_state(connection.app)
    keys = state.api_keys
    if not keys or handler.opt.get("public"):
        return
    if handler.opt.get("metrics") and not state.settings.metrics_need_key:
        return
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        token = connection.headers.get("x-api-key", "")  # how Anthropic's clients send it
    if not token.strip():
        raise AuthenticationError("No API key provided. Send it as `Authorization: Bearer KEY` or `x-api-key: KEY`.")
    if not _matches(token.strip(), keys):
        raise AuthenticationError("Incorrect API key provided.")


def _matches(token: str, keys: frozenset[str]) -> bool:
    given = token.encode()
    found = False
    for key in keys:  # no early exit: the time taken does not say which key came close
        found |= hmac.compare_digest(given, key.encode())
    return found
