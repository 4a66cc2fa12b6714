"""One loaded GGUF model, inside its worker process: the `Llama`, its slot engine, template and tokenizer.

Blocking calls, made by the worker's main thread; generation runs on the slot engine's decode thread.
llama.cpp failures become our own exceptions here; callers never see llama_cpp types or messages.
"""

from __future__ import annotations

import time
from typing import Any

import llama_cpp
import msgspec

from server.engine.messages import StoreConfig
from server.engine.types import ChatPrompt, Embeddings, Request, check_context
from server.engine.worker.compat import (
    TILED_ROWS,
    chat_handler,
    model_of,
    n_ctx_train,
    render_chat,
    render_template,
    template_formatter,
)
from server.engine.worker.compute_lock import ComputeLock, usable_cores
from server.engine.worker.draft import DraftModel
from server.engine.worker.embedding import EmbeddingContext
from server.engine.worker.grammars import ConstraintVocab, GrammarCache
from server.engine.worker.prompt_store import PromptStore, open_store
from server.engine.worker.slots import Emit, SlotEngine
from server.engine.worker.speculator import Speculator
from server.engine.worker.tokenizer import Tokenizer
from server.engine.worker.tokens import TokenPieces
from server.errors import ContextLengthError, EngineError, InvalidRequestError, ModelLoadError
from server.registry import SERVING_KEYS, ModelSpec

_POOLING = {
    "unspecified": llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED,
    "none": llama_cpp.LLAMA_POOLING_TYPE_NONE,
    "mean": llama_cpp.LLAMA_POOLING_TYPE_MEAN,
    "cls": llama_cpp.LLAMA_POOLING_TYPE_CLS,
    "last": llama_cpp.LLAMA_POOLING_TYPE_LAST,
    "rank": llama_cpp.LLAMA_POOLING_TYPE_RANK,
}

# ModelSpec keys that are ours, not `Llama(...)` arguments.
_NOT_LLAMA_ARGS = {"path", "sampling", "pooling_type", "n_parallel", "poll", "chat_template", "chat_template_kwargs",
                   "reasoning_format", "prompt_cache_mib", "speculative"} | SERVING_KEYS
# A chat model generates in the slot engine's own context; the one `Llama` makes is left at the smallest.
_UNUSED_CTX = 256


def default_threads() -> int:
    """Every core this process may run on, as llama-server uses. The HTTP process is another process
    now: measured on 2 cores, 2 compute threads beat 1 on a quiet machine and lose nothing on a busy one."""
    return usable_cores()


class LlamaEngine:
    def __init__(self, alias: str, spec: ModelSpec, emit: Emit, compute_lock: str | None = None,
                 store: StoreConfig | None = None) -> None:
        self.alias = alias
        self.spec = spec
        kwargs = {k: v for k, v in msgspec.structs.asdict(spec).items() if k not in _NOT_LLAMA_ARGS}
        kwargs = {k: v for k, v in kwargs.items() if v is not None}  # flash_attn None: decided in SlotEngine
        pooling = spec.pooling_type
        kwargs["pooling_type"] = _POOLING[pooling] if isinstance(pooling, str) else pooling
        self.n_threads = spec.n_threads or default_threads()
        self.n_threads_batch = spec.n_threads_batch or self.n_threads
        kwargs["n_threads"], kwargs["n_threads_batch"] = self.n_threads, self.n_threads_batch
        kwargs["n_ctx"] = _UNUSED_CTX
        compute = ComputeLock(compute_lock, max(self.n_threads, self.n_threads_batch))
        try:
            self._llm = llama_cpp.Llama(model_path=spec.path, **kwargs)
            self.n_ctx = spec.n_ctx or n_ctx_train(self._llm)
            self.n_vocab = self._llm.n_vocab()
            self._tokenize = Tokenizer(self._llm)
            self._slots: SlotEngine | None = None
            self._drafter: DraftModel | None = None
            self.store: PromptStore | None = None
            # Generation only: an embedding alias never reads its vocabulary for llguidance.
            self._grammars: GrammarCache | None = None
            self._embedder: EmbeddingContext | None = None
            if spec.embedding:
                self._embedder = EmbeddingContext(self._llm, self.n_ctx, spec.flash_attn, compute)
            self._chat_handler = None
            self._formatter = None
            # The alias's own template, else the GGUF's unless the alias names a chat format instead.
            self.chat_template: str | None = None
            if not spec.embedding:
                self._chat_handler = chat_handler(self._llm)
                self.chat_template = spec.chat_template or (
                    None if spec.chat_format else self._llm.metadata.get("tokenizer.chat_template"))
                if self.chat_template:
                    self._formatter = template_formatter(self._llm, self.chat_template)
                self._grammars = GrammarCache(ConstraintVocab(model_of(self._llm).vocab))
                self.store = open_store(alias, spec, self.n_ctx, store)
                pieces = TokenPieces(self._llm)  # one memo of token texts for the slots and the speculator
                self._slots = SlotEngine(self._llm, pieces, emit, n_parallel=spec.n_parallel,
                                         n_ctx=self.n_ctx, n_batch=spec.n_batch, n_ubatch=spec.n_ubatch,
                                         flash_attn=spec.flash_attn, poll=spec.poll, grammars=self._grammars,
                                         prompt_cache_bytes=spec.prompt_cache_mib * 1024 * 1024,
                                         compute=compute, store=self.store, speculator=self._speculator(pieces))
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"llama.cpp could not load the model file: {exc}") from exc

    def _speculator(self, pieces: TokenPieces) -> Speculator | None:
        spec = self.spec.speculative
        if spec.n_max == 0 or not (spec.ngram or spec.draft_path):
            return None
        if spec.draft_path:
            self._drafter = DraftModel(spec.draft_path, self._llm, n_parallel=self.spec.n_parallel, n_ctx=self.n_ctx,
                                       n_batch=self.spec.n_batch, n_threads=self.n_threads, p_min=spec.draft_p_min,
                                       n_gpu_layers=self.spec.n_gpu_layers)
        vocab = llama_cpp.llama_model_get_vocab(self._llm.model)
        return Speculator(spec.n_max, spec.ngram_size if spec.ngram else 0,
                          lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token)), max_rows=TILED_ROWS - 1,
                          drafter=self._drafter, tokenize=lambda text: self._tokenize(text, False, False),
                          text_of=pieces)

    def close(self, save_seconds: float = 0.0) -> None:
        """Stop generating; the caches go to the prompt store first, for at most `save_seconds`."""
        if self._slots is not None:
            self._slots.close(save_until=time.monotonic() + save_seconds if self.store is not None else None)
        if self._drafter is not None:
            self._drafter.close()
        if self.store is not None:
            self.store.close()

    @property
    def kv_cells(self) -> int:
        return self._slots.cells_total if self._slots is not None else 0

    # -- tokens -----------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return self._tokenize(text.encode("utf-8"), add_special, True)

    def _within_context(self, text: bytes, add_bos: bool = True, special: bool = True) -> list[int]:
        """A prompt's tokens; text that cannot fit the context is refused before it is tokenized."""
        fewest = self._tokenize.fewest_tokens(text)
        if fewest >= self.n_ctx:
            raise ContextLengthError(f"This model's context is {self.n_ctx} tokens and the prompt alone has at "
                                     f"least {fewest}. Shorten the prompt.")
        return self._tokenize(text, add_bos, special)

    def detokenize(self, tokens: list[int]) -> str:
        self._check_tokens(tokens, "tokens")
        return self._llm.detokenize(tokens).decode("utf-8", errors="replace")

    def _check_tokens(self, tokens: list[int], param: str) -> None:
        bad = next((t for t in tokens if not 0 <= t < self.n_vocab), None)
        if bad is not None:
            raise InvalidRequestError(f"Token id {bad} is outside this model's vocabulary (0..{self.n_vocab - 1}).",
                                      param=param)

    def chat_prompt(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
                    variables: dict[str, Any] | None = None, *, fit_context: bool = False) -> ChatPrompt:
        tokenize = self._within_context if fit_context else self._tokenize
        if self._formatter is not None:
            return render_template(tokenize, self._formatter, messages, tools, variables or {})
        return render_chat(self._llm, tokenize, self._chat_handler, messages)

    # -- generation -------------------------------------------------------------------------------

    def generate(self, job_id: int, requests: list[Request]) -> None:
        """Check every request (prompt and context, logit_bias, grammar) and queue them as one job; a bad
        one refuses the whole job before anything is queued. Pieces leave through the engine's `emit`."""
        slots = self._slot_engine()
        assert self._grammars is not None  # made with the slots
        prompts = [r.prompt if isinstance(r.prompt, list) else self._within_context(r.prompt.encode("utf-8"))
                   for r in requests]
        budgets = []
        grammars = set()
        for request, prompt in zip(requests, prompts):
            self._check_tokens(prompt, "prompt")
            budgets.append(check_context(len(prompt), request.max_tokens, self.n_ctx))
            bias = request.sampling.logit_bias
            bad = next((t for t in bias if not 0 <= t < self.n_vocab), None)
            if bad is not None:
                raise InvalidRequestError(f"logit_bias names token {bad}, outside this model's vocabulary "
                                          f"(0..{self.n_vocab - 1}).", param="logit_bias")
            grammar = request.sampling.grammar
            if grammar is not None and grammar not in grammars:
                self._grammars.check(grammar)
                grammars.add(grammar)
        slots.submit(job_id, requests, prompts, budgets)

    def cancel(self, job_id: int) -> None:
        if self._slots is not None:
            self._slots.cancel(job_id)

    def slots(self) -> list[dict[str, int | bool]]:
        return self._slots.slot_states() if self._slots is not None else []

    def _slot_engine(self) -> SlotEngine:
        if self._slots is None:
            raise InvalidRequestError(f"The model `{self.alias}` is an embedding model.", param="model")
        return self._slots

    # -- embeddings -------------------------------------------------------------------------------

    def embed(self, inputs: list[str | list[int]]) -> Embeddings:
        """One pooled, normalised vector per input, a text or the model's own token ids (taken as they
        are: no BOS added). Every input is checked first: empty ones, ids outside the vocabulary and
        inputs past the context are refused (llama.cpp would write out of bounds or cut them short)."""
        token_lists = [i if isinstance(i, list) else self.tokenize(i) for i in inputs]
        embedder = self._embedder
        if embedder is None:
            raise InvalidRequestError(f"The model `{self.alias}` is not an embedding model.", param="model")
        limit = embedder.n_batch  # one input is decoded in one batch
        for index, tokens in enumerate(token_lists):
            where = f"input[{index}]" if len(inputs) > 1 else "input"
            if not tokens:
                raise InvalidRequestError(f"`{where}` is empty: there is nothing to embed.", param="input")
            self._check_tokens(tokens, "input")
            if len(tokens) > limit:
                raise ContextLengthError(f"`{where}` has {len(tokens)} tokens; this model's context is "
                                         f"{limit}. Shorten it.", param="input")
        try:
            vectors = embedder.embed(token_lists)
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"embedding failed: {exc}") from exc
        return Embeddings(vectors, sum(len(t) for t in token_lists))
