"""Hot reload of models.yaml, from SIGHUP or POST /admin/reload.

granian's main process answers SIGHUP by respawning its workers, which would drop every loaded model
and cut running streams. So the command line replaces that handler with one that forwards SIGHUP to
the worker (`forward_sighup_to_workers`), and the worker re-reads the file itself (`handle_sighup`).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import signal
from collections.abc import Callable
from typing import Any

import structlog

from server.errors import RegistryRejectedError
from server.pool import ModelPool
from server.registry import RegistryError, load_registry

log = structlog.get_logger("server.reload")
# The folders of an absolute path (`/etc/llm-server/`), up to its last part.
_FOLDERS = re.compile(r"(?<![\w.:/])/(?:[^/\s:;,'\"`]+/)+")


async def reload_registry(pool: ModelPool[Any], path: str) -> dict[str, list[str]]:
    """Re-read `path` and apply it. A file with problems is refused and the registry in force stays."""
    try:
        registry = await asyncio.to_thread(load_registry, path)
    except RegistryError as exc:
        log.error("reload_refused", file=exc.source, problems=exc.problems)
        # The answer names files, not where they live on this machine; the log above has the whole paths.
        message = _FOLDERS.sub("", f"{exc.source} was not reloaded: " + "; ".join(exc.problems))
        raise RegistryRejectedError(message) from exc
    changes = pool.update_registry(registry)
    log.info("registry_reloaded", file=path, **changes)
    return changes


def handle_sighup(pool: ModelPool[Any], path: str) -> Callable[[], None]:
    """In the worker: SIGHUP re-reads the registry. Returns the function that removes the handler."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[Any]] = set()

    def on_sighup() -> None:
        task = loop.create_task(_reload_logged(pool, path))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)

    def stop_handling() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return stop_handling


async def _reload_logged(pool: ModelPool[Any], path: str) -> None:
    try:
        await reload_registry(pool, path)
    except RegistryRejectedError:
        pass  # already logged; the old registry stays


def forward_sighup_to_workers() -> None:
    """In granian's main process (a startup hook): pass SIGHUP on to the workers instead of respawning
    them. Workers forked later inherit this handler; with no children of their own it does nothing
    until the app installs `handle_sighup`."""

    def forward(signum: int, frame: Any) -> None:
        for child in multiprocessing.active_children():
            if child.pid is not None:
                os.kill(child.pid, signal.SIGHUP)

    signal.signal(signal.SIGHUP, forward)
