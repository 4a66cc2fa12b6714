"""Every private llama-cpp-python name the worker relies on, in one place, each with why the public API
does not serve. A llama-cpp-python upgrade that breaks one of them breaks it here."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from typing import Any

import jinja2
import llama_cpp
from llama_cpp import llama_chat_format
from llama_cpp._internals import LlamaContext, LlamaSampler

from server.engine.types import ChatPrompt
from server.errors import InvalidRequestError, ModelLoadError

__all__ = ["FLASH_ATTN", "LlamaContext", "LlamaSampler", "Threadpools", "Tokenize", "chat_handler",
           "model_of", "n_ctx_train", "render_chat", "render_template", "template_formatter"]


# `Llama.tokenize(text, add_bos, special)`, or our linear-time stand-in for it (worker/tokenizer.py).
Tokenize = Callable[[bytes, bool, bool], list[int]]

# `flash_attn` of an alias as llama.cpp's type: `Llama(...)` can only force it on or off, so contexts we
# build ourselves take None as llama.cpp's `auto` (what llama-server does).
FLASH_ATTN = {
    None: llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
    True: llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
    False: llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
}


def model_of(llm: llama_cpp.Llama) -> Any:
    """The wrapped `llama_model` (`Llama._model`): our slot engine builds its own context and samplers on
    it, and `Llama` exposes no public handle for that."""
    return llm._model


def n_ctx_train(llm: llama_cpp.Llama) -> int:
    """The context length the model was trained with: only the private model wrapper reports it."""
    return int(model_of(llm).n_ctx_train())


def chat_handler(llm: llama_cpp.Llama) -> Any:
    """The handler `Llama.create_chat_completion` would use. The GGUF's own Jinja template lives in the
    private `_chat_handlers` table; the public API only offers running the whole completion."""
    name = llm.chat_format or "llama-2"  # llama-cpp-python's own fallback when neither GGUF nor alias says
    return (
        llm.chat_handler
        or llm._chat_handlers.get(name)
        or llama_chat_format.get_chat_completion_handler(name)
    )


# The prompt-capture trick. llama-cpp-python keeps its chat formats behind its chat-completion handlers
# (the GGUF's Jinja template, or a named format such as `chatml`); each renders the prompt, tokenizes it
# and hands it to `create_completion`. There is no public "render only" call, so we call the handler
# with a stand-in for the model that captures the tokenized prompt at that hand-over instead of
# generating: every format llama-cpp-python knows works, and generation stays in our own loop.

class _Captured(Exception):
    def __init__(self, prompt: list[int], stop: list[str]) -> None:
        self.prompt = prompt
        self.stop = stop


class _PromptCapture:
    """Looks like a `Llama` to a chat handler; stops it at `create_completion` with the prompt."""

    verbose = False

    def __init__(self, llm: llama_cpp.Llama, tokenize: Tokenize) -> None:
        self._llm = llm
        self.tokenize = tokenize

    def create_completion(self, prompt: Any, stop: Any = None, **_: Any) -> Any:
        if isinstance(prompt, str):
            prompt = self.tokenize(prompt.encode("utf-8"), True, True)
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        raise _Captured(list(prompt), stops)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llm, name)


def render_chat(llm: llama_cpp.Llama, tokenize: Tokenize, handler: Any, messages: list[dict[str, Any]]) -> ChatPrompt:
    try:
        handler(llama=_PromptCapture(llm, tokenize), messages=messages, stream=False)
    except _Captured as captured:
        return ChatPrompt(captured.prompt, [s for s in captured.stop if s])
    except (jinja2.TemplateError, ValueError, TypeError, KeyError) as exc:
        raise InvalidRequestError(f"The model's chat template rejected these messages: {exc}",
                                  param="prompt") from exc
    raise InvalidRequestError("This alias's chat format does not produce a plain prompt.", param="prompt")


def template_formatter(llm: llama_cpp.Llama, template: str) -> Any:
    """llama-cpp-python's Jinja renderer (Hugging Face's sandbox, filters and globals) for a template, with
    the model's own BOS and EOS texts. Calling the formatter itself, not the completion handler built on
    it, lets tools and extra variables reach the template without the handler's own keyword arguments."""
    vocab = model_of(llm)
    eos, bos = llm.token_eos(), llm.token_bos()
    try:
        return llama_chat_format.Jinja2ChatFormatter(
            template=template, eos_token=vocab.token_get_text(eos) if eos != -1 else "",
            bos_token=vocab.token_get_text(bos) if bos != -1 else "")
    except jinja2.TemplateError as exc:
        raise ModelLoadError(f"the chat template does not parse: {exc}") from exc


def render_template(tokenize: Tokenize, formatter: Any, messages: list[dict[str, Any]],
                    tools: list[dict[str, Any]] | None, variables: dict[str, Any]) -> ChatPrompt:
    try:
        result = formatter(messages=messages, tools=tools, **variables)
    except (jinja2.TemplateError, ValueError, TypeError, KeyError) as exc:
        raise InvalidRequestError(f"The model's chat template rejected these messages: {exc}",
                                  param="prompt") from exc
    # The template writes its own BOS (`added_special`), as a Hugging Face template does.
    tokens = tokenize(result.prompt.encode("utf-8"), not result.added_special, True)
    stops = [result.stop] if isinstance(result.stop, str) else list(result.stop or [])
    return ChatPrompt(tokens, [s for s in stops if s], result.prompt.rstrip().endswith("<think>"))


# Thread pools with a polling level of our choosing. llama-cpp-python does not wrap
# `llama_attach_threadpool` (its binding is a TODO) nor ggml's thread-pool calls, so they are bound
# here with ctypes, against the `ggml_threadpool_params` layout of the llama.cpp this package vendors
# (ggml.h). The polling level matters only to a llama.cpp built without OpenMP: with OpenMP (the Linux
# wheel pip builds) ggml's barriers are OpenMP's and the pool gives only priority and CPU placement;
# poll 0 and 50 measured alike there (README, "Threads").

_MAX_THREADS = 512  # GGML_MAX_N_THREADS


class _ThreadpoolParams(ctypes.Structure):
    _fields_ = [("cpumask", ctypes.c_bool * _MAX_THREADS), ("n_threads", ctypes.c_int), ("prio", ctypes.c_int),
                ("poll", ctypes.c_uint32), ("strict_cpu", ctypes.c_bool), ("paused", ctypes.c_bool)]


def _ggml() -> tuple[Any, Any, Any]:
    folder = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    base = ctypes.CDLL(os.path.join(folder, "libggml-base.so"))
    cpu = ctypes.CDLL(os.path.join(folder, "libggml-cpu.so"))
    base.ggml_threadpool_params_init.argtypes = [ctypes.POINTER(_ThreadpoolParams), ctypes.c_int]
    base.ggml_threadpool_params_init.restype = None
    cpu.ggml_threadpool_new.argtypes = [ctypes.POINTER(_ThreadpoolParams)]
    cpu.ggml_threadpool_new.restype = ctypes.c_void_p
    cpu.ggml_threadpool_free.argtypes = [ctypes.c_void_p]
    cpu.ggml_threadpool_free.restype = None
    lib = llama_cpp.llama_cpp._lib
    lib.llama_attach_threadpool.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.llama_attach_threadpool.restype = None
    lib.llama_detach_threadpool.argtypes = [ctypes.c_void_p]
    lib.llama_detach_threadpool.restype = None
    return base, cpu, lib


class Threadpools:
    """A generation pool and a batch pool attached to one llama.cpp context, freed by `close`."""

    def __init__(self, ctx: Any, n_threads: int, n_threads_batch: int, poll: int) -> None:
        self._base, self._cpu, self._lib = _ggml()
        self._ctx = ctx
        # One pool serves both when the counts agree (the default): two pools of the same size only add
        # threads that wait, and a pause and resume of each whenever a step's batch size crosses 1.
        self._pools = [self._new(n, poll) for n in dict.fromkeys((n_threads, n_threads_batch))]
        self._lib.llama_attach_threadpool(ctx, self._pools[0], self._pools[-1])

    def _new(self, n_threads: int, poll: int) -> int:
        params = _ThreadpoolParams()
        self._base.ggml_threadpool_params_init(ctypes.byref(params), n_threads)
        params.poll = poll
        pool = self._cpu.ggml_threadpool_new(ctypes.byref(params))
        if not pool:
            raise RuntimeError(f"ggml could not start a pool of {n_threads} threads")
        return int(pool)

    def close(self) -> None:
        self._lib.llama_detach_threadpool(self._ctx)
        for pool in self._pools:
            self._cpu.ggml_threadpool_free(pool)
        self._pools = []


def warm_up(ctx: Any, batch: Any, vocab: Any, n_batch: int) -> None:
    """One decode of a prompt-sized batch and one of a single token, then the cache emptied, while the model
    loads (llama-server warms up too): a new context's first decodes build their compute graphs and
    buffers, which cost the first request after a load 0.3-0.4 s on 2 cores (measured with SmolLM2-135M).
    Called on the decode thread: OpenMP keeps a team of threads per calling thread, and a warm-up on the
    worker's main thread left a second team beside the decode thread's that took a third of its speed."""
    for size in (min(n_batch, 32), 1):
        throwaway_decode(ctx, batch, vocab, size, all_logits=False)


def throwaway_decode(ctx: Any, batch: Any, vocab: Any, size: int, *, all_logits: bool) -> int:
    """Decode `size` begin tokens from position 0 of sequence 0, then empty the cache (a warm-up, a
    timing); llama_decode's status."""
    token = max(llama_cpp.llama_vocab_bos(vocab), 0)
    for i in range(size):
        batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.seq_id[i][0] = token, i, 1, 0
        batch.logits[i] = all_logits or i == size - 1
    batch.n_tokens = size
    status = int(llama_cpp.llama_decode(ctx, batch))
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
    return status


# From this many tokens a batch's attention is computed in tiles (ggml-cpu's GGML_FA_TILE_Q), fast for
# prompts; below it the reference kernels cost nothing (see ReferenceKernels).
TILED_ROWS = 64


class ReferenceKernels:
    """Switches the context's CPU backend between llama.cpp's fastest attention kernels and its reference
    ones (`ggml_backend_cpu_set_use_ref`). Measured with SmolLM2-135M on 2 cores: a single-token decode
    over 512 cells or more splits the cells between threads and sums each half in half precision, so its
    logits differ (up to 0.8) from the same token's in a batch of two or more, which sums them in one
    pass; with the reference kernels both take the one-pass path and agree bit for bit, at no measured
    cost (10.0 against 10.2 ms a token at 1,000 cells, within noise). Speculative decoding verifies
    drafted tokens in such batches: decode steps use the reference kernels so that a sequence's output
    is the same with and without drafts. Batches of TILED_ROWS tokens or more (prompt chunks) keep the
    fast tiled kernels.
    llama.cpp's C API does not hand out a context's backends: its scheduler is read through the
    exported `llama_context::get_sched` (a C++ method, called with the context as its `this`). Where
    that symbol is missing, `available` is False and nothing is switched."""

    def __init__(self, ctx: Any) -> None:
        self._backends: list[int] = []
        self._on: bool | None = None
        try:
            base, cpu, lib = _ggml()
            get_sched = lib._ZNK13llama_context9get_schedEv
            count, get = base.ggml_backend_sched_get_n_backends, base.ggml_backend_sched_get_backend
            is_cpu, self._set = cpu.ggml_backend_is_cpu, cpu.ggml_backend_cpu_set_use_ref
        except (OSError, AttributeError):
            return
        get_sched.restype, get_sched.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
        count.restype, count.argtypes = ctypes.c_int, [ctypes.c_void_p]
        get.restype, get.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_int]
        is_cpu.restype, is_cpu.argtypes = ctypes.c_bool, [ctypes.c_void_p]
        self._set.restype, self._set.argtypes = None, [ctypes.c_void_p, ctypes.c_bool]
        sched = get_sched(ctx)
        if sched:
            backends = (get(sched, i) for i in range(count(sched)))
            self._backends = [b for b in backends if b and is_cpu(b)]

    @property
    def available(self) -> bool:
        return bool(self._backends)

    def fit(self, tokens: int) -> None:
        """The kernels for a batch of `tokens`: the reference ones below TILED_ROWS."""
        self.use(tokens < TILED_ROWS)

    def use(self, reference: bool) -> None:
        if reference != self._on:
            for backend in self._backends:
                self._set(backend, reference)
            self._on = reference
