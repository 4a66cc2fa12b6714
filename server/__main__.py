"""Command line.

    python -m server --config models.yaml --host 127.0.0.1 --port 8000   serve under granian
    python -m server check models.yaml                                    validate a registry
"""

from __future__ import annotations

import argparse
import os
import sys

import msgspec

from server.footprint import header_problem
from server.http.auth import KeyFileError, load_api_keys
from server.registry import SERVING_KEYS, RegistryError, format_size, load_registry
from server.settings import Settings


def check(path: str) -> int:
    try:
        registry = load_registry(path)
    except RegistryError as exc:
        print(f"{exc.source}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    # The registry only checks that each file exists; a file whose header is garbage would fail at load.
    problems = {name: header_problem(model.path) for name, model in registry.models.items()}
    unreadable = {name: problem for name, problem in problems.items() if problem is not None}
    if unreadable:
        print(f"{path}: {len(unreadable)} problem(s)", file=sys.stderr)
        for name, problem in unreadable.items():
            print(f"  models.{name}.path: {registry.models[name].path}: {problem}", file=sys.stderr)
        return 1
    pool = registry.pool
    print(f"{path}: ok, pool.max_resident={pool.max_resident} idle_ttl={pool.idle_ttl or 'none'}"
          f" memory_budget={format_size(pool.memory_budget) if pool.memory_budget else 'none'}")
    for alias, spec in registry.models.items():
        kind = "embedding" if spec.embedding else "chat"
        print(f"  {alias} ({kind}): {spec.path}")
        print(f"    n_ctx={spec.n_ctx} n_gpu_layers={spec.n_gpu_layers} n_threads={spec.n_threads or 'auto'}"
              f" n_batch={spec.n_batch} chat_format={spec.chat_format or 'from GGUF'}"
              f" pooling_type={spec.pooling_type}")
        policy = {k: getattr(spec, k) for k in sorted(SERVING_KEYS) if getattr(spec, k) not in (None, False)}
        if policy:
            print(f"    policy: {policy}")
        sampling = {k: v for k, v in _asdict(spec.sampling).items() if v is not None}
        if sampling:
            print(f"    defaults: {sampling}")
    return 0


def _asdict(struct: object) -> dict[str, object]:
    import msgspec

    return msgspec.structs.asdict(struct)  # type: ignore[arg-type]


def serve(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m server", description="OpenAI-compatible GGUF server")
    parser.add_argument("--config", help="models.yaml (env LLM_SERVER_CONFIG; default models.yaml)")
    parser.add_argument("--host", help="address to bind (env LLM_SERVER_HOST; default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (env LLM_SERVER_PORT; default 8000)")
    parser.add_argument("--log-level", help="debug, info, warning, error (env LLM_SERVER_LOG_LEVEL)")
    parser.add_argument("--api-key", action="append", dest="api_keys", metavar="KEY",
                        help="require `Authorization: Bearer KEY`; repeatable "
                             "(env LLM_SERVER_API_KEYS, comma separated)")
    parser.add_argument("--api-key-file", metavar="PATH",
                        help="more keys, one per line (env LLM_SERVER_API_KEY_FILE)")
    parser.add_argument("--metrics-need-key", action="store_const", const=True,
                        help="put /metrics behind the key too (env LLM_SERVER_METRICS_NEED_KEY)")
    parser.add_argument("--cors-origin", action="append", dest="cors_origins", metavar="ORIGIN",
                        help="allow browser requests from ORIGIN; repeatable, `*` for any "
                             "(env LLM_SERVER_CORS_ORIGINS)")
    parser.add_argument("--max-body-bytes", type=int, help="request body size limit (default 4 MiB)")
    parser.add_argument("--shutdown-timeout", type=float,
                        help="seconds running requests get to finish after SIGTERM (default 30)")
    parser.add_argument("--body-read-timeout", type=float,
                        help="seconds a client gets to send a request body; past it, 408 (default 30)")
    parser.add_argument("--responses-db", metavar="PATH",
                        help="SQLite file of stored responses (env LLM_SERVER_RESPONSES_DB; default "
                             "$XDG_STATE_HOME/llm-server/responses.sqlite3)")
    parser.add_argument("--responses-retention-days", type=float, metavar="DAYS",
                        help="how long stored responses are kept; 0 keeps them until deleted (default 30)")
    parser.add_argument("--prompt-store", metavar="DIR",
                        help="folder where workers keep their prompt caches when they leave, for the next worker "
                             "of the alias (env LLM_SERVER_PROMPT_STORE; default "
                             "$XDG_STATE_HOME/llm-server/prompt-cache)")
    parser.add_argument("--prompt-store-mib", type=int, metavar="MIB",
                        help="disk each alias may fill there; 0 turns saving off (default 2048)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(**vars(args))
        load_api_keys(settings)
    except (msgspec.ValidationError, KeyFileError) as exc:
        print(f"refusing to start: {exc}", file=sys.stderr)
        return 2
    if check_quietly(settings.config):
        return 1
    from server.serving import port_problem, run  # granian: only when serving

    problem = port_problem(settings.host, settings.port)
    if problem:
        print(f"refusing to start: {problem}", file=sys.stderr)
        return 1
    os.environ.update(settings.to_env())
    return run(settings)


def check_quietly(path: str) -> bool:
    """Refuse to start on a bad registry: print its problems, return True."""
    try:
        load_registry(path)
    except RegistryError as exc:
        print(f"refusing to start, {exc.source} has {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "check":
        parser = argparse.ArgumentParser(prog="python -m server check")
        parser.add_argument("path", nargs="?", default="models.yaml")
        return check(parser.parse_args(argv[1:]).path)
    if argv and argv[0] == "serve":
        argv = argv[1:]
    return serve(argv)


if __name__ == "__main__":
    sys.exit(main())
