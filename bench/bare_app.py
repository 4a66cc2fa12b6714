"""python -m bench.bare_app --port N: the floor for `GET /v1/models`.

A Litestar app with that one route and nothing else (no middleware, guard, dependency or state), served
by granian the way `python -m server` serves ours (one worker, ASGI). What it answers has the shape and
size of our answer for two aliases, so the difference measured is the per-request work of our server.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from litestar import Litestar, get

CREATED = int(time.time())
MODELS: dict[str, Any] = {
    "object": "list",
    "data": [
        {"id": alias, "object": "model", "created": CREATED, "owned_by": "local", "n_ctx": 2048, "loaded": True,
         "kind": kind}
        for alias, kind in (("bench", "chat"), ("bench-embed", "embedding"))
    ],
}


@get("/v1/models")
async def list_models() -> dict[str, Any]:
    return MODELS


app = Litestar(route_handlers=[list_models])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()

    from granian import Granian
    from granian.constants import Interfaces

    Granian("bench.bare_app:app", address=args.host, port=args.port, interface=Interfaces.ASGI, workers=1).serve()


if __name__ == "__main__":
    main()
