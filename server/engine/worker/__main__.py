"""`python -m server.engine.worker FD`: one loaded model in a process of its own.

Started by the HTTP process (server/engine/client.py) with one end of a socket pair as FD. The first
message is `Load`; the answer is `Loaded` or `Failed(id=0)`. Then calls are answered in order by this
thread, while generations run on the slot engine's decode thread: a `Generate` is answered `Result` once
its requests are checked and queued, then with one `Step` per decode step. The process ends on
`Shutdown`, or when the socket closes (the HTTP process is gone): exiting is how a model gives all its
memory back.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any

import msgspec

from server.engine import messages as m
from server.engine.types import Piece
from server.errors import EngineError, ServerError

READ_SIZE = 64 * 1024


class Inbox:
    """The socket's input, read only once `poll` reports some. A thread blocked in `recv` on a Unix
    socket is also woken whenever the peer reads what this process wrote (the socket's write space): the
    HTTP process reads every decode step, so the main thread woke once a token, on a core the compute
    threads need. A poll for input alone is not woken by those."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self._poll = select.poll() if hasattr(select, "poll") else None
        if self._poll is not None:
            self._poll.register(sock, select.POLLIN)

    def read(self, size: int) -> bytes:
        """`size` bytes, or fewer once the peer has closed its end."""
        while len(self._buffer) < size:
            if self._poll is not None:
                self._poll.poll()  # input, or the peer gone (reported whatever was asked)
            chunk = self._sock.recv(max(READ_SIZE, size - len(self._buffer)))
            if not chunk:
                break
            self._buffer += chunk
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data


class Connection:
    """Framed messages over the socket; `send` may be called from the main and the decode thread."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._reader = Inbox(sock)
        self._lock = threading.Lock()
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(m.ToWorker)

    def receive(self) -> m.ToWorker | None:
        """The next message, or None once the HTTP process has closed its end."""
        header = self._reader.read(m.HEADER.size)
        if len(header) < m.HEADER.size:
            return None
        body = self._reader.read(m.body_size(header))
        return self._decoder.decode(body)

    def send(self, *messages: msgspec.Struct) -> None:
        data = b"".join(m.frame(self._encoder, message) for message in messages)
        with self._lock:
            self._sock.sendall(data)

    def emit(self, pieces: list[tuple[int, int, Piece]], ended: list[int],
             failed: list[tuple[int, BaseException]], cells: int) -> None:
        """One decode step's output as one write: failures first, so an ended id never hides one."""
        faults = [m.Failed(id=job, fault=fault_of(exc)) for job, exc in failed]
        self.send(*faults, m.Step(pieces=pieces, ended=ended, cells=cells))


def fault_of(exc: BaseException) -> m.Fault:
    if isinstance(exc, ServerError):
        return m.fault(exc)
    # The exception's own text can hold a request's content (a KeyError of token ids): kept out of the
    # answer, written whole to the worker's stderr, which the server's log carries.
    traceback.print_exception(exc, file=sys.stderr)
    return m.Fault(kind=EngineError.__name__, message=f"the engine failed: {type(exc).__name__}")


def answer(engine: Any, message: m.ToWorker) -> Any:
    if isinstance(message, m.ChatPromptCall):
        return engine.chat_prompt(message.messages, message.tools, message.template_kwargs,
                                  fit_context=message.fit_context)
    if isinstance(message, m.TokenizeCall):
        return engine.tokenize(message.text, add_special=message.add_special)
    if isinstance(message, m.DetokenizeCall):
        return engine.detokenize(message.tokens)
    if isinstance(message, m.EmbedCall):
        return engine.embed(message.inputs)
    if isinstance(message, m.SlotsCall):
        return engine.slots()
    if isinstance(message, m.Generate):
        return engine.generate(message.id, message.requests)
    raise EngineError(f"unexpected message {type(message).__name__}")


def serve(conn: Connection, compute_lock: str | None = None) -> int:
    from server.engine.worker.llama import LlamaEngine  # imports llama_cpp: only in this process

    load = conn.receive()
    if not isinstance(load, m.Load):
        return 2
    try:
        engine = LlamaEngine(load.alias, load.spec, conn.emit, compute_lock, load.store)
    except Exception as exc:
        conn.send(m.Failed(id=0, fault=fault_of(exc)))
        return 1
    conn.send(m.Loaded(n_ctx=engine.n_ctx, n_vocab=engine.n_vocab, n_threads=engine.n_threads,
                       n_threads_batch=engine.n_threads_batch, kv_cells=engine.kv_cells,
                       chat_template=engine.chat_template))
    threading.Thread(target=heartbeat, args=(conn,), name="heartbeat", daemon=True).start()
    while True:
        message = conn.receive()
        if message is None:
            return 0
        if isinstance(message, m.Shutdown):  # asked to leave: what it evaluated goes to the prompt store
            conn.send(saved(engine))
            return 0
        if isinstance(message, m.Cancel):
            engine.cancel(message.id)
            continue
        try:
            value = answer(engine, message)
        except Exception as exc:
            conn.send(m.Failed(id=message.id, fault=fault_of(exc)))  # type: ignore[union-attr]
            continue
        # A generation's Result says its requests were checked and queued (its pieces come in steps),
        # which lets a stream send its status line while the prompt is evaluated.
        conn.send(m.Result(id=message.id, value=value))  # type: ignore[union-attr]


def saved(engine: Any) -> m.Saved:
    started = time.monotonic()
    engine.close(save_seconds=m.SAVE_SECONDS)
    store = engine.store
    if store is None:
        return m.Saved(tokens=0, bytes=0, seconds=0.0, entries=0, store_bytes=0)
    return m.Saved(tokens=store.saved_tokens, bytes=store.saved_bytes, seconds=time.monotonic() - started,
                   entries=len(store.entries), store_bytes=store.size())


def heartbeat(conn: Connection) -> None:
    """`Alive` once a second while the process runs (llama.cpp's calls release the GIL, so a long decode
    or tokenization does not hold it back); ends when the socket does."""
    alive = m.Alive()
    while True:
        time.sleep(m.HEARTBEAT_SECONDS)
        try:
            conn.send(alive)
        except OSError:
            return


def main(argv: list[str]) -> int:
    # Ctrl-C and SIGHUP reach the whole process group: the HTTP process decides when a model ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    sock = socket.socket(fileno=int(argv[0]))
    code = serve(Connection(sock), argv[1] if len(argv) > 1 else None)
    sys.stdout.flush()
    sys.stderr.flush()
    # No interpreter teardown: llama.cpp's destructors have nothing to give back that exiting does not,
    # and a native bug in one of them must not turn a clean unload into a crash.
    os._exit(code)


if __name__ == "__main__":
    main(sys.argv[1:])
