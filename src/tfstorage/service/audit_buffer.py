"""Audit rows written off the request path, in one transaction per flush.

An audit row per request as its own index transaction cost a small PUT a second
COMMIT (on SQLite a second fsync) and about a tenth of its CPU. Requests append here
instead; `flush_forever` writes what has gathered every FLUSH_SECONDS, the lifespan's
end (SIGTERM) flushes the rest, and a read of the audit log flushes first, so this
instance's own entries are never missing from what it answers.

What it trades: the audit log is a record of what happened, not data a client was
promised, so a 2xx does not wait for it. A SIGKILL or power loss loses at most the
last FLUSH_SECONDS of entries of the killed process (every object write they describe
is durable and in the index); another instance sharing the index sees them within as
long. Entries get their ids when flushed, so `after_id` paging never skips one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Final

import anyio

log = logging.getLogger(__name__)

FLUSH_SECONDS: Final = 0.25
# Kept while the index is unavailable; beyond this the oldest are dropped (logged), so
# an outage cannot grow the process without bound.
MAX_PENDING: Final = 100_000

Rows = list[dict[str, Any]]


class AuditBuffer:
    def __init__(self, write: Callable[[Sequence[dict[str, Any]]], Any]) -> None:
        """`write(rows)` stores rows in one transaction (a blocking index call)."""
        self._write = write
        self._pending: Rows = []
        self._lock = anyio.Lock()  # one flush at a time keeps the rows in order

    def add(self, rows: Rows) -> None:
        self._pending.extend(rows)
        overflow = len(self._pending) - MAX_PENDING
        if overflow > 0:
            del self._pending[:overflow]
            log.error("the audit log is unavailable: %d entries dropped", overflow)

    async def flush(self) -> None:
        async with self._lock:
            rows, self._pending = self._pending, []
            if not rows:
                return
            try:
                with anyio.CancelScope(shield=True):  # a cancelled flush must not lose rows
                    await anyio.to_thread.run_sync(self._write, rows)
            except Exception:
                self._pending[:0] = rows  # before anything added meanwhile: order kept
                raise

    async def flush_forever(self) -> None:
        while True:
            await anyio.sleep(FLUSH_SECONDS)
            try:
                await self.flush()
            except Exception:
                log.exception("could not write the audit log; retrying")
