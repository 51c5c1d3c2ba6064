"""The scrub: re-read every blob the index knows, at a bounded rate, and prove it.

A pass walks the index's blobs in blob id order. After each blob the cursor and the
counts so far are saved in the index, so a pass interrupted by a restart (or by an
instance that died: its lease runs out) is continued where it stopped, by whichever
instance takes the lease next. One instance scrubs at a time. A finished pass also
lists orphan blobs (in the store, unknown to the index, older than the orphan grace
period); it reports them and leaves their removal to garbage collection.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import anyio

from tfstorage.blobs.base import BlobInfo
from tfstorage.index.reads import utcnow
from tfstorage.service.context import StorageContext
from tfstorage.service.integrity import IntegrityChecker, Verdict

log = logging.getLogger(__name__)

LEASE_SECONDS: Final = 120.0
_RENEW_AFTER: Final = 30.0  # renew the lease this often while one big blob is read
_PAGE: Final = 100
_LISTED: Final = 100  # blob ids kept per kind of finding in a report
_CHECK_EVERY: Final = 60.0  # how often the schedule looks whether a pass is due
_KINDS: Final = ("corrupt", "truncated", "missing")
_BLOCKS_LISTED: Final = 10  # damaged blocks named per blob in a report


class RateLimiter:
    """At most `rate` bytes per second on average, with bursts of one second's worth.

    `clock` and `sleep` are injectable so tests count the bytes and the waits instead of
    timing them.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._allowance = float(rate)
        self._last = clock()
        self.consumed = 0

    async def consume(self, n: int) -> None:
        self.consumed += n
        if self.rate <= 0:
            return
        now = self._clock()
        self._allowance = min(self.rate, self._allowance + (now - self._last) * self.rate)
        self._last = now
        self._allowance -= n
        if self._allowance < 0:
            # Sleeping repays the debt: the next call credits the time slept.
            await self._sleep(-self._allowance / self.rate)


def _fresh_progress() -> dict[str, Any]:
    return {
        "verified": 0,
        "bytes": 0,
        "ok": 0,
        **dict.fromkeys(_KINDS, 0),
        "repaired": 0,
        "replica_damaged": 0,
        "replica_repaired": 0,
        "blocks_recorded": 0,  # blobs from before block checksums that got them
        "found": {kind: [] for kind in _KINDS},
        # Per damaged blob listed in "found": its damaged blocks, as {"block", "start",
        # "end"} (byte offsets, end exclusive), and how many there are in all.
        "damaged_blocks": {},
    }


def _count(progress: dict[str, Any], verdict: Verdict) -> None:
    status = verdict.primary.status
    progress["verified"] += 1
    progress[status] += 1
    if status != "ok":
        found = progress["found"][status]
        if len(found) < _LISTED:
            found.append(verdict.blob.blob_id)
            if verdict.damaged_block_count:
                progress["damaged_blocks"][verdict.blob.blob_id] = {
                    "count": verdict.damaged_block_count,
                    "blocks": [b.as_dict() for b in verdict.damaged_blocks[:_BLOCKS_LISTED]],
                }
    progress["repaired"] += verdict.repaired
    if verdict.replica not in (None, "ok", "unavailable"):
        progress["replica_damaged"] += 1
    progress["replica_repaired"] += verdict.replica_repaired
    progress["blocks_recorded"] += verdict.blocks_recorded


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


class Scrubber:
    def __init__(
        self,
        ctx: StorageContext,
        checker: IntegrityChecker,
        *,
        limiter_factory: Callable[[float], RateLimiter] = RateLimiter,
    ) -> None:
        self._ctx = ctx
        self._checker = checker
        self.limiter_factory = limiter_factory
        # Names this process in the lease row (several processes may share a host).
        self.holder = f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"
        self._running = anyio.Lock()
        self.last_limiter: RateLimiter | None = None  # the latest pass's, for tests
        self._background: asyncio.Task[None] | None = None
        self._background_scope = anyio.CancelScope()

    @property
    def running(self) -> bool:
        return self._running.locked()

    def start_pass(self, *, limit: int | None = None) -> bool:
        """Run a pass in the background (an admin's "scrub now"); False if this process
        is scrubbing already. Another instance holding the lease makes it a no-op."""
        if self._running.locked() or (self._background and not self._background.done()):
            return False
        self._background_scope = anyio.CancelScope()
        self._background = asyncio.get_running_loop().create_task(self._run_logged(limit))
        return True

    async def _run_logged(self, limit: int | None) -> None:
        # An anyio scope, not Task.cancel(): the lease's shielded release must hold.
        with self._background_scope:
            try:
                await self.run_pass(limit=limit)
            except Exception:
                log.exception("scrub failed; going on from its cursor at the next run")

    async def close(self) -> None:
        if self._background is not None and not self._background.done():
            self._background_scope.cancel()
            # Shielded: shutdown may run in a cancelled scope, and the pass must get to
            # release its lease rather than leave it to expire.
            with anyio.CancelScope(shield=True):
                await asyncio.gather(self._background, return_exceptions=True)

    async def run_pass(self, *, limit: int | None = None) -> dict[str, Any] | None:
        """Go on with the pass under way (or start one): until it ends, or `limit`
        blobs are verified. Returns the report so far, or None if another instance
        (or another task here) is scrubbing."""
        if self._running.locked():
            return None
        async with self._running:
            integrity = self._ctx.integrity
            if not await self._ctx.db(integrity.acquire_scrub_lease, self.holder, _lease_end()):
                return None
            try:
                return await self._walk(limit)
            finally:
                with anyio.CancelScope(shield=True):
                    try:
                        await self._ctx.db(integrity.release_scrub_lease, self.holder)
                    except Exception:  # it runs out by itself
                        log.warning("scrub: could not release the lease")

    async def _walk(self, limit: int | None) -> dict[str, Any] | None:
        integrity = self._ctx.integrity
        state = await self._ctx.db(integrity.scrub_state)
        if state.cursor is None:
            cursor, started, progress = "", utcnow(), _fresh_progress()
            # Recorded at once: the status shows a pass under way from its first blob on.
            if not await self._ctx.db(
                integrity.save_scrub_progress,
                self.holder,
                cursor=cursor,
                pass_started_at=started,
                progress=progress,
                lease_until=_lease_end(),
            ):
                return None
        else:
            cursor, started = state.cursor, state.pass_started_at or utcnow()
            progress = {**_fresh_progress(), **state.progress}
        limiter = self.limiter_factory(float(self._ctx.settings.scrub_bytes_per_second))
        self.last_limiter = limiter
        renewed = time.monotonic()

        async def throttle(n: int) -> None:
            nonlocal renewed
            progress["bytes"] += n
            await limiter.consume(n)
            if time.monotonic() - renewed > _RENEW_AFTER:
                renewed = time.monotonic()
                await self._ctx.db(integrity.acquire_scrub_lease, self.holder, _lease_end())

        done = 0
        while limit is None or done < limit:
            page = await self._ctx.db(integrity.blobs_after, cursor, _PAGE)
            if not page:
                return await self._finish(started, progress)
            for blob in page:
                if limit is not None and done >= limit:
                    break
                verdict = await self._checker.verify_blob(blob, throttle=throttle)
                _count(progress, verdict)
                cursor = blob.blob_id
                done += 1
                saved = await self._ctx.db(
                    integrity.save_scrub_progress,
                    self.holder,
                    cursor=cursor,
                    pass_started_at=started,
                    progress=progress,
                    lease_until=_lease_end(),
                )
                renewed = time.monotonic()
                if not saved:
                    log.warning("scrub: lease lost to another instance; stopping here")
                    return None
        return self._report(started, None, progress, cursor)

    async def _finish(self, started: datetime, progress: dict[str, Any]) -> dict[str, Any]:
        orphans = await self._orphans()
        report = self._report(started, utcnow(), progress, None)
        report["orphans"] = len(orphans)
        report["orphan_blob_ids"] = orphans[:_LISTED]
        await self._ctx.db(
            self._ctx.integrity.save_scrub_progress,
            self.holder,
            cursor=None,
            pass_started_at=None,
            progress={},
            lease_until=_lease_end(),
            last_report=report,
        )
        self._ctx.metrics.scrub_passes.inc()
        await self._checker.refresh_gauges()
        damaged = sum(progress[kind] for kind in _KINDS)
        (log.warning if damaged or orphans else log.info)(
            "scrub: pass finished: %d blobs, %d bytes, %d damaged, %d repaired, %d orphans",
            progress["verified"], progress["bytes"], damaged, progress["repaired"], len(orphans),
        )  # fmt: skip
        return report

    async def _orphans(self) -> list[str]:
        """Blobs in the (primary) store the index does not know, past the grace period."""
        older_than = time.time() - self._ctx.settings.orphan_grace_seconds
        found: list[str] = []
        batch: list[BlobInfo] = []

        async def settle() -> None:
            ids = [b.blob_id for b in batch]
            known = await self._ctx.db(self._ctx.index.known_blob_ids, ids)
            found.extend(i for i in ids if i not in known)
            batch.clear()

        async for info in self._ctx.blobs.list_blobs():
            if info.modified <= older_than:
                batch.append(info)
            if len(batch) >= 1000:
                await settle()
        if batch:
            await settle()
        return sorted(found)

    @staticmethod
    def _report(
        started: datetime, finished: datetime | None, progress: dict[str, Any], cursor: str | None
    ) -> dict[str, Any]:
        return {
            "started_at": _iso(started),
            "finished_at": _iso(finished),
            "finished": finished is not None,
            "cursor": cursor,
            **progress,
        }

    async def status(self) -> dict[str, Any]:
        """The pass under way (if any), the last finished pass, and what is marked now."""
        integrity = self._ctx.integrity
        state = await self._ctx.db(integrity.scrub_state)
        damaged = await self._ctx.db(integrity.damaged_blobs)
        counts = await self._checker.damage_counts()
        lease_current = state.lease_until is not None and state.lease_until > utcnow()
        return {
            "running": state.lease_holder is not None and lease_current,
            "in_progress": None
            if state.cursor is None
            else self._report(
                state.pass_started_at or utcnow(), None, state.progress, state.cursor
            ),
            "last_report": state.last_report,
            "damaged": {
                "counts": counts,
                "blobs": [
                    {
                        "blob_id": d.blob_id,
                        "damage": d.damage,
                        "found_at": _iso(d.found_at),
                        "size": d.size,
                        "versions": [
                            {"file_id": v.file_id, "bucket": v.bucket, "key": v.key}
                            for v in d.versions
                        ],
                    }
                    for d in damaged
                ],
            },
            "interval_seconds": self._ctx.settings.scrub_interval_seconds,
            "bytes_per_second": self._ctx.settings.scrub_bytes_per_second,
        }

    async def due(self) -> bool:
        """Is a pass under way (to go on with) or the last one older than the interval?"""
        interval = self._ctx.settings.scrub_interval_seconds
        if interval <= 0:
            return False
        state = await self._ctx.db(self._ctx.integrity.scrub_state)
        if state.cursor is not None:
            return True
        finished = (state.last_report or {}).get("finished_at")
        if not finished:
            return True
        return datetime.fromisoformat(finished) + timedelta(seconds=interval) <= utcnow()

    async def run_forever(self) -> None:
        """The schedule: every so often, run a pass if one is due (SCRUB_INTERVAL_SECONDS;
        0 disables). A failed pass is retried at the next look; its cursor is kept."""
        interval = self._ctx.settings.scrub_interval_seconds
        if interval <= 0:
            return
        while True:
            await anyio.sleep(min(interval, _CHECK_EVERY))
            try:
                if await self.due():
                    await self.run_pass()
            except Exception:
                log.exception("scrub failed; going on from its cursor at the next look")


def _lease_end() -> datetime:
    return utcnow() + timedelta(seconds=LEASE_SECONDS)
