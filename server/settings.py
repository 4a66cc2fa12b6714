"""Server settings: command-line flags over environment variables over defaults, in one frozen Struct.

granian runs the app in a worker process, so the settings travel there as the `LLM_SERVER_*`
environment variables: `to_env` writes them, `from_env` reads them back. List values travel
comma-separated (`LLM_SERVER_API_KEYS=key1,key2`), so a list item cannot contain a comma.
"""

from __future__ import annotations

import os
from typing import Annotated

import msgspec
from msgspec import Meta

from server.response_store import default_path, state_path

ENV_PREFIX = "LLM_SERVER_"


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    config: str = "models.yaml"
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 8000
    log_level: str = "info"
    api_keys: tuple[str, ...] = ()
    api_key_file: str | None = None
    metrics_need_key: bool = False
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: Annotated[int, Meta(ge=1)] = 4 * 1024 * 1024
    shutdown_timeout: Annotated[float, Meta(gt=0)] = 30.0
    body_read_timeout: Annotated[float, Meta(gt=0)] = 30.0  # seconds a client gets to send its whole body
    # Stored responses (POST /v1/responses with `store`): an SQLite file, and how long a response is kept
    # (days; 0 keeps them until deleted).
    responses_db: str = msgspec.field(default_factory=default_path)
    responses_retention_days: Annotated[float, Meta(ge=0)] = 30.0
    # Prompt caches on disk (server/engine/worker/prompt_store.py): the folder, and the MiB per alias; 0: off.
    prompt_store: str = msgspec.field(default_factory=lambda: state_path("prompt-cache"))
    prompt_store_mib: Annotated[int, Meta(ge=0)] = 2048

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        environ = dict(os.environ if environ is None else environ)
        values: dict[str, object] = {}
        lists = _list_fields(cls)
        for field in msgspec.structs.fields(cls):
            raw = environ.get(ENV_PREFIX + field.name.upper())
            if raw is not None:
                values[field.name] = [s.strip() for s in raw.split(",") if s.strip()] if field.name in lists else raw
        # An empty list from the command line means "not given", like None.
        values.update({k: v for k, v in overrides.items() if v is not None and v != []})
        return msgspec.convert(values, cls, strict=False)

    def to_env(self) -> dict[str, str]:
        env = {}
        for key, value in msgspec.structs.asdict(self).items():
            if value is None:
                continue
            env[ENV_PREFIX + key.upper()] = ",".join(value) if isinstance(value, tuple) else str(value)
        return env


def _list_fields(cls: type) -> set[str]:
    return {f.name for f in msgspec.structs.fields(cls) if getattr(f.type, "__origin__", None) is tuple}
