"""The usage counters: read them, recompute them from scratch, check and repair them.

Triggers keep them (index/usage_triggers.py); everything here only reads them, except
`repair`, which replaces them with a recomputation. The recomputation is the scan the
counters exist to avoid: for checks and repairs, never for a request's figures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, delete, exists, func, insert, select, tuple_

from tfstorage.index.tables import (
    blobs,
    buckets,
    object_keys,
    usage_blobs,
    usage_counters,
    usage_owners,
    versions,
)
from tfstorage.index.transactions import IndexStore

TRASHED_KEYS = ""  # the category of the row holding a bucket's count of trashed keys


@dataclass(frozen=True, slots=True)
class Figures:
    objects: int = 0
    bytes: int = 0
    versions: int = 0
    version_bytes: int = 0
    trash_versions: int = 0
    trash_bytes: int = 0
    trashed_keys: int = 0

    def __add__(self, other: Figures) -> Figures:
        return Figures(*(a + b for a, b in zip(_values(self), _values(other), strict=True)))

    @property
    def empty(self) -> bool:
        return not any(_values(self))


@dataclass(frozen=True, slots=True)
class BlobFigures:
    blobs: int = 0
    bytes: int = 0
    referenced: int = 0
    referenced_bytes: int = 0


_FIGURES = tuple(Figures.__dataclass_fields__)
_BLOB_FIGURES = tuple(BlobFigures.__dataclass_fields__)

# (bucket id, category) -> figures; zero rows left out.
Counters = dict[tuple[int, str], Figures]
# (bucket id, owner) -> (versions, bytes); zero rows left out.
Owners = dict[tuple[int, str], tuple[int, int]]


@dataclass(frozen=True, slots=True)
class CounterCheck:
    """What the counters said against a recomputation; `differences` empty when they agree."""

    differences: list[dict[str, Any]]
    buckets: int
    repaired: bool = False

    @property
    def ok(self) -> bool:
        return not self.differences


def _values(figures: Figures) -> tuple[int, ...]:
    return tuple(getattr(figures, name) for name in _FIGURES)


def read_counters(conn: Connection, bucket_id: int | None = None) -> Counters:
    stmt = select(
        usage_counters.c.bucket_id,
        usage_counters.c.category,
        *(func.sum(usage_counters.c[name]).label(name) for name in _FIGURES),
    ).group_by(usage_counters.c.bucket_id, usage_counters.c.category)
    if bucket_id is not None:
        stmt = stmt.where(usage_counters.c.bucket_id == bucket_id)
    out: Counters = {}
    for row in conn.execute(stmt):
        figures = Figures(*(int(getattr(row, name)) for name in _FIGURES))
        if not figures.empty:
            out[(row.bucket_id, row.category)] = figures
    return out


def per_bucket(counters: Counters) -> dict[int, Figures]:
    out: dict[int, Figures] = {}
    for (bid, _category), figures in counters.items():
        out[bid] = out.get(bid, Figures()) + figures
    return out


def bucket_live(conn: Connection, bucket_id: int) -> tuple[int, int]:
    """A bucket's live objects and bytes: what its quota is checked against."""
    stmt = select(
        func.coalesce(func.sum(usage_counters.c.objects), 0),
        func.coalesce(func.sum(usage_counters.c.bytes), 0),
    ).where(usage_counters.c.bucket_id == bucket_id)
    objects, used = conn.execute(stmt).one()
    return int(objects), int(used)


def read_owners(conn: Connection, bucket_id: int | None = None) -> Owners:
    stmt = select(
        usage_owners.c.bucket_id,
        usage_owners.c.owner,
        func.sum(usage_owners.c.versions),
        func.sum(usage_owners.c.bytes),
    ).group_by(usage_owners.c.bucket_id, usage_owners.c.owner)
    if bucket_id is not None:
        stmt = stmt.where(usage_owners.c.bucket_id == bucket_id)
    return {
        (bid, owner): (int(n), int(size)) for bid, owner, n, size in conn.execute(stmt) if n or size
    }


def read_blobs(conn: Connection) -> BlobFigures:
    stmt = select(*(func.coalesce(func.sum(usage_blobs.c[n]), 0) for n in _BLOB_FIGURES))
    return BlobFigures(*(int(value) for value in conn.execute(stmt).one()))


def recompute_owners(conn: Connection) -> Owners:
    """Per bucket and writer, from the covering index (bucket_id, created_by, size)."""
    group = (versions.c.bucket_id, versions.c.created_by)
    stmt = select(*group, func.count(), func.sum(versions.c.size)).group_by(*group)
    return {(bid, owner): (int(n), int(size or 0)) for bid, owner, n, size in conn.execute(stmt)}


def recompute(conn: Connection) -> tuple[Counters, BlobFigures]:
    """The counters' figures from the versions, heads and blobs themselves (a full scan)."""
    tallies: dict[tuple[int, str], dict[str, int]] = {}

    def add(rows: Any, count: str, size: str | None) -> None:
        for bid, category, n, total in rows:
            entry = tallies.setdefault((bid, category), dict.fromkeys(_FIGURES, 0))
            entry[count] += int(n)
            if size is not None:
                entry[size] += int(total or 0)

    n, size = func.count(), func.sum(versions.c.size)
    group = (versions.c.bucket_id, versions.c.category)
    # The access paths of index/analytics.py: the covering index (bucket_id, category,
    # size) in its order, with one probe of (current_id, deleted_at) per version for
    # "live head"; the trash from the few deleted keys, each probing its versions (IN and
    # "+ 0" keep SQLite from walking every version in the covering index's order).
    add(conn.execute(select(*group, n, size).group_by(*group)), "versions", "version_bytes")
    live_head = exists().where(
        object_keys.c.current_id == versions.c.id, object_keys.c.deleted_at.is_(None)
    )
    live = select(*group, n, size).where(live_head).group_by(*group)
    add(conn.execute(live), "objects", "bytes")
    deleted = select(object_keys.c.bucket_id, object_keys.c.key).where(
        object_keys.c.deleted_at.is_not(None)
    )
    bid = (versions.c.bucket_id + 0).label("bid")
    trash = (
        select(bid, versions.c.category, n, size)
        .where(tuple_(versions.c.bucket_id, versions.c.key).in_(deleted))
        .group_by(bid, versions.c.category)
    )
    add(conn.execute(trash), "trash_versions", "trash_bytes")
    keys = (
        select(object_keys.c.bucket_id, func.count())
        .where(object_keys.c.deleted_at.is_not(None))
        .group_by(object_keys.c.bucket_id)
    )
    add(((bid, TRASHED_KEYS, n, None) for bid, n in conn.execute(keys)), "trashed_keys", None)
    counters = {where: Figures(**entry) for where, entry in tallies.items()}
    referenced = blobs.c.refcount > 0
    stored = select(
        func.count(),
        func.coalesce(func.sum(blobs.c.size), 0),
        func.coalesce(func.sum(referenced.cast(blobs.c.refcount.type)), 0),
        func.coalesce(func.sum(blobs.c.size * referenced.cast(blobs.c.refcount.type)), 0),
    )
    blob_figures = BlobFigures(*(int(v) for v in conn.execute(stored).one()))
    return {k: v for k, v in counters.items() if not v.empty}, blob_figures


def check_counters(conn: Connection) -> CounterCheck:
    """Compare the counters with a recomputation, in one snapshot (a read transaction)."""
    kept, kept_blobs = read_counters(conn), read_blobs(conn)
    truth, truth_blobs = recompute(conn)
    names = {row.id: row.name for row in conn.execute(select(buckets.c.id, buckets.c.name))}
    differences: list[dict[str, Any]] = []
    for where in sorted(set(kept) | set(truth)):
        counted, actual = kept.get(where, Figures()), truth.get(where, Figures())
        if counted != actual:
            bid, category = where
            differences.append(
                {
                    "bucket": names.get(bid, f"#{bid}"),
                    "category": category or "(trashed keys)",
                    "counted": asdict(counted),
                    "actual": asdict(actual),
                }
            )
    kept_owners, truth_owners = read_owners(conn), recompute_owners(conn)
    for bid, owner in sorted(set(kept_owners) | set(truth_owners)):
        counted_owner = kept_owners.get((bid, owner), (0, 0))
        actual_owner = truth_owners.get((bid, owner), (0, 0))
        if counted_owner != actual_owner:
            differences.append(
                {
                    "bucket": names.get(bid, f"#{bid}"),
                    "owner": owner,
                    "counted": dict(zip(("versions", "bytes"), counted_owner, strict=True)),
                    "actual": dict(zip(("versions", "bytes"), actual_owner, strict=True)),
                }
            )
    if kept_blobs != truth_blobs:
        differences.append(
            {"blobs": True, "counted": asdict(kept_blobs), "actual": asdict(truth_blobs)}
        )
    return CounterCheck(differences=differences, buckets=len(names))


def repair_counters(conn: Connection) -> CounterCheck:
    """Replace the counters with a recomputation; returns what was wrong before.

    On PostgreSQL the counter tables are locked first (EXCLUSIVE: reads go on, every
    trigger waits): writers that counted before the lock have committed by the time it
    is granted, and the scan after it (READ COMMITTED, a new snapshot per statement) sees
    them; writers after it wait and count on top of the rebuilt rows. Several instances
    may repair at once: the second waits for the first, then rebuilds again.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "LOCK TABLE usage_counters, usage_owners, usage_blobs IN EXCLUSIVE MODE"
        )
    before = check_counters(conn)
    truth, truth_blobs = recompute(conn)
    truth_owners = recompute_owners(conn)
    conn.execute(delete(usage_counters))
    conn.execute(delete(usage_owners))
    conn.execute(delete(usage_blobs))
    rows = [
        {"bucket_id": bid, "category": category, "slot": 0, **asdict(figures)}
        for (bid, category), figures in truth.items()
    ]
    if rows:
        conn.execute(insert(usage_counters), rows)
    owner_rows = [
        {"bucket_id": bid, "owner": owner, "slot": 0, "versions": n, "bytes": size}
        for (bid, owner), (n, size) in truth_owners.items()
    ]
    if owner_rows:
        conn.execute(insert(usage_owners), owner_rows)
    conn.execute(insert(usage_blobs).values(slot=0, **asdict(truth_blobs)))
    return CounterCheck(differences=before.differences, buckets=before.buckets, repaired=True)


class UsageIndex(IndexStore):
    """Counter checks and repairs, one transaction each."""

    def check(self) -> CounterCheck:
        return self._read(check_counters)

    def repair(self) -> CounterCheck:
        return self._write(repair_counters)
