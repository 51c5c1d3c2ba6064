"""Usage figures as the index reports them: plain values, summed and compared here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from tfstorage.domain.categories import Category


@dataclass(frozen=True, slots=True)
class Tally:
    count: int = 0
    bytes: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.count + other.count, self.bytes + other.bytes)

    def __sub__(self, other: Tally) -> Tally:
        return Tally(self.count - other.count, self.bytes - other.bytes)


@dataclass(frozen=True, slots=True)
class BucketReport:
    live: Tally  # keys not deleted: their latest versions
    versions: Tally  # every version row (latest, older, and those of deleted keys)
    trash: Tally  # every version of the deleted keys (restorable until purged)
    trashed_keys: int
    quota_bytes: int | None = None
    quota_objects: int | None = None

    @property
    def noncurrent(self) -> Tally:
        """Older versions of keys that are not deleted."""
        return self.versions - self.live - self.trash


@dataclass(frozen=True, slots=True)
class LargeObject:
    bucket: str
    key: str
    file_id: str
    size: int
    content_type: str
    created_by: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class UsageReport:
    buckets: dict[str, BucketReport]
    categories: dict[Category, Tally]  # live objects
    owners: dict[str, Tally]  # every version, by the principal that wrote it
    largest: list[LargeObject]  # live objects, largest first
    stored: Tally  # distinct referenced blobs (index-wide, whatever the filter)
    logical_bytes: int  # every version's size (index-wide): what storing without dedup costs

    def total(self, part: str) -> Tally:
        """The sum over buckets of `live`, `versions`, `trash` or `noncurrent`."""
        out = Tally()
        for report in self.buckets.values():
            out = out + getattr(report, part)
        return out

    @property
    def dedup_saved_bytes(self) -> int:
        return max(0, self.logical_bytes - self.stored.bytes)


@dataclass(frozen=True, slots=True)
class DailyUsage:
    """One day of the history: the index-wide figures, or one bucket's."""

    day: date
    objects: int
    bytes: int
    versions: int
    version_bytes: int
    noncurrent_bytes: int | None = None  # index-wide rows only
    trash_bytes: int | None = None
    stored_bytes: int | None = None
    blobs: int | None = None
    buckets: dict[str, DailyUsage] = field(default_factory=dict)


def percent(used: int, limit: int | None) -> float | None:
    if limit is None or limit <= 0:
        return None
    return round(100 * used / limit, 1)
