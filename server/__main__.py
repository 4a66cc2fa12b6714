"""Command line.

    python -m server --config models.yaml --host 127.0.0.1 --port 8000   serve under granian
    python -m server check models.yaml                                    validate a registry
"""

from __future__ import annotations

import argparse
import os
import sys

from server.registry import RegistryError, load_registry
from server.settings import Settings


def check(path: str) -> int:
    try:
        registry = load_registry(path)
    except RegistryError as exc:
        print(f"{exc.source}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"{path}: ok, pool.max_resident={registry.pool.max_resident}")
    for alias, spec in registry.models.items():
        kind = "embedding" if spec.embedding else "chat"
        print(f"  {alias} ({kind}): {spec.path}")
        print(f"    n_ctx={spec.n_ctx} n_gpu_layers={spec.n_gpu_layers} n_threads={spec.n_threads or 'auto'}"
              f" n_batch={spec.n_batch} chat_format={spec.chat_format or 'from GGUF'}"
              f" pooling_type={spec.pooling_type}")
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
    args = parser.parse_args(argv)
    settings = Settings.from_env(config=args.config, host=args.host, port=args.port, log_level=args.log_level)
    if check_quietly(settings.config):
        return 1
    os.environ.update(settings.to_env())

    from granian import Granian
    from granian.constants import Interfaces

    Granian(
        "server.app:app_from_env",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=1,
        log_level=settings.log_level,  # type: ignore[arg-type]
    ).serve()
    return 0


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
