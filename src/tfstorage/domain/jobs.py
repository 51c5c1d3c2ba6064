"""Batch jobs as values: what the index stores and the jobs route answers."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
MAX_ERRORS = 100  # per job: the first ones say enough, the count says the rest


@dataclass(frozen=True, slots=True)
class Job:
    job_id: str
    kind: str
    state: str
    owner: str
    token_id: str | None
    params: dict[str, Any]
    total: int | None
    done: int
    failed: int
    bytes: int
    errors: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    def as_seen_at(self, now: datetime, stale_after: timedelta) -> Job:
        """A running job whose heartbeat stopped has lost its instance: report it failed."""
        if self.state != RUNNING or now - self.updated_at <= stale_after:
            return self
        lost = {"code": "JobLost", "error": "the instance running this job stopped"}
        return replace(self, state=FAILED, errors=[*self.errors, lost][: MAX_ERRORS + 1])


@dataclass(slots=True)
class JobProgress:
    """Counters a running job keeps in memory and writes out with each heartbeat."""

    total: int | None = None
    done: int = 0
    failed: int = 0
    bytes: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def fail(self, key: str, status: int, code: str, message: str) -> None:
        self.failed += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"key": key, "status": status, "code": code, "error": message})
