"""The HTTP process's side of a model worker: `WorkerModel` implements the engine interface by talking
to `python -m server.engine.worker` over a socket pair.

Everything here runs on the event loop: one reader task per worker takes each message as it arrives
and hands a step's pieces to the requests they belong to (no thread in between). A worker that dies
fails only its own requests, with `ModelCrashedError`; `exited()` tells the pool how it ended. A
worker whose resident memory passes its alias's limit is killed, which fails it the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import AsyncGenerator
from typing import Any

import msgspec
import structlog

from server.engine import messages as m
from server.engine.interface import Exit, Indexed
from server.engine.process import Spawned, spawn
from server.engine.types import ChatPrompt, Embeddings, Request
from server.errors import (
    InvalidRequestError,
    ModelCrashedError,
    ModelLoadError,
    ModelUnloadedError,
    ServerError,
)
from server.registry import ModelSpec

log = structlog.get_logger("server.engine")

MEMORY_POLL_SECONDS = 0.25
CLOSE_GRACE_SECONDS = 10.0 + m.SAVE_SECONDS  # a leaving worker saves its caches first
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


class _Job:
    """One generation's inbox: taken (the worker checked and queued it), batches of pieces as steps arrive,
    then the end or an error."""

    __slots__ = ("taken", "items", "waiter", "done", "error")

    def __init__(self) -> None:
        self.taken = False
        self.items: list[Indexed] = []
        self.waiter: asyncio.Future[None] | None = None
        self.done = False
        self.error: BaseException | None = None

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class WorkerModel:
    def __init__(self, alias: str, spec: ModelSpec, process: asyncio.subprocess.Process,
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter, loaded: m.Loaded,
                 memory_limit: int | None) -> None:
        self.alias = alias
        self.spec = spec
        self.n_ctx = loaded.n_ctx
        self.n_vocab = loaded.n_vocab
        self.chat_template = loaded.chat_template
        self._loaded = loaded
        self._kv_cells_used = 0  # as the latest Step reported it: read at scrape time, never asked for
        self.saved: m.Saved | None = None  # what the worker wrote to its prompt store as it left
        self._process = process
        self._reader = reader
        self._writer = writer
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(m.FromWorker)
        self._ids = itertools.count(1)
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._jobs: dict[int, _Job] = {}
        self._closing = False
        self._exit_reason: str | None = None
        self._memory_limit = memory_limit
        self._exit: asyncio.Future[Exit] = asyncio.get_running_loop().create_future()
        self._heard = time.monotonic()  # the last message from the worker
        self._tasks = [asyncio.create_task(self._read_forever()), asyncio.create_task(self._watch_heartbeat())]
        if memory_limit is not None:
            self._tasks.append(asyncio.create_task(self._watch_memory(memory_limit)))

    @classmethod
    async def start(cls, alias: str, spec: ModelSpec, *, memory_limit: int | None = None,
                    spawned: Spawned | None = None, store: m.StoreConfig | None = None) -> WorkerModel:
        """Load the model in a worker process (`spawned`, or a new one); ModelLoadError if it cannot."""
        process, reader, writer = spawned or await spawn()
        writer.write(m.frame(msgspec.msgpack.Encoder(), m.Load(alias=alias, spec=spec, store=store)))
        decoder = msgspec.msgpack.Decoder(m.FromWorker)
        try:
            first = decoder.decode(await reader.readexactly(m.body_size(await reader.readexactly(m.HEADER.size))))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, msgspec.DecodeError):
            first = None
        except BaseException:  # cancelled while loading: nobody will use this process
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            writer.close()
            raise
        if not isinstance(first, m.Loaded):
            writer.close()
            if first is None:
                code = await process.wait()
                how = _exit_of(code, "crashed").describe()
                raise ModelLoadError(f"The model `{alias}` failed to load: its worker {how}.")
            with contextlib.suppress(ProcessLookupError):  # it may have exited after answering: the fault wins
                process.kill()
            await process.wait()
            fault = first.fault if isinstance(first, m.Failed) else m.Fault("ModelLoadError", "unexpected answer")
            raise ModelLoadError(f"The model `{alias}` failed to load: {fault.message}")
        log.info("worker_started", alias=alias, pid=process.pid, n_threads=first.n_threads,
                 n_threads_batch=first.n_threads_batch)
        return cls(alias, spec, process, reader, writer, first, memory_limit)

    # -- the engine interface ----------------------------------------------------------------------

    async def chat_prompt(self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None,
                          template_kwargs: dict[str, Any] | None = None, fit_context: bool = False) -> ChatPrompt:
        value = await self._call(lambda id: m.ChatPromptCall(id=id, messages=messages, tools=tools,
                                                            template_kwargs=template_kwargs or {},
                                                            fit_context=fit_context))
        return msgspec.convert(value, ChatPrompt)

    async def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return await self._call(lambda id: m.TokenizeCall(id=id, text=text, add_special=add_special))

    async def detokenize(self, tokens: list[int]) -> str:
        return await self._call(lambda id: m.DetokenizeCall(id=id, tokens=tokens))

    async def embed(self, inputs: list[str | list[int]]) -> Embeddings:
        value = await self._call(lambda id: m.EmbedCall(id=id, inputs=inputs))
        return msgspec.convert(value, Embeddings)

    async def slots(self) -> list[dict[str, Any]]:
        """Each slot's state now (server/engine/worker/slots.py, `slot_states`)."""
        return await self._call(lambda call_id: m.SlotsCall(id=call_id))

    async def generate(self, requests: list[Request]) -> AsyncGenerator[list[Indexed], None]:
        job_id, job = next(self._ids), _Job()
        self._check_alive()
        self._jobs[job_id] = job
        try:
            self._send(m.Generate(id=job_id, requests=requests))
            announced = False
            while True:
                if not announced and (job.taken or job.items or job.done):
                    announced = True
                    yield []
                elif job.items:
                    items, job.items = job.items, []
                    yield items
                elif job.error is not None:
                    raise job.error
                elif job.done:
                    return
                else:
                    job.waiter = asyncio.get_running_loop().create_future()
                    await job.waiter
        finally:
            if self._jobs.pop(job_id, None) is not None and not job.done and job.error is None:
                self._send(m.Cancel(id=job_id))  # the consumer left early: drop its sequences
                log.info("generation_stopped", alias=self.alias, reason="client_gone")

    async def close(self) -> None:
        self._closing = True
        self._send(m.Shutdown())
        try:
            await asyncio.wait_for(asyncio.shield(self._exit), CLOSE_GRACE_SECONDS)
        except asyncio.TimeoutError:
            self._kill()
            await asyncio.shield(self._exit)

    async def exited(self) -> Exit:
        return await asyncio.shield(self._exit)

    def stats(self) -> dict[str, Any]:
        cells = self._loaded.kv_cells
        return {"pid": self._process.pid, "rss_bytes": rss_bytes(self._process.pid),
                "memory_limit_bytes": self._memory_limit, "n_threads": self._loaded.n_threads,
                "n_threads_batch": self._loaded.n_threads_batch, "kv_cells": cells,
                "kv_cells_used": self._kv_cells_used,
                "kv_cache_usage": round(self._kv_cells_used / cells, 6) if cells else 0.0}

    # -- the wire ----------------------------------------------------------------------------------

    async def _call(self, make: Any) -> Any:
        self._check_alive()
        call_id = next(self._ids)
        future = self._calls[call_id] = asyncio.get_running_loop().create_future()
        try:
            self._send(make(call_id))
            return await future
        finally:
            self._calls.pop(call_id, None)

    def _send(self, message: msgspec.Struct) -> None:
        try:
            data = m.frame(self._encoder, message)
        except OverflowError as exc:  # the protocol bounds every integer; this is the net under it
            raise InvalidRequestError("A number in this request is out of range.") from exc
        if not self._exit.done() and not self._writer.is_closing():
            self._writer.write(data)

    def _check_alive(self) -> None:
        if self._exit.done():
            raise self._gone_error(self._exit.result())

    async def _read_forever(self) -> None:
        try:
            while True:
                header = await self._reader.readexactly(m.HEADER.size)
                self._dispatch(self._decoder.decode(await self._reader.readexactly(m.body_size(header))))
                self._heard = time.monotonic()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, msgspec.DecodeError):
            pass
        finally:
            self._writer.close()
            code = await self._process.wait()
            exit = _exit_of(code, self._exit_reason or ("closed" if self._closing else "crashed"))
            error = self._gone_error(exit)
            for future in self._calls.values():
                if not future.done():
                    future.set_exception(error)
            for job in self._jobs.values():
                if not job.done and job.error is None:
                    job.error = error
                    job.wake()
            if exit.reason != "closed":
                log.error("worker_died", alias=self.alias, pid=self._process.pid, reason=exit.reason,
                          exit_code=exit.code, signal=exit.signal,
                          failed_requests=len(self._calls) + len(self._jobs))
            self._exit.set_result(exit)
            for task in self._tasks[1:]:
                task.cancel()

    def _dispatch(self, message: m.FromWorker) -> None:
        if isinstance(message, m.Step):
            self._kv_cells_used = message.cells
            touched = set()
            for job_id, index, piece in message.pieces:
                job = self._jobs.get(job_id)
                if job is not None:
                    job.items.append((index, piece))
                    touched.add(job_id)
            for job_id in message.ended:
                job = self._jobs.get(job_id)
                if job is not None:
                    job.done = True
                    touched.add(job_id)
            for job_id in touched:
                self._jobs[job_id].wake()
        elif isinstance(message, m.Saved):
            self.saved = message
        elif isinstance(message, m.Result):
            future = self._calls.get(message.id)
            if future is not None and not future.done():
                future.set_result(message.value)
            job = self._jobs.get(message.id)
            if job is not None:
                job.taken = True
                job.wake()
        elif isinstance(message, m.Failed):
            error = m.rebuilt(message.fault)
            future = self._calls.get(message.id)
            if future is not None and not future.done():
                future.set_exception(error)
            job = self._jobs.get(message.id)
            if job is not None:
                job.error = error
                job.wake()

    def _gone_error(self, exit: Exit) -> ServerError:
        if exit.reason == "closed":
            return ModelUnloadedError(f"The model `{self.alias}` was unloaded; try again.")
        why = {"memory_limit": "passed its memory limit",
               "hung": f"stopped answering for {m.HANG_SECONDS:g} s"}.get(exit.reason) or exit.describe()
        return ModelCrashedError(f"The model `{self.alias}` stopped while serving this request (its worker {why}); "
                                 "the next request starts it again.")

    async def _watch_memory(self, limit: int) -> None:
        while not self._exit.done():
            await asyncio.sleep(MEMORY_POLL_SECONDS)
            rss = rss_bytes(self._process.pid)
            if rss is not None and rss > limit:
                log.error("worker_memory_limit", alias=self.alias, pid=self._process.pid, rss_bytes=rss,
                          limit_bytes=limit)
                self._exit_reason = "memory_limit"
                self._kill()
                return

    async def _watch_heartbeat(self) -> None:
        while not self._exit.done():
            await asyncio.sleep(m.HEARTBEAT_SECONDS)
            silent = time.monotonic() - self._heard
            if silent > m.HANG_SECONDS and self._process.returncode is None:
                log.error("worker_hung", alias=self.alias, pid=self._process.pid, silent_seconds=round(silent, 1))
                self._exit_reason = "hung"
                self._kill()
                return

    def _kill(self) -> None:
        if self._process.returncode is None:
            try:
                self._process.kill()
            except ProcessLookupError:
                pass


def _exit_of(code: int, reason: str) -> Exit:
    return Exit(reason=reason, signal=-code) if code < 0 else Exit(reason=reason, code=code)
