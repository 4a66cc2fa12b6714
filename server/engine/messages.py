"""The wire between the HTTP process and a model's worker process: msgspec Structs as msgpack frames.

A frame is a 4-byte big-endian length and one msgpack-encoded message. Calls carry an id that their
answer repeats. A generation is answered by `Step` messages, one per decode step, each holding every
sequence's new pieces (never one message per token), until the request's id shows up in `ended`.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec

from server import errors
from server.engine.types import Piece, Request
from server.registry import ModelSpec

HEADER = struct.Struct(">I")
MAX_FRAME = 256 * 1024 * 1024  # a frame past this is a broken peer, not a message


class StoreConfig(msgspec.Struct, frozen=True):
    """Where a worker keeps its prompt caches on disk (server/engine/worker/prompt_store.py): the root
    folder, and the bytes one alias may hold there."""

    root: str
    budget_bytes: int


class Load(msgspec.Struct, tag=True, frozen=True):
    alias: str
    spec: ModelSpec
    store: StoreConfig | None = None


class ChatPromptCall(msgspec.Struct, tag=True, frozen=True):
    id: int
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None  # for a template that renders them itself
    template_kwargs: dict[str, Any] = {}  # extra template variables (enable_thinking, reasoning_effort...)
    fit_context: bool = False  # a prompt to generate from: refused untokenized when it cannot fit


class TokenizeCall(msgspec.Struct, tag=True, frozen=True):
    id: int
    text: str
    add_special: bool


class SlotsCall(msgspec.Struct, tag=True, frozen=True):
    """Each slot's state now (GET /slots): a list of {"id", "busy", "task", "tokens", "generated"}."""

    id: int


class DetokenizeCall(msgspec.Struct, tag=True, frozen=True):
    id: int
    tokens: list[int]


class EmbedCall(msgspec.Struct, tag=True, frozen=True):
    id: int
    inputs: list[str | list[int]]  # texts, or token ids


class Generate(msgspec.Struct, tag=True, frozen=True):
    id: int
    requests: list[Request]


class Cancel(msgspec.Struct, tag=True, frozen=True):
    id: int


class Shutdown(msgspec.Struct, tag=True, frozen=True):
    pass


ToWorker = (Load | ChatPromptCall | TokenizeCall | DetokenizeCall | EmbedCall | SlotsCall | Generate | Cancel
            | Shutdown)


class Loaded(msgspec.Struct, tag=True, frozen=True):
    n_ctx: int
    n_vocab: int
    n_threads: int
    n_threads_batch: int
    kv_cells: int = 0  # KV cells allocated for generation (n_ctx x slots); 0 for an embedding model
    chat_template: str | None = None  # the Jinja template chats are rendered with; None: a named format


class Fault(msgspec.Struct, frozen=True):
    """One of our own exceptions (server.errors), by class name, as it crossed the process wall."""

    kind: str
    message: str
    param: str | None = None
    code: str | None = None


# The errors a worker may raise across the wall, by the name a `Fault` carries; any other is sent (and
# rebuilt) as an EngineError.
CROSSING: dict[str, type[errors.ServerError]] = {cls.__name__: cls for cls in (
    errors.InvalidRequestError, errors.UnsupportedParameterError, errors.ContextLengthError,
    errors.WrongModelKindError, errors.ModelLoadError, errors.EngineError, errors.ModelUnloadedError)}


def fault(exc: errors.ServerError) -> Fault:
    kind = type(exc).__name__ if type(exc).__name__ in CROSSING else errors.EngineError.__name__
    return Fault(kind=kind, message=exc.message, param=exc.param, code=exc.code)


def rebuilt(fault: Fault) -> errors.ServerError:
    """The exception the worker raised, as its own class again."""
    cls = CROSSING.get(fault.kind, errors.EngineError)
    exc = cls.__new__(cls)
    errors.ServerError.__init__(exc, fault.message, param=fault.param, code=fault.code)
    return exc


class Result(msgspec.Struct, tag=True, frozen=True):
    id: int
    value: Any


class Failed(msgspec.Struct, tag=True, frozen=True):
    id: int  # 0: the load itself
    fault: Fault


class Step(msgspec.Struct, tag=True, frozen=True):
    pieces: list[tuple[int, int, Piece]]  # (request id, sequence index, piece)
    ended: list[int] = []  # requests whose every sequence has ended or been dropped
    cells: int = 0  # KV cells the busy slots hold after this step


class Alive(msgspec.Struct, tag=True, frozen=True):
    """Sent every HEARTBEAT_SECONDS by a thread of its own, whatever the worker is doing: a worker that
    stops sending (stopped, deadlocked, stuck in native code holding everything) is killed."""


# The most a leaving worker spends writing its caches to the prompt store (measured: a full 4-slot x
# 2,048-token cache of SmolLM2-135M, 190 MB, takes well under a second on local disk).
SAVE_SECONDS = 5.0

# A worker silent this long (no step, answer or heartbeat) is taken for hung, killed and restarted.
HEARTBEAT_SECONDS = 1.0
HANG_SECONDS = 10.0

class Saved(msgspec.Struct, tag=True, frozen=True):
    """Sent once, before a worker asked to shut down exits: what it wrote to its prompt store."""

    tokens: int
    bytes: int
    seconds: float
    entries: int  # files of this alias's store after the save
    store_bytes: int


FromWorker = Loaded | Result | Failed | Step | Alive | Saved


def frame(encoder: msgspec.msgpack.Encoder, message: msgspec.Struct) -> bytes:
    body = encoder.encode(message)
    return HEADER.pack(len(body)) + body


def body_size(header: bytes) -> int:
    (size,) = HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes")
    return size
