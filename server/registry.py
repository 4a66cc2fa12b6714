"""models.yaml -> frozen Structs. The only module that reads that file.

Every problem is reported with the YAML path of the bad key (``models.smollm2.n_ctx``), and all of them
at once, so a user fixes a file in one pass instead of one error per restart.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml
from msgspec import Meta

from server.footprint import estimate_bytes

PositiveInt = Annotated[int, Meta(ge=1)]
NonNegInt = Annotated[int, Meta(ge=0)]
Temperature = Annotated[float, Meta(ge=0.0, le=2.0)]
Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]
PoolingName = Literal["unspecified", "none", "mean", "cls", "last", "rank"]


class SamplingDefaults(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Applied when a request leaves the parameter out."""

    temperature: Temperature | None = None
    top_p: Probability | None = None
    top_k: NonNegInt | None = None
    min_p: Probability | None = None
    repeat_penalty: Annotated[float, Meta(ge=0.0)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    max_tokens: PositiveInt | None = None


class SpeculativeSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Speculative decoding (docs/speculative.md): drafted tokens verified in the batched decode. Never
    changes the output; drafts are sent only while they are measured to pay."""

    ngram: bool = True  # prompt lookup: drafts from each sequence's own prompt and output
    n_max: Annotated[int, Meta(ge=0, le=256)] = 32  # most drafted tokens per sequence in one step; 0: off
    ngram_size: Annotated[int, Meta(ge=1, le=16)] = 2  # tokens looked up in the history
    # Another alias whose model (same vocabulary, checked at load) drafts where the history has nothing:
    # loaded in this alias's worker, beside its model. Resolved into `draft_path` when the file is read.
    draft_model: str | None = None
    draft_path: str | None = None
    draft_p_min: Probability = 0.6  # the draft model stops drafting where it is less sure than this


class ModelSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One alias. Engine keys use llama-cpp-python's own `Llama(...)` argument names."""

    path: str
    n_ctx: NonNegInt = 2048
    n_gpu_layers: int = 0
    n_threads: PositiveInt | None = None
    n_threads_batch: PositiveInt | None = None
    n_batch: PositiveInt = 512
    n_ubatch: PositiveInt = 512
    chat_format: str | None = None
    # A Jinja chat template used instead of the GGUF's own (Hugging Face's template language). With
    # `tools` in it, tools and tool history are rendered through it and calls parsed in its family's format.
    chat_template: str | None = None
    # Extra variables every render of the template gets (e.g. `enable_thinking: false`); a request's own
    # `chat_template_kwargs` override them key by key.
    chat_template_kwargs: dict[str, Any] = {}
    # `auto`: a template that writes `<think>` has its thinking returned as `reasoning_content`;
    # `deepseek`: always split `<think>...</think>` off; `none`: never (thinking stays in the content).
    reasoning_format: Literal["auto", "deepseek", "none"] = "auto"
    embedding: bool = False
    pooling_type: PoolingName | int = "unspecified"
    flash_attn: bool | None = None  # None: llama.cpp decides per backend (what llama-server does)
    # How hard llama.cpp's compute threads spin waiting for work between computations: 0 sleeps, 100
    # spins hardest (llama-server's --poll, default 50). Read only by a llama.cpp built without OpenMP;
    # the Linux wheel uses OpenMP, whose waiting OMP_WAIT_POLICY sets (README, "Threads").
    poll: Annotated[int, Meta(ge=0, le=100)] = 0
    # False: the weights are read into the worker's own memory, which the worker asks for in huge pages
    # (server/engine/client.py, `worker_env`); mapped from the file they stay in 4 KiB pages. Measured on
    # 2 cores with SmolLM2-135M: 8% less time a token in-process, +4-6% tokens/s a stream through the
    # server (docs/benchmarks.md, "Weights in huge pages"). llama-server maps the file by default.
    use_mmap: bool = False
    use_mlock: bool = False
    offload_kqv: bool = True
    main_gpu: NonNegInt = 0
    tensor_split: list[float] | None = None
    rope_freq_base: float = 0.0
    rope_freq_scale: float = 0.0
    seed: int | None = None
    verbose: bool = False
    n_parallel: Annotated[int, Meta(ge=1, le=64)] = 1  # slots: sequences decoded together in one batch
    # Host memory for slot caches kept after their slot moved on (llama-server's --cache-ram, 8 GiB by
    # default there): a conversation whose history left every slot gets it back without evaluating it.
    prompt_cache_mib: NonNegInt = 256
    sampling: SamplingDefaults = SamplingDefaults()
    speculative: SpeculativeSpec = SpeculativeSpec()
    # Serving policy (not `Llama(...)` arguments; see SERVING_KEYS).
    pinned: bool = False                          # loaded at start, never evicted
    max_queue: NonNegInt | None = None            # requests allowed to wait for this alias; past it: 429
    max_tokens_limit: PositiveInt | None = None   # ceiling on a request's max_tokens; above it: 400
    # The worker process's resident memory past which it is killed (bytes; yaml also takes "2GiB").
    # None: twice the footprint estimate plus 1 GiB (see `memory_limit`).
    memory_limit: Annotated[int, Meta(ge=1)] | None = None
    max_sequences_per_request: PositiveInt = 64   # prompts x n in one request; above it: 400

    def resolved_path(self, base_dir: Path) -> Path:
        path = Path(self.path).expanduser()
        return path if path.is_absolute() else (base_dir / path).resolve()


# ModelSpec keys that configure serving, not llama.cpp: the engine must not pass them to `Llama(...)`.
SERVING_KEYS = frozenset({"pinned", "max_queue", "max_tokens_limit", "memory_limit",
                          "max_sequences_per_request"})


class PoolSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    max_resident: PositiveInt = 2
    idle_ttl: Annotated[float, Meta(gt=0)] | None = None      # seconds unused before a model is unloaded
    memory_budget: Annotated[int, Meta(ge=1)] | None = None   # bytes; yaml also takes "2GiB", "512MB"


class Registry(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The whole file, paths already resolved to absolute ones."""

    models: dict[str, ModelSpec]
    pool: PoolSpec = PoolSpec()

    def get(self, alias: str) -> ModelSpec | None:
        return self.models.get(alias)


class RegistryError(Exception):
    """A models.yaml that cannot be used. `problems` holds one line per bad key."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def load_registry(path: str | Path) -> Registry:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryError(str(path), [f"cannot read file: {exc.strerror or exc}"]) from exc
    return parse_registry(text, base_dir=path.resolve().parent, source=str(path))


def parse_registry(text: str, *, base_dir: Path, source: str = "models.yaml") -> Registry:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RegistryError(source, [f"not valid YAML: {exc}"]) from exc
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise RegistryError(source, ["top level: expected a mapping with a `models:` key"])
    for key in raw:
        if key not in ("models", "pool"):
            problems.append(f"{key}: unknown top-level key (expected `models` or `pool`)")
    pool = _check_section(_with_sizes(raw.get("pool", {}), problems, where="pool", key="memory_budget"),
                          PoolSpec, "pool", problems)
    models: dict[str, ModelSpec] = {}
    raw_models = raw.get("models")
    if not isinstance(raw_models, dict) or not raw_models:
        problems.append("models: expected a non-empty mapping of alias -> model spec")
        raw_models = {}
    for alias, spec in raw_models.items():
        spec = _with_sizes(spec, problems, where=f"models.{alias}", key="memory_limit")
        if not isinstance(alias, str) or not alias:
            problems.append(f"models.{alias!r}: an alias must be a non-empty string")
            continue
        checked = _check_section(spec, ModelSpec, f"models.{alias}", problems)
        if checked is None:
            continue
        resolved = checked.resolved_path(base_dir)
        if not resolved.is_file():
            problems.append(f"models.{alias}.path: file not found: {resolved}")
            continue
        models[alias] = msgspec.structs.replace(checked, path=str(resolved))
    models = _with_drafts(models, problems)
    if pool is not None:
        _check_policy(models, pool, problems)
    if problems:
        raise RegistryError(source, problems)
    assert pool is not None
    return Registry(models=models, pool=pool)


def _with_drafts(models: dict[str, ModelSpec], problems: list[str]) -> dict[str, ModelSpec]:
    """Each `speculative.draft_model` alias checked (a chat model, not the alias itself) and its file's
    path written into `draft_path`, which is what the worker reads."""
    out = dict(models)
    for alias, spec in models.items():
        draft = spec.speculative.draft_model
        if draft is None:
            continue
        where = f"models.{alias}.speculative.draft_model"
        target = models.get(draft)
        if target is None or draft == alias or target.embedding:
            problems.append(f"{where}: `{draft}` is not another chat alias of this file")
            continue
        out[alias] = msgspec.structs.replace(spec, speculative=msgspec.structs.replace(
            spec.speculative, draft_path=target.path))
    return out


def kv_bytes(spec: ModelSpec) -> int:
    """File plus KV cache: n_ctx cells for every slot (one cache shared by the slots), and the same for a
    draft model in the worker. The prompt cache in host memory fills only as slots move on and is left
    out, as compute buffers are."""
    cells = spec.n_ctx * spec.n_parallel
    draft = spec.speculative.draft_path
    return estimate_bytes(spec.path, cells) + (estimate_bytes(draft, cells) if draft else 0)


# Beyond the estimate a worker holds compute buffers, the interpreter and llama.cpp's own allocations:
# measured for the default alias, a worker used about 1.2x its estimate. The default limit is there to
# stop a runaway request, not to bill memory tightly.
DEFAULT_LIMIT_FACTOR = 2
DEFAULT_LIMIT_HEADROOM = 1024**3


def memory_limit(spec: ModelSpec) -> int:
    """The resident memory past which the alias's worker is killed: the alias's own, or the default."""
    if spec.memory_limit is not None:
        return spec.memory_limit
    try:
        estimate = kv_bytes(spec)
    except (OSError, ValueError, OverflowError):
        estimate = 0
    return estimate * DEFAULT_LIMIT_FACTOR + DEFAULT_LIMIT_HEADROOM


def _check_policy(models: dict[str, ModelSpec], pool: PoolSpec, problems: list[str]) -> None:
    """Rules that span keys: each is reported at the key to change."""
    pinned = [alias for alias, spec in models.items() if spec.pinned]
    # Pinned models hold their slots for good; unpinned ones need at least one slot left to take turns in.
    needed = len(pinned) + (1 if len(pinned) < len(models) else 0)
    if needed > pool.max_resident:
        problems.append(f"pool.max_resident: is {pool.max_resident}, but the pinned aliases ({', '.join(pinned)}) "
                        f"and the others need {needed} slot(s)")
    for alias, spec in models.items():
        if spec.embedding and spec.n_parallel > 1:  # one llama.cpp context, used by one request at a time
            problems.append(f"models.{alias}.n_parallel: embedding models serve one request at a time; "
                            f"remove n_parallel or set it to 1")
        if spec.n_parallel > spec.n_batch:  # llama.cpp aborts the process on this, so refuse it here
            problems.append(f"models.{alias}.n_batch: is {spec.n_batch}, must be at least n_parallel "
                            f"({spec.n_parallel}): every slot may need an output in the same batch")
        limit, default = spec.max_tokens_limit, spec.sampling.max_tokens
        if limit is not None and default is not None and default > limit:
            problems.append(f"models.{alias}.sampling.max_tokens: {default} is above max_tokens_limit ({limit})")
        if pool.memory_budget is not None:
            need = kv_bytes(spec)
            if need > pool.memory_budget:
                problems.append(f"models.{alias}: needs about {format_size(need)} (file plus KV cache for "
                                f"n_ctx), more than pool.memory_budget ({format_size(pool.memory_budget)})")
    if pool.memory_budget is not None and pinned:
        fixed = sum(kv_bytes(models[a]) for a in pinned)
        largest = max((kv_bytes(s) for s in models.values() if not s.pinned), default=0)
        if fixed + largest > pool.memory_budget:
            problems.append(f"pool.memory_budget: the pinned aliases need about {format_size(fixed)}, leaving too "
                            f"little of {format_size(pool.memory_budget)} for the largest other model "
                            f"({format_size(largest)})")


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: str) -> int:
    """`"2GiB"` -> 2147483648, `"512MB"` -> 512000000; a plain number is bytes."""
    match = _SIZE.match(value)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(f"expected bytes or a size like `2GiB` or `512MB`, got `{value}`")
    return int(float(match.group(1)) * _UNITS[unit])


def format_size(n: int) -> str:
    return f"{n / 1024**3:.2f} GiB" if n >= 1024**3 else f"{n / 1024**2:.1f} MiB"


def _with_sizes(raw: Any, problems: list[str], *, where: str, key: str) -> Any:
    """A size written as text (`2GiB`) at `key`, as bytes."""
    if isinstance(raw, dict) and isinstance(raw.get(key), str):
        raw = dict(raw)
        try:
            raw[key] = parse_size(raw[key])
        except ValueError as exc:
            problems.append(f"{where}.{key}: {exc}")
            del raw[key]
    return raw


def _check_section(raw: Any, struct: type, where: str, problems: list[str]) -> Any:
    """Convert one mapping, collecting a problem for *every* bad key, not just the first."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a mapping, got {type(raw).__name__}")
        return None
    fields = {f.encode_name: f for f in msgspec.structs.fields(struct)}
    before = len(problems)
    for key, value in raw.items():
        field = fields.get(key)
        if field is None:
            problems.append(f"{where}.{key}: unknown key")
            continue
        try:
            msgspec.convert(value, field.type)
        except msgspec.ValidationError as exc:
            problems.append(f"{where}.{key}: {_describe(exc, where + '.' + str(key))}")
    for name, field in fields.items():
        if field.required and name not in raw:
            problems.append(f"{where}.{name}: required key is missing")
    if len(problems) > before:
        return None
    try:
        return msgspec.convert(raw, struct)
    except msgspec.ValidationError as exc:  # pragma: no cover - per-key checks catch these first
        problems.append(f"{where}: {exc}")
        return None


def _describe(exc: msgspec.ValidationError, where: str) -> str:
    """msgspec says `... - at `$.top_k``; rewrite the tail into our YAML path."""
    message = str(exc)
    head, sep, tail = message.rpartition(" - at `$")
    if not sep:
        return message
    return f"{head} (at {where}{tail.rstrip('`')})"
