"""Stored responses (`store: true`) in an embedded SQLite database.

One row per response: the response object as sent, the request's input items (for `input_items`), and
the whole conversation up to and including its output (for `previous_response_id`, so a chain of any
length costs one read). The database runs in WAL mode with a busy timeout, so several server processes
sharing the file (a shared volume behind a load balancer) read and write it safely; nothing is held in
memory, so a restart loses nothing. Each call opens its own connection in a worker thread: sqlite3 blocks,
and the event loop must not.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from server.errors import ServerError

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    response BLOB NOT NULL,
    input_items BLOB NOT NULL,
    context BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_created_at ON responses (created_at);
"""
PURGE_EVERY = 60.0  # seconds between sweeps of expired rows


class StoreUnavailableError(ServerError):
    status_code = 503
    code = "store_unavailable"


@dataclass(frozen=True)
class StoredResponse:
    id: str
    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    context: list[dict[str, Any]]  # every item of the conversation so far, this response's output included


def state_path(name: str) -> str:
    """`name` in the user's state directory (XDG), like other daemons' databases: not the working tree."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "llm-server", name)


def default_path() -> str:
    return state_path("responses.sqlite3")


class ResponseStore:
    def __init__(self, path: str, retention_seconds: float) -> None:
        self.path = path
        self.retention = retention_seconds  # 0: keep forever
        self._ready = False
        self._lock = threading.Lock()
        self._last_purge = 0.0

    async def ensure(self) -> None:
        """Create the database on first use (raises StoreUnavailableError when it cannot be)."""
        if not self._ready:
            await asyncio.to_thread(lambda: self._connect().close())

    async def put(self, record: StoredResponse) -> None:
        await asyncio.to_thread(self._put, record)

    async def get(self, response_id: str) -> StoredResponse | None:
        return await asyncio.to_thread(self._get, response_id)

    async def delete(self, response_id: str) -> bool:
        return await asyncio.to_thread(self._delete, response_id)

    def _connect(self) -> sqlite3.Connection:
        try:
            if not self._ready:
                with self._lock:
                    if not self._ready:
                        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                        with closing(sqlite3.connect(self.path, timeout=10)) as conn:
                            conn.execute("PRAGMA journal_mode=WAL")
                            conn.executescript(SCHEMA)
                        self._ready = True
            conn = sqlite3.connect(self.path, timeout=10)
            conn.execute("PRAGMA busy_timeout=10000")
            return conn
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailableError(
                f"The response store cannot be opened ({exc}); set --responses-db (LLM_SERVER_RESPONSES_DB) "
                "to a writable path, or send `store: false`."
            ) from exc

    def _cutoff(self) -> float:
        return time.time() - self.retention if self.retention else 0.0

    def _put(self, record: StoredResponse) -> None:
        blobs = [msgspec.json.encode(x) for x in (record.response, record.input_items, record.context)]
        with closing(self._connect()) as conn, conn:
            conn.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)",
                         (record.id, time.time(), *blobs))
            if self.retention and time.monotonic() - self._last_purge > PURGE_EVERY:
                self._last_purge = time.monotonic()
                conn.execute("DELETE FROM responses WHERE created_at < ?", (self._cutoff(),))

    def _get(self, response_id: str) -> StoredResponse | None:
        with closing(self._connect()) as conn:
            row = conn.execute(
                "SELECT response, input_items, context FROM responses WHERE id = ? AND created_at >= ?",
                (response_id, self._cutoff()),
            ).fetchone()
        if row is None:
            return None
        response, input_items, context = (msgspec.json.decode(blob) for blob in row)
        return StoredResponse(id=response_id, response=response, input_items=input_items, context=context)

    def _delete(self, response_id: str) -> bool:
        with closing(self._connect()) as conn, conn:
            return conn.execute("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount > 0

