"""Where each packed blob is: a SQLite database next to the packs, shared by every
process on the data directory (WAL mode, so readers never wait for a writer).

It is a cache of the packs, not the truth: commits are not fsynced (synchronous=NORMAL),
and whatever an update lost is found again by scanning each pack past the offset its
row says it was indexed through. Only a compaction's switch is committed durably, since
the old pack is unlinked right after it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from tfstorage.blobs.pack_format import HEADER_SIZE, Record

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS blobs (blob_id TEXT PRIMARY KEY, pack TEXT NOT NULL,"
    " offset INTEGER NOT NULL, length INTEGER NOT NULL, modified REAL NOT NULL) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS blobs_by_pack ON blobs (pack, offset)",
    "CREATE TABLE IF NOT EXISTS packs (name TEXT PRIMARY KEY, live INTEGER NOT NULL DEFAULT 0,"
    " dead INTEGER NOT NULL DEFAULT 0, indexed_through INTEGER NOT NULL DEFAULT 0)",
)
_BUSY_MS: Final = 60_000


@dataclass(frozen=True, slots=True)
class Location:
    pack: str
    offset: int  # of the record's header
    length: int  # of the blob's bytes
    modified: float


@dataclass(frozen=True, slots=True)
class PackState:
    live: int  # bytes of records the index points at (headers included)
    dead: int  # bytes of records replaced or deleted since
    indexed_through: int  # every valid record before this offset has been indexed


@dataclass(frozen=True, slots=True)
class Move:
    blob_id: str
    old_offset: int
    new_offset: int
    size: int  # the whole record's


class PackIndex:
    """The location index. Every method is one short transaction, safe from any thread."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._pool: list[sqlite3.Connection] = []
        self._pool_lock = threading.Lock()
        with self._connection() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            with _writing(conn):
                for statement in _SCHEMA:
                    conn.execute(statement)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path, timeout=_BUSY_MS / 1000, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        with self._pool_lock:
            conn = self._pool.pop() if self._pool else None
        if conn is None:
            conn = self._connect()
        try:
            yield conn
        except BaseException:
            conn.close()  # in an unknown state: never handed out again
            raise
        with self._pool_lock:
            self._pool.append(conn)

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, []
        for conn in pool:
            conn.close()

    def locate(self, blob_id: str) -> Location | None:
        with self._connection() as conn:
            row = conn.execute(
                "SELECT pack, offset, length, modified FROM blobs WHERE blob_id = ?", (blob_id,)
            ).fetchone()
        return None if row is None else Location(*row)

    def page(self, after: str, limit: int) -> list[tuple[str, int, float]]:
        """(blob id, length, modified) of up to `limit` blobs after `after`, by id."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT blob_id, length, modified FROM blobs WHERE blob_id > ?"
                " ORDER BY blob_id LIMIT ?",
                (after, limit),
            ).fetchall()
        return [(str(a), int(b), float(c)) for a, b, c in rows]

    def packs(self) -> dict[str, PackState]:
        with self._connection() as conn:
            rows = conn.execute("SELECT name, live, dead, indexed_through FROM packs").fetchall()
        return {name: PackState(live, dead, through) for name, live, dead, through in rows}

    def live_records(self, pack: str) -> list[tuple[str, int, int]]:
        """(blob id, offset, length) of the records of `pack` the index points at."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT blob_id, offset, length FROM blobs WHERE pack = ? ORDER BY offset",
                (pack,),
            ).fetchall()
        return [(str(a), int(b), int(c)) for a, b, c in rows]

    def record(self, pack: str, records: Sequence[Record], through: int, *, found: bool) -> None:
        """Point the index at `records` of `pack`, all valid up to `through`.

        `found`: the records were found by a scan, not appended just now, so a blob the
        index already places elsewhere keeps that place unless the record is newer (a
        compaction's copy, which keeps its original time, never wins over its source).

        A handful of statements for the whole group, not three per record: this runs in
        the thread that syncs a pack, and each statement takes the GIL back from the
        event loop, which serves requests meanwhile. A writer's group of new blob ids
        (nearly every one) takes two (`_record_new`).
        """
        if not found:
            with self._connection() as conn:
                try:
                    with _writing(conn):
                        _record_new(conn, pack, records, through)
                    return
                except _Indexed:
                    # A blob id the index has already: rolled back (the connection is
                    # sound, back to the pool), then the general way.
                    pass
        with self._connection() as conn, _writing(conn):
            conn.execute("INSERT OR IGNORE INTO packs (name) VALUES (?)", (pack,))
            where = _placed(conn, [record.blob_id for record in records])
            rows: list[tuple[str, str, int, int, float]] = []
            counts: list[list[Any]] = []  # [live, dead, pack] in the order they apply
            for record in records:
                old = where.get(record.blob_id)
                if old is not None:
                    old_pack, old_offset, old_length, old_modified = old
                    if (old_pack, old_offset) == (pack, record.offset):
                        continue  # indexed already (by its writer, or an earlier scan)
                    if found and old_modified >= record.modified:
                        _add_count(counts, pack, dead=record.size)
                        continue
                    replaced = HEADER_SIZE + old_length
                    _add_count(counts, old_pack, live=-replaced, dead=replaced)
                rows.append((record.blob_id, pack, record.offset, record.length, record.modified))
                where[record.blob_id] = (pack, record.offset, record.length, record.modified)
                _add_count(counts, pack, live=record.size)
            conn.executemany(
                "INSERT OR REPLACE INTO blobs (blob_id, pack, offset, length, modified)"
                " VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            conn.executemany(_COUNT, counts)
            conn.execute(
                "UPDATE packs SET indexed_through = max(indexed_through, ?) WHERE name = ?",
                (through, pack),
            )

    def remove(self, blob_id: str, at: tuple[str, int] | None = None) -> None:
        """Forget `blob_id` (only if it is at `(pack, offset)`, when given)."""
        with self._connection() as conn, _writing(conn):
            row = conn.execute(
                "SELECT pack, offset, length FROM blobs WHERE blob_id = ?", (blob_id,)
            ).fetchone()
            if row is None or (at is not None and (row[0], row[1]) != at):
                return
            conn.execute("DELETE FROM blobs WHERE blob_id = ?", (blob_id,))
            size = HEADER_SIZE + row[2]
            _count(conn, row[0], live=-size, dead=size)

    def remove_all(self, blob_ids: Sequence[str]) -> None:
        """Forget every one of `blob_ids` the index has, in one transaction."""
        with self._connection() as conn, _writing(conn):
            where = _placed(conn, list(blob_ids))
            conn.executemany("DELETE FROM blobs WHERE blob_id = ?", [(b,) for b in where])
            counts: list[list[Any]] = []
            for pack, _, length, _ in where.values():
                size = HEADER_SIZE + length
                _add_count(counts, pack, live=-size, dead=size)
            conn.executemany(_COUNT, counts)

    def reserve(self, pack: str, through: int) -> None:
        """Record a compaction's new pack before it is written, as indexed through its
        end: if the compaction dies before its switch, no scan indexes the copies."""
        with self._connection() as conn, _writing(conn):
            conn.execute(
                "INSERT OR REPLACE INTO packs (name, indexed_through) VALUES (?, ?)",
                (pack, through),
            )

    def switch(self, old: str, new: str, moves: Sequence[Move]) -> int:
        """Point every blob still at its record in `old` at its copy in `new`, durably,
        in one transaction; returns how many blobs are left in `old` (none, normally)."""
        with self._connection() as conn:
            conn.execute("PRAGMA synchronous=FULL")  # the old pack is unlinked next
            try:
                with _writing(conn):
                    moved = 0
                    for move in moves:
                        cursor = conn.execute(
                            "UPDATE blobs SET pack = ?, offset = ?"
                            " WHERE blob_id = ? AND pack = ? AND offset = ?",
                            (new, move.new_offset, move.blob_id, old, move.old_offset),
                        )
                        if cursor.rowcount:
                            moved += move.size
                    total = sum(move.size for move in moves)
                    conn.execute(
                        "UPDATE packs SET live = ?, dead = ? WHERE name = ?",
                        (moved, total - moved, new),
                    )
                    (left,) = conn.execute(
                        "SELECT count(*) FROM blobs WHERE pack = ?", (old,)
                    ).fetchone()
            finally:
                conn.execute("PRAGMA synchronous=NORMAL")
        return int(left)

    def live_bytes(self, pack: str) -> int:
        with self._connection() as conn:
            count, total = conn.execute(
                "SELECT count(*), coalesce(sum(length), 0) FROM blobs WHERE pack = ?", (pack,)
            ).fetchone()
        return int(count) * HEADER_SIZE + int(total)

    def forget_pack(self, pack: str) -> None:
        """Drop the row of a pack that is gone (only if nothing points into it)."""
        with self._connection() as conn, _writing(conn):
            conn.execute(
                "DELETE FROM packs WHERE name = ?"
                " AND NOT EXISTS (SELECT 1 FROM blobs WHERE pack = ?)",
                (pack, pack),
            )


class _Indexed(Exception):
    """A record of the group names a blob id the index already places."""


def _record_new(
    conn: sqlite3.Connection, pack: str, records: Sequence[Record], through: int
) -> None:
    """`record` of records none of whose blob ids is indexed, in two statements (three
    for a pack's first group; the general way takes five, executemany steps once per
    row, and each waits for the GIL, which the event loop holds): the rows, then the
    pack's live bytes and indexed-through offset at once. Raises _Indexed, its insert
    left for the caller to roll back, if an id is there already."""
    before = conn.total_changes
    for start in range(0, len(records), _INSERT_BATCH):
        # One statement for many rows: executemany would take the GIL back per row.
        chunk = records[start : start + _INSERT_BATCH]
        values = [v for r in chunk for v in (r.blob_id, pack, r.offset, r.length, r.modified)]
        rows = ", ".join(["(?, ?, ?, ?, ?)"] * len(chunk))  # only placeholders in the text
        conn.execute(
            f"INSERT INTO blobs (blob_id, pack, offset, length, modified) VALUES {rows}"  # noqa: S608
            " ON CONFLICT (blob_id) DO NOTHING",
            values,
        )
    if conn.total_changes - before != len(records):
        raise _Indexed
    live = sum(record.size for record in records)
    updated = conn.execute(
        "UPDATE packs SET live = live + ?, indexed_through = max(indexed_through, ?)"
        " WHERE name = ?",
        (live, through, pack),
    )
    if not updated.rowcount:  # the pack's first group
        conn.execute(
            "INSERT INTO packs (name, live, indexed_through) VALUES (?, ?, ?)",
            (pack, live, through),
        )


# Blob ids per SELECT ... IN: well under SQLite's limit on bound parameters.
_LOOKUP_BATCH: Final = 500
_INSERT_BATCH: Final = 100  # rows per INSERT: five parameters each
_COUNT: Final = "UPDATE packs SET live = max(live + ?, 0), dead = dead + ? WHERE name = ?"


def _count(conn: sqlite3.Connection, pack: str, *, live: int = 0, dead: int = 0) -> None:
    conn.execute(_COUNT, (live, dead, pack))


def _add_count(counts: list[list[Any]], pack: str, *, live: int = 0, dead: int = 0) -> None:
    """Queue a `_count`, merged into the one before when that is exact: `live` never
    drops below 0, so two gains on one pack in a row add up (a loss may be clipped)."""
    last = counts[-1] if counts else None
    if last is not None and last[2] == pack and live >= 0 and last[0] >= 0:
        last[0] += live
        last[1] += dead
    else:
        counts.append([live, dead, pack])


def _placed(
    conn: sqlite3.Connection, blob_ids: list[str]
) -> dict[str, tuple[str, int, int, float]]:
    """Where the index places each of `blob_ids` that it has: (pack, offset, length,
    modified) by blob id."""
    found: dict[str, tuple[str, int, int, float]] = {}
    for start in range(0, len(blob_ids), _LOOKUP_BATCH):
        chunk = blob_ids[start : start + _LOOKUP_BATCH]
        marks = ", ".join("?" * len(chunk))  # only placeholders go into the text
        rows = conn.execute(
            f"SELECT blob_id, pack, offset, length, modified FROM blobs WHERE blob_id IN ({marks})",  # noqa: S608
            chunk,
        )
        for blob_id, pack, offset, length, modified in rows:
            found[blob_id] = (pack, offset, length, modified)
    return found


@contextmanager
def _writing(conn: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE: take the write lock first, so two writers never deadlock on an upgrade.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
