"""The process wall with the real model: a worker loads, answers, streams, cancels, and when it dies
(signal, memory limit) fails only its own requests, with our error and no file paths."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from contextlib import aclosing
from pathlib import Path

import pytest

from server.engine import Request, SamplingParams
from server.engine.client import WorkerModel
from server.engine.process import worker_env
from server.errors import ModelCrashedError, ModelLoadError, ModelUnloadedError
from server.registry import ModelSpec

MODEL = Path(__file__).resolve().parents[2] / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
SPEC = ModelSpec(path=str(MODEL), n_ctx=512, n_parallel=2)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, 120))


async def answer(model: WorkerModel, question: str, max_tokens: int = 16) -> str:
    prompt = await model.chat_prompt([{"role": "system", "content": "You are a helpful assistant."},
                                      {"role": "user", "content": question}])
    request = Request(prompt=prompt.tokens, max_tokens=max_tokens, stop=prompt.stop,
                      sampling=SamplingParams(temperature=0.0))
    text = ""
    async with aclosing(model.generate([request])) as batches:
        async for batch in batches:
            text += "".join(piece.text for _, piece in batch)
    return text


def test_a_worker_answers_and_its_pieces_come_in_steps() -> None:
    async def scenario() -> None:
        model = await WorkerModel.start("t", SPEC)
        try:
            assert "Paris" in await answer(model, "What is the capital of France?")
            assert await model.detokenize(await model.tokenize("hello world", add_special=False)) == "hello world"
            stats = model.stats()
            assert stats["pid"] != os.getpid() and stats["rss_bytes"] > 0
        finally:
            await model.close()
        exit = await model.exited()
        assert exit.reason == "closed" and exit.code == 0

    run(scenario())


def test_a_generation_is_announced_as_taken_before_its_prompt_is_evaluated() -> None:
    """An empty step first (the worker checked and queued the requests), then the pieces: a stream can
    send its status line while a long prompt is evaluated. A refused request raises before either."""
    async def scenario() -> list[list[object]]:
        model = await WorkerModel.start("t", SPEC)
        try:
            text = await model.tokenize(" ".join(f"word{i}" for i in range(150)))
            request = Request(prompt=text, max_tokens=2, stop=[], sampling=SamplingParams(temperature=0.0))
            async with aclosing(model.generate([request])) as batches:
                steps = [batch async for batch in batches]
            too_long = Request(prompt=[1] * 600, max_tokens=4, stop=[], sampling=SamplingParams())
            refused = model.generate([too_long])
            with pytest.raises(Exception, match="context"):
                await refused.__anext__()
            return steps  # type: ignore[return-value]
        finally:
            await model.close()

    steps = run(scenario())
    assert steps[0] == [] and all(steps[1:]), steps
    assert steps[-1][-1][1].finish_reason == "length"  # type: ignore[index]


def test_errors_cross_the_wall_as_our_own_classes() -> None:
    async def scenario() -> None:
        model = await WorkerModel.start("t", SPEC)
        try:
            request = Request(prompt=[1] * 600, max_tokens=4, stop=[], sampling=SamplingParams())
            with pytest.raises(Exception) as info:
                async for _ in model.generate([request]):
                    pass
            assert type(info.value).__name__ == "ContextLengthError" and info.value.status_code == 400
            assert "Paris" in await answer(model, "What is the capital of France?")  # still serving
        finally:
            await model.close()

    run(scenario())


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGSEGV])
def test_a_killed_worker_fails_its_running_request_at_once(signum: int) -> None:
    async def scenario() -> None:
        model = await WorkerModel.start("t", SPEC)
        request = Request(prompt=await model.tokenize("Once upon a time"), max_tokens=400, stop=[],
                          sampling=SamplingParams(temperature=0.0))
        killed_at = 0.0
        with pytest.raises(ModelCrashedError) as info:
            async with aclosing(model.generate([request])) as batches:
                async for _ in batches:
                    if not killed_at:
                        os.kill(model.stats()["pid"], signum)
                        killed_at = time.monotonic()
        assert time.monotonic() - killed_at < 1.0
        assert info.value.status_code == 503 and info.value.code == "model_crashed"
        assert "/" not in info.value.message  # no file paths
        exit = await model.exited()
        assert exit.reason == "crashed" and exit.signal == signum
        with pytest.raises(ModelCrashedError):
            await model.tokenize("after")

    run(scenario())


def test_a_worker_past_its_memory_limit_is_ended() -> None:
    async def scenario() -> None:
        model = await WorkerModel.start("t", SPEC, memory_limit=32 * 1024**2)  # less than the model itself
        exit = await asyncio.wait_for(model.exited(), 10)
        assert exit.reason == "memory_limit" and exit.signal == signal.SIGKILL
        with pytest.raises(ModelCrashedError, match="memory limit"):
            await model.tokenize("x")

    run(scenario())


def test_a_file_that_is_not_a_model_fails_to_load_without_killing_anything(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(4096))

    async def scenario() -> None:
        with pytest.raises(ModelLoadError):
            await WorkerModel.start("bad", ModelSpec(path=str(bad)))

    run(scenario())


def test_closing_fails_what_still_runs_as_unloaded() -> None:
    async def scenario() -> None:
        model = await WorkerModel.start("t", SPEC)
        request = Request(prompt=await model.tokenize("Once upon a time"), max_tokens=400, stop=[],
                          sampling=SamplingParams(temperature=0.0))
        with pytest.raises(ModelUnloadedError, match="unloaded") as info:  # issue 34: a 503 to retry, not a 500
            async with aclosing(model.generate([request])) as batches:
                async for _ in batches:
                    await model.close()
        assert info.value.status_code == 503 and info.value.headers == {"Retry-After": "1"}

    run(scenario())


# -- the worker's socket input (server/engine/worker/__main__.py) ---------------------------------------


def test_the_inbox_reads_frames_however_they_arrive() -> None:
    import socket

    from server.engine.worker.__main__ import Inbox

    ours, theirs = socket.socketpair()
    big = os.urandom(3 * 1024 * 1024)
    theirs.sendall(b"ab")
    theirs.sendall(b"cdefgh")
    inbox = Inbox(ours)
    assert inbox.read(3) == b"abc"
    assert inbox.read(5) == b"defgh"

    async def write_big() -> None:  # larger than the socket's buffer: written while we read
        await asyncio.get_running_loop().sock_sendall(theirs, big)

    theirs.setblocking(False)
    import threading

    writer = threading.Thread(target=lambda: asyncio.run(write_big()))
    writer.start()
    assert inbox.read(len(big)) == big
    writer.join()
    theirs.close()
    assert inbox.read(4) == b""  # the peer is gone: short, not blocked
    ours.close()


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="counts context switches in /proc")
def test_waiting_for_input_is_not_woken_by_the_peer_reading_what_we_wrote() -> None:
    """The main thread of a worker waits for calls while the decode thread writes a step a token; a
    plain recv() was woken each time the HTTP process read a step."""
    import socket
    import threading

    from server.engine.worker.__main__ import Inbox

    ours, theirs = socket.socketpair()
    inbox = Inbox(ours)
    tid: list[int] = []
    got: list[bytes] = []

    def wait() -> None:
        tid.append(threading.get_native_id())
        got.append(inbox.read(4))

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.2)

    def switches() -> int:
        status = Path(f"/proc/self/task/{tid[0]}/status").read_text()
        return int(status.split("\nvoluntary_ctxt_switches:")[1].split()[0])

    before = switches()
    for _ in range(200):
        ours.sendall(b"x" * 64)
        assert theirs.recv(64) == b"x" * 64
    woken = switches() - before
    theirs.sendall(b"done")
    waiter.join(5)
    assert got == [b"done"]
    assert woken < 20, f"the waiting thread woke {woken} times for 200 reads by the peer"
    ours.close()
    theirs.close()


def test_the_worker_asks_glibc_for_huge_pages_unless_told_otherwise() -> None:
    assert worker_env({"PATH": "/bin"}) == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    # Other tunables stay; the user's own choice wins (0 turns huge pages off).
    assert worker_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})["GLIBC_TUNABLES"] == (
        "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1")
    assert worker_env({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=0"
