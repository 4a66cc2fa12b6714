"""Model workers seen from outside: a crash of one alias's process (injected with a signal) fails only
that alias's requests, with OpenAI's error shape; every other alias keeps serving, /health stays 200,
the next request starts a new process; unloading gives the memory back."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import MODEL, RunningServer

TWO_ALIASES = """
pool: {max_resident: 2}
models:
  alpha: {path: "{model}", n_ctx: 1024, n_parallel: 2}
  beta: {path: "{model}", n_ctx: 1024, n_parallel: 2}
"""
STORY = [{"role": "user", "content": "Tell me a long story about a dragon."}]


def pool_row(server: RunningServer, alias: str) -> dict:  # type: ignore[type-arg]
    rows = httpx.get(server.base_url + "/admin/pool", timeout=5).json()["models"]
    return next(r for r in rows if r["id"] == alias)


def stream_lines(server: RunningServer, alias: str, max_tokens: int, lines: list[str],
                 first: threading.Event) -> threading.Thread:
    def run() -> None:
        body = {"model": alias, "messages": STORY, "max_tokens": max_tokens, "temperature": 0, "stream": True}
        with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body, timeout=60) as response:
            for line in response.iter_lines():
                if line:
                    lines.append(line)
                    first.set()
        lines.append("END")

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGSEGV])
def test_a_crashed_worker_fails_only_its_own_alias(make_server, signum: int) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = make_server(TWO_ALIASES)
    client = server.client()
    for alias in ("alpha", "beta"):
        client.chat.completions.create(model=alias, messages=STORY, max_tokens=1)
    victim_pid = pool_row(server, "alpha")["pid"]
    beta_pid = pool_row(server, "beta")["pid"]
    assert victim_pid and beta_pid and victim_pid != beta_pid

    other, doomed = [], []
    other_started, doomed_started = threading.Event(), threading.Event()
    other_thread = stream_lines(server, "beta", 120, other, other_started)
    doomed_thread = stream_lines(server, "alpha", 400, doomed, doomed_started)
    assert other_started.wait(30) and doomed_started.wait(30)
    os.kill(victim_pid, signum)
    killed_at = time.monotonic()
    doomed_thread.join(30)
    doomed_ended = time.monotonic()
    assert httpx.get(server.base_url + "/health", timeout=5).status_code == 200
    other_thread.join(60)

    # The killed alias's stream: an error event (model_crashed, no paths), then [DONE], within 1 s.
    assert doomed_ended - killed_at < 1.5
    errors = [line for line in doomed if '"error"' in line]
    assert errors and '"model_crashed"' in errors[0] and "/models/" not in errors[0]
    assert doomed[-2:] == ["data: [DONE]", "END"]
    # The other alias's stream ran to its end.
    assert any('"finish_reason":"length"' in line for line in other), other[-3:]
    assert other[-2:] == ["data: [DONE]", "END"]
    assert pool_row(server, "beta")["pid"] == beta_pid

    # The next request to the crashed alias is served by a new process.
    reply = client.chat.completions.create(model="alpha", messages=STORY, max_tokens=4)
    assert reply.choices[0].finish_reason == "length"
    row = pool_row(server, "alpha")
    assert row["pid"] not in (None, victim_pid) and row["restarts"] == 1
    scrape = httpx.get(server.base_url + "/metrics", timeout=5).text
    assert 'llm_model_crashes_total{model="alpha",reason="crashed"} 1.0' in scrape
    assert "worker_died" in server.log() and f'"signal":{signum}' in server.log()


def tree_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants, in bytes."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            total += int(Path(f"/proc/{current}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


def test_unloading_gives_the_memory_back(make_server) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = make_server(TWO_ALIASES)
    client = server.client()
    client.chat.completions.create(model="beta", messages=STORY, max_tokens=1)  # warm the HTTP side
    httpx.post(server.base_url + "/admin/models/beta/unload", timeout=10)
    time.sleep(0.5)
    before = tree_rss(server.process.pid)
    client.chat.completions.create(model="alpha", messages=STORY, max_tokens=32)
    loaded = tree_rss(server.process.pid)
    assert httpx.post(server.base_url + "/admin/models/alpha/unload", timeout=10).json()["status"] == "unloaded"
    time.sleep(0.5)
    after = tree_rss(server.process.pid)
    assert loaded > before * 1.2, (before, loaded)  # the model was really resident
    assert abs(after - before) <= before * 0.05, (before, loaded, after)


def transparent_huge_pages() -> str:
    """The kernel's THP mode: the bracketed word of `always [madvise] never`."""
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "never"
    return text[text.index("[") + 1:text.index("]")]


def test_the_weights_are_the_workers_own_memory_in_huge_pages(server: RunningServer) -> None:
    """By default the worker reads the weights into its own memory instead of mapping the file, and asks
    for huge pages (docs/benchmarks.md, "Weights in huge pages"): the GGUF file is not mapped, and where
    the kernel hands out huge pages on request, the worker holds at least half the file's size in them
    (measured: about three times the file, weights, KV cache and compute buffers; without the request,
    none)."""
    server.client().chat.completions.create(model="smollm2", messages=STORY, max_tokens=1)
    pid = pool_row(server, "smollm2")["pid"]
    model_file = str(MODEL.resolve())
    assert model_file not in Path(f"/proc/{pid}/maps").read_text(), "the worker maps the GGUF file"
    if transparent_huge_pages() == "never":
        pytest.skip("this kernel hands out no transparent huge pages")
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    huge = next(int(line.split()[1]) * 1024 for line in rollup.splitlines() if line.startswith("AnonHugePages:"))
    assert huge >= os.path.getsize(model_file) // 2, (huge, os.path.getsize(model_file))


def test_two_loads_at_once_leave_the_logs_alone(make_server) -> None:  # type: ignore[no-untyped-def]
    """llama-cpp-python silences fd 1 and 2 while it loads, process-wide and not thread-safe: two loads
    in one process could leave them on /dev/null for good. Each load now runs in its own process."""
    server: RunningServer = make_server(TWO_ALIASES)
    threads = [threading.Thread(target=lambda a=alias: httpx.post(f"{server.base_url}/admin/models/{a}/load",
                                                                   timeout=60))
               for alias in ("alpha", "beta")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert pool_row(server, "alpha")["loaded"] and pool_row(server, "beta")["loaded"]
    marker = "after-two-loads-" + str(time.monotonic_ns())
    httpx.get(server.base_url + "/v1/models", headers={"X-Request-ID": marker}, timeout=5)
    deadline = time.monotonic() + 5
    while marker not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker in server.log()


def test_a_client_that_leaves_is_a_499_not_a_500(server: RunningServer) -> None:
    def count(scrape: str, status: str) -> float:
        prefix = 'llm_requests_total{model="smollm2",route="/v1/chat/completions",status="' + status + '"} '
        return sum(float(line[len(prefix):]) for line in scrape.splitlines() if line.startswith(prefix))

    before = httpx.get(server.base_url + "/metrics", timeout=5).text
    body = {"model": "smollm2", "messages": STORY, "max_tokens": 400, "temperature": 0, "logit_bias": {"2": -100}}
    for _ in range(3):
        with pytest.raises(httpx.TimeoutException):
            httpx.post(server.base_url + "/v1/chat/completions", json=body, timeout=0.5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = httpx.get(server.base_url + "/metrics", timeout=5).text
        if count(after, "499") - count(before, "499") >= 3:
            break
        time.sleep(0.2)
    assert count(after, "499") - count(before, "499") == 3
    assert count(after, "500") == count(before, "500")


def test_every_gap_between_tokens_is_observed(server: RunningServer) -> None:
    """Three 32-token streams: 31 gaps each (vLLM's inter-token histogram observes every one)."""
    def itl_count(scrape: str) -> float:
        prefix = 'llm_inter_token_latency_seconds_count{model="smollm2"} '
        return sum(float(line[len(prefix):]) for line in scrape.splitlines() if line.startswith(prefix))

    before = itl_count(httpx.get(server.base_url + "/metrics", timeout=5).text)
    client = server.client()
    for _ in range(3):
        for _chunk in client.chat.completions.create(model="smollm2", messages=STORY, max_tokens=32, stream=True,
                                                    temperature=0, logit_bias={"2": -100}):
            pass
    after = itl_count(httpx.get(server.base_url + "/metrics", timeout=5).text)
    assert after - before == 3 * 31


def test_embedding_inputs_count_as_prompt_tokens(server: RunningServer) -> None:
    def prompt_tokens(scrape: str) -> float:
        prefix = 'llm_prompt_tokens_total{model="smollm2-embed"} '
        return sum(float(line[len(prefix):]) for line in scrape.splitlines() if line.startswith(prefix))

    before = prompt_tokens(httpx.get(server.base_url + "/metrics", timeout=5).text)
    reply = server.client().embeddings.create(model="smollm2-embed", input=["hello world", "one two three"])
    after = prompt_tokens(httpx.get(server.base_url + "/metrics", timeout=5).text)
    assert reply.usage.prompt_tokens > 0 and after - before == reply.usage.prompt_tokens


def test_a_file_that_cannot_load_says_why_and_evicts_nobody(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Issue 34: a worker that answered its fault and exited was killed again, and the kill's error
    (ProcessLookupError) replaced the fault; garbage after the GGUF magic passed the pool's check and
    cost a healthy model its place before failing."""
    (tmp_path / "random.gguf").write_bytes(os.urandom(4096))
    (tmp_path / "garbage.gguf").write_bytes(b"GGUF\x03\0\0\0" + b"\xff" * 64)
    (tmp_path / "vanished.gguf").write_bytes(MODEL.read_bytes()[:1 << 20])
    lines = ["pool:", "  max_resident: 2", "models:"]
    for alias in ("good", "other"):
        lines += [f"  {alias}:", "    path: {model}", "    n_ctx: 256"]
    for name in ("random", "garbage", "vanished"):
        lines += [f"  {name}:", f"    path: {tmp_path / (name + '.gguf')}", "    n_ctx: 256"]
    server = make_server("\n".join(lines) + "\n")
    (tmp_path / "vanished.gguf").unlink()
    ask = {"prompt": "Hi", "max_tokens": 1}

    def refused(alias: str) -> str:
        reply = httpx.post(server.base_url + "/v1/completions", json={"model": alias, **ask}, timeout=60)
        assert reply.status_code == 503, reply.text
        message = reply.json()["error"]["message"]
        assert "ProcessLookupError" not in message and str(tmp_path) not in message, message
        return str(message)

    reasons = {"random": "no GGUF magic", "garbage": "not a usable GGUF file", "vanished": "No such file"}
    assert httpx.post(server.base_url + "/v1/completions", json={"model": "good", **ask}, timeout=60).is_success
    for alias, reason in reasons.items():  # room for a second model
        assert reason in refused(alias)
    # The pool full: the header is read before anyone is evicted for a file that cannot load.
    assert httpx.post(server.base_url + "/v1/completions", json={"model": "other", **ask}, timeout=60).is_success
    for alias, reason in reasons.items():
        assert reason in refused(alias)
    loaded = {m["id"] for m in httpx.get(server.base_url + "/admin/pool").json()["models"] if m.get("loaded")}
    assert loaded == {"good", "other"}
    log = server.log()
    assert "ProcessLookupError" not in log and '"error": ""' not in log


def test_clients_that_leave_log_no_error(make_server) -> None:  # type: ignore[no-untyped-def]
    """Issue 34: non-streamed and queued requests whose client left logged granian's error traceback, a
    body cut mid-way was access-logged 500 at error level. Now each is a 499 at info level, and nothing
    at error level is logged; streamed ones too."""
    server = make_server("models:\n  smollm2: {path: '{model}', n_ctx: 1024, n_parallel: 1}\n")
    url = server.base_url + "/v1/chat/completions"
    body = {"model": "smollm2", "messages": STORY, "max_tokens": 300, "temperature": 0, "logit_bias": {"2": -100}}
    httpx.post(url, json={**body, "max_tokens": 1}, timeout=60)  # loaded

    def leave(request: dict[str, object], seconds: float) -> None:
        with pytest.raises(httpx.TimeoutException):
            httpx.post(url, json=request, timeout=seconds)

    def leave_stream() -> None:
        with httpx.stream("POST", url, json={**body, "stream": True}, timeout=30) as response:
            for _ in zip(range(3), response.iter_lines()):
                pass

    def cut_body() -> None:
        head = ("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Content-Length: 1000\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", int(server.base_url.rsplit(":", 1)[1]))) as sock:
            sock.sendall(head + b'{"model": "smollm2", "messages": [')
            time.sleep(0.1)

    threads = []
    for _ in range(16):  # 80 clients that leave
        leave(body, 0.3)  # non-streamed, mid-generation
        threads.append(threading.Thread(target=leave, args=({**body, "max_tokens": 800}, 2.0)))  # holds the slot
        threads[-1].start()
        time.sleep(0.2)
        leave(body, 0.2)  # queued behind it
        leave_stream()
        cut_body()
    for thread in threads:
        thread.join()
    time.sleep(1.0)
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    requests = [r for r in lines if r.get("event") == "request" and r.get("route") == "/v1/chat/completions"]
    assert not [r for r in requests if r["status"] >= 500], [r for r in requests if r["status"] >= 500][:3]
    assert len([r for r in requests if r["status"] == 499]) >= 64
    assert not [r for r in lines if r.get("level") == "error"]
    assert "[ERROR]" not in server.log() and "Traceback" not in server.log()


def test_a_stopped_worker_is_detected_and_replaced(make_server) -> None:  # type: ignore[no-untyped-def]
    """Issue 34: a worker that hangs (here SIGSTOP: every thread stops, as in a deadlock) was never noticed.
    It sends a heartbeat every second; silent for HANG_SECONDS (10 s) it is killed like a crash: its
    stream ends with a model_crashed error, and the next request gets a new worker."""
    from server.engine.messages import HANG_SECONDS

    server: RunningServer = make_server(TWO_ALIASES)
    client = server.client()
    client.chat.completions.create(model="alpha", messages=STORY, max_tokens=1)
    victim_pid = pool_row(server, "alpha")["pid"]
    lines: list[str] = []
    started = threading.Event()
    thread = stream_lines(server, "alpha", 400, lines, started)
    assert started.wait(30)
    os.kill(victim_pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    thread.join(HANG_SECONDS + 10)
    assert not thread.is_alive()
    assert HANG_SECONDS - 1 < time.monotonic() - stopped_at < HANG_SECONDS + 5
    errors = [line for line in lines if '"error"' in line]
    assert errors and '"model_crashed"' in errors[0] and "stopped answering" in errors[0]
    reply = client.chat.completions.create(model="alpha", messages=STORY, max_tokens=4)
    assert reply.choices[0].finish_reason == "length"
    assert pool_row(server, "alpha")["pid"] not in (None, victim_pid)
    scrape = httpx.get(server.base_url + "/metrics", timeout=5).text
    assert 'llm_model_crashes_total{model="alpha",reason="hung"} 1.0' in scrape
    assert "worker_hung" in server.log()
