"""Lifecycle runs: plan with the pure rules, then expire one object at a time through the
index's conditional delete, under a lease so that one instance runs at a time.

Safety with several instances: the lease (a row in the index, so it works on SQLite and
PostgreSQL alike) keeps runs apart, and every expiry re-checks in its own transaction
that the key or version is still what was planned, so even two runners that overlapped
(an expired lease, a paused process) never delete anything twice or unplanned.
Time is the index's (see index/locks.py); nothing created "in the future" is touched.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio

from tfstorage.domain.lifecycle import (
    DEFAULT_RULE_ID,
    Expiry,
    evaluate,
    parse_protected_tags,
    parse_rules,
)
from tfstorage.domain.names import validate_bucket_name
from tfstorage.errors import InvalidArgument, NoSuchBucket
from tfstorage.index.lifecycle import AuditFields, LifecycleIndex, Retention
from tfstorage.service.context import StorageContext
from tfstorage.service.tiering import ArchiveMover

log = logging.getLogger(__name__)

LEASE = "lifecycle"
LEASE_SECONDS = 300.0  # renewed while a run goes on; a crashed runner's lease lapses
_RENEW_EVERY = 100  # actions


@dataclass(frozen=True, slots=True)
class Action:
    bucket: str
    key: str
    file_id: str
    action: str  # "expire" (the whole key) or "delete_version"
    rule: str
    reason: str
    size: int

    @classmethod
    def of(cls, bucket: str, expiry: Expiry) -> Action:
        return cls(bucket, expiry.key, expiry.file_id, expiry.kind, expiry.rule_id,
                   expiry.reason, expiry.size)  # fmt: skip


@dataclass
class RunReport:
    run_id: str
    dry_run: bool
    status: Literal["done", "capped", "busy"] = "done"
    actions: list[Action] = field(default_factory=list)
    skipped: int = 0  # planned, but changed before it could be done (left alone)
    removed: int = 0  # keys and versions (archiving moves, it removes nothing)

    @property
    def bytes(self) -> int:
        return sum(a.size for a in self.actions)


class LifecycleService:
    def __init__(self, ctx: StorageContext, index: LifecycleIndex) -> None:
        self._ctx = ctx
        self._index = index
        self.instance = uuid.uuid4().hex[:16]  # this process, as the lease's holder
        self.protected_tags = parse_protected_tags(ctx.settings.lifecycle_protected_tags)
        self.archiver = ArchiveMover(ctx, index)

    # rules ---------------------------------------------------------------------------
    async def get_rules(self, bucket: str) -> list[dict[str, Any]]:
        validate_bucket_name(bucket)
        return await self._ctx.db(self._index.get_rules, bucket) or []

    async def set_rules(self, bucket: str, raw: object) -> list[dict[str, Any]]:
        validate_bucket_name(bucket)
        rules = parse_rules(raw)
        if self.archiver.store is None and any(r.archive_days is not None for r in rules):
            raise InvalidArgument("archive_days needs an archive tier: set ARCHIVE_STORAGE_TYPE")
        stored = [dict(rule.raw) for rule in rules]
        await self._ctx.db(self._index.set_rules, bucket, stored)
        return stored

    async def delete_rules(self, bucket: str) -> bool:
        validate_bucket_name(bucket)
        return await self._ctx.db(self._index.delete_rules, bucket)

    # retention locks -----------------------------------------------------------------
    async def retention(self, file_id: str) -> Retention:
        return await self._ctx.db(self._index.get_retention, file_id)

    async def set_retention(self, file_id: str, **change: Any) -> Retention:
        return await self._ctx.db(self._index.set_retention, file_id, **change)

    # runs ----------------------------------------------------------------------------
    async def run(
        self,
        *,
        bucket: str | None = None,
        dry_run: bool = False,
        actor: str = "lifecycle",
        token_id: str | None = None,
        request_id: str | None = None,
    ) -> RunReport:
        """One run over one bucket or all of them. A dry run changes nothing and needs
        no lease; a real run that finds another instance running reports "busy"."""
        if bucket is not None:
            validate_bucket_name(bucket)
            await self._ctx.db(self._ctx.index.get_bucket, bucket)  # 404 if missing
        report = RunReport(run_id=uuid.uuid4().hex, dry_run=dry_run)
        if dry_run:
            await self._walk(bucket, report, None)
            return report
        holder = f"{self.instance}:{report.run_id[:8]}"
        if not await self._ctx.db(self._index.acquire_lease, LEASE, holder, LEASE_SECONDS):
            report.status = "busy"
            return report
        audit = AuditFields(
            actor, token_id, request_id, {"run_id": report.run_id, "instance": self.instance}
        )
        try:
            await self._walk(bucket, report, (holder, audit))
        finally:
            with anyio.CancelScope(shield=True):
                await self._ctx.db(self._index.release_lease, LEASE, holder)
        if report.actions or report.skipped:
            log.info("lifecycle run %s: %d removed (%d bytes), %d skipped, %s", report.run_id,
                     len(report.actions), report.bytes, report.skipped, report.status)  # fmt: skip
        return report

    async def _walk(
        self, only: str | None, report: RunReport, act: tuple[str, AuditFields] | None
    ) -> None:
        settings = self._ctx.settings
        cap = settings.lifecycle_max_deletions_per_run
        names = [only] if only is not None else await self._ctx.db(self._index.bucket_names)
        for name in names:
            try:
                rules = parse_rules(await self._ctx.db(self._index.get_rules, name) or [])
                # Without rules only the default one applies: non-current versions only.
                now, candidates = await self._ctx.db(
                    self._index.candidates, name, noncurrent_only=not rules
                )
            except NoSuchBucket:
                if only is not None:
                    raise
                continue  # deleted since the run listed the buckets
            plan = evaluate(
                rules,
                candidates,
                now,
                retention_days=settings.retention_days,
                protected_tags=self.protected_tags,
            )
            # Planning a large bucket takes a while: is the lease still ours?
            if act is not None and plan and not await self._renew(act[0]):
                report.status = "busy"
                return
            for expiry in plan:
                removal = expiry.kind != "archive"
                if removal and report.removed >= cap:
                    report.status = "capped"
                    return
                if act is None:
                    report.actions.append(Action.of(name, expiry))
                    report.removed += removal
                    continue
                holder, audit = act
                if not removal:
                    done = await self.archiver.move(name, expiry, audit)
                else:
                    done = await self._ctx.db(
                        self._index.apply,
                        name,
                        expiry,
                        protected_tags=self.protected_tags,
                        audit=audit,
                    )
                    report.removed += done
                outcome = "done" if done else "skipped"
                self._ctx.metrics.lifecycle_actions.labels(
                    action=expiry.kind, outcome=outcome
                ).inc()
                if done:
                    report.actions.append(Action.of(name, expiry))
                else:
                    report.skipped += 1
                renew = (len(report.actions) + report.skipped) % _RENEW_EVERY == 0
                if renew and not await self._renew(holder):
                    # It lapsed and another instance runs now: one runner at a time.
                    report.status = "busy"
                    return

    async def _renew(self, holder: str) -> bool:
        return await self._ctx.db(self._index.acquire_lease, LEASE, holder, LEASE_SECONDS)

    async def run_forever(self) -> None:
        """Every LIFECYCLE_INTERVAL_SECONDS (the first run one interval after start);
        0 turns scheduled runs off. A failed run is retried at the next interval."""
        interval = self._ctx.settings.lifecycle_interval_seconds
        if interval <= 0:
            return
        while True:
            await anyio.sleep(interval)
            try:
                await self.run()
            except Exception:
                log.exception("lifecycle run failed; retrying at the next interval")


__all__ = ["DEFAULT_RULE_ID", "Action", "LifecycleService", "RunReport"]
