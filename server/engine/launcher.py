"""The pool's loader: a model loaded in a worker process, one spare process kept started ahead."""

from __future__ import annotations

import asyncio
import contextlib
import os

import structlog

from server.engine.client import WorkerModel
from server.engine.messages import StoreConfig
from server.engine.process import Spawned, compute_lock_path, spawn
from server.registry import ModelSpec, memory_limit

log = structlog.get_logger("server.engine")


class WorkerLauncher:
    """The pool's loader. Keeps one spare worker process started ahead, already past its imports (about
    0.3-0.6 s of Python and llama_cpp on 2 cores), so that a load costs only the model's own load time.
    A spare that died meanwhile is replaced, never used."""

    def __init__(self, store: StoreConfig | None = None) -> None:
        self._spare: asyncio.Task[Spawned] | None = None
        self._store = store  # where workers keep their prompt caches on disk; None: nowhere

    def prepare(self) -> None:
        if self._spare is None:
            self._spare = asyncio.get_running_loop().create_task(spawn())

    async def __call__(self, alias: str, spec: ModelSpec) -> WorkerModel:
        spare, self._spare = self._spare, None
        self.prepare()
        spawned = None
        if spare is not None:
            try:
                spawned = await spare
            except OSError as exc:  # the spare could not start (fork, exec): start one for this load
                log.warning("spare_worker_failed", error=str(exc))
        if spawned is not None and spawned[0].returncode is not None:
            spawned = None
        return await WorkerModel.start(alias, spec, memory_limit=memory_limit(spec), spawned=spawned,
                                       store=self._store)

    async def close(self) -> None:
        with contextlib.suppress(OSError):  # at shutdown: the workers still running keep their lock
            os.unlink(compute_lock_path())
        spare, self._spare = self._spare, None
        if spare is None:
            return
        try:
            process, _, writer = await spare
        except OSError:
            return
        writer.close()  # the spare reads end-of-file and exits
        await process.wait()
