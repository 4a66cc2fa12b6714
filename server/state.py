"""The app's state, typed: what create_app builds and the lifespan completes, read by routes, guards and the
request observer through `server_state(app)` instead of by name from Litestar's untyped `State` bag."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from server.errors import NotReadyError
from server.shutdown import ShutdownNotice

if TYPE_CHECKING:
    from server.pool import ModelPool
    from server.response_store import ResponseStore
    from server.services.models import ModelsAnswer
    from server.settings import Settings
    from server.telemetry.metrics import Metrics
    from server.telemetry.request_records import RequestRecords

KEY = "server"  # the one entry of Litestar's State


class ServerState:
    """A plain class, not a dataclass: Litestar would try to validate a dataclass dependency field by field."""

    def __init__(self, *, settings: Settings, started_at: int, metrics: Metrics, api_keys: frozenset[str],
                 request_records: RequestRecords, models_answer: ModelsAnswer,
                 response_store: ResponseStore) -> None:
        self.settings = settings
        self.started_at = started_at
        self.metrics = metrics
        self.api_keys = api_keys
        self.request_records = request_records
        self.models_answer = models_answer
        self.response_store = response_store
        self.ready = False
        self.shutting_down = False
        self.stopping = ShutdownNotice()  # set with shutting_down: endless streams end (server/shutdown.py)
        self._pool: ModelPool[Any] | None = None

    @property
    def pool(self) -> ModelPool[Any]:
        """The pool, once the lifespan has started it (before that, a 503)."""
        if self._pool is None:
            raise NotReadyError("The server is starting.")
        return self._pool

    @pool.setter
    def pool(self, pool: ModelPool[Any]) -> None:
        self._pool = pool


def server_state(app: Any) -> ServerState:
    return cast(ServerState, app.state[KEY])
