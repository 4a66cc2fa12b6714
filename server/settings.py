"""Server settings: command-line flags over environment variables over defaults, in one frozen Struct.

granian runs the app in a worker process, so the settings travel there as the `LLM_SERVER_*`
environment variables: `to_env` writes them, `from_env` reads them back.
"""

from __future__ import annotations

import os
from typing import Annotated

import msgspec
from msgspec import Meta

ENV_PREFIX = "LLM_SERVER_"


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    config: str = "models.yaml"
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 8000
    log_level: str = "info"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        environ = dict(os.environ if environ is None else environ)
        values: dict[str, object] = {}
        for field in msgspec.structs.fields(cls):
            raw = environ.get(ENV_PREFIX + field.name.upper())
            if raw is not None:
                values[field.name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return msgspec.convert(values, cls, strict=False)

    def to_env(self) -> dict[str, str]:
        return {ENV_PREFIX + k.upper(): str(v) for k, v in msgspec.structs.asdict(self).items()}
