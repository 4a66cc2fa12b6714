"""What a finished request leaves behind, its access line and its request metrics, done in batches.

RequestObserver hands over one tuple per request; the lines and samples are written FLUSH_SECONDS after
the first of a batch ended, for every request that ended meanwhile, so under load many access lines go
out in one system call, and a small request (`GET /v1/models`, a probe) ends without formatting or
scheduling anything (a callback per request or per turn of the loop was a tenth of such a request's
CPU). `/metrics` flushes before it renders, so a scrape that follows a response sees it; the lifespan
flushes at shutdown. Outside a running loop (a test calling it directly) a record is written at once.
"""

from __future__ import annotations

import asyncio

from server.telemetry.logging import AccessLog, Finished
from server.telemetry.metrics import Metrics

FLUSH_SECONDS = 0.05
UNMATCHED = "unmatched"  # the route label of requests no route matched


class RequestRecords:
    def __init__(self, access_log: AccessLog, metrics: Metrics) -> None:
        self._access_log = access_log
        self._metrics = metrics
        self._pending: list[Finished] = []

    def add(self, record: Finished) -> None:
        self._pending.append(record)
        if len(self._pending) > 1:
            return  # a flush is already scheduled
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        loop.call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        request = self._metrics.request
        for record in pending:
            # The path of a request no route matched is in its access line, not in a label: scanners
            # trying paths would grow the series without bound.
            request(record[3] if record[9] else UNMATCHED, record[4], record[5], record[6])
        self._access_log.requests(pending)
