"""Blob damage marks, block checksums and the scrub's resumable state (revisions 0006,
0008)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from sqlalchemy import Connection, Row, Select, func, select, update

from tfstorage.domain.blocks import BlockChecksums
from tfstorage.index.reads import block_checksums, chunks, upsert, utcnow
from tfstorage.index.tables import blobs, buckets, scrub_state, versions
from tfstorage.index.transactions import MAX_PAGE, IndexStore

Damage = Literal["corrupt", "truncated", "missing"]
DAMAGES: Final[tuple[Damage, ...]] = ("corrupt", "truncated", "missing")
_SCRUB: Final = "scrub"
# Versions listed per damaged blob: dedup can make one blob back thousands of them.
_VERSIONS_PER_BLOB: Final = 20


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """What the index says a blob holds: the truth its bytes are checked against."""

    blob_id: str
    size: int
    md5: str
    sha256: str
    blocks: BlockChecksums | None = None  # None: written before revision 0008


@dataclass(frozen=True, slots=True)
class VersionRef:
    file_id: str
    bucket: str
    key: str


@dataclass(frozen=True, slots=True)
class DamagedBlob:
    blob_id: str
    damage: str
    found_at: datetime | None
    size: int
    versions: list[VersionRef]


@dataclass(frozen=True, slots=True)
class ScrubState:
    cursor: str | None  # the last blob id done in the pass under way; None: no pass
    pass_started_at: datetime | None
    progress: dict[str, Any]
    last_report: dict[str, Any] | None
    lease_holder: str | None
    lease_until: datetime | None


class IntegrityIndex(IndexStore):
    """Which blobs are known damaged, and where the scrub is."""

    # damage marks --------------------------------------------------------------------
    def mark_damaged(
        self, blob_id: str, damage: Damage, *, read_since: datetime | None = None
    ) -> bool:
        """Record damage found in a blob's bytes; True if the blob was not marked so yet.

        `read_since`: when the check that found it began reading. A blob verified good
        in bytes read later (a new upload of the same content rewrote it, a later check)
        keeps its clean state: the damage seen was in bytes that are gone."""

        def run(conn: Connection) -> bool:
            stmt = (
                update(blobs)
                .where(blobs.c.blob_id == blob_id)
                .where(blobs.c.damage.is_(None) | (blobs.c.damage != damage))
                .values(damage=damage, damage_found_at=read_since or utcnow())
            )
            if read_since is not None:
                stmt = stmt.where(
                    blobs.c.verified_at.is_(None) | (blobs.c.verified_at < read_since)
                )
            return conn.execute(stmt).rowcount == 1

        return self._write(run)

    def mark_verified(self, blob_id: str, *, read_since: datetime | None = None) -> bool:
        """The blob's bytes matched its checksums: clear any mark. True if one was set.

        `read_since`: when the check began reading them. Damage found in bytes read
        after that stands (a check that took long must not clear a newer finding);
        without it, the bytes are good as of now (a rewrite that was just verified)."""

        def run(conn: Connection) -> bool:
            row = conn.execute(
                select(blobs.c.damage, blobs.c.damage_found_at).where(blobs.c.blob_id == blob_id)
            ).first()
            if row is None:
                return False
            damage, found_at = row
            if read_since is not None and found_at is not None and found_at > read_since:
                return False  # damage found in bytes read after these
            conn.execute(
                update(blobs)
                .where(blobs.c.blob_id == blob_id)
                .values(damage=None, damage_found_at=None, verified_at=read_since or utcnow())
            )
            return damage is not None

        return self._write(run)

    def damage_of(self, blob_id: str) -> str | None:
        return self._read(
            lambda conn: conn.execute(
                select(blobs.c.damage).where(blobs.c.blob_id == blob_id)
            ).scalar_one_or_none()
        )

    def damage_counts(self) -> dict[str, int]:
        """Referenced blobs marked damaged, by kind (every kind present, maybe 0)."""

        def run(conn: Connection) -> dict[str, int]:
            stmt = (
                select(blobs.c.damage, func.count())
                .where(blobs.c.damage.is_not(None), blobs.c.refcount > 0)
                .group_by(blobs.c.damage)
            )
            counts: dict[str, int] = dict.fromkeys(DAMAGES, 0)
            counts.update({str(damage): int(n) for damage, n in conn.execute(stmt)})
            return counts

        return self._read(run)

    def damaged_blobs(self, limit: int = MAX_PAGE) -> list[DamagedBlob]:
        """Marked blobs, oldest finding first, each with (some of) its versions."""

        def run(conn: Connection) -> list[DamagedBlob]:
            rows = conn.execute(
                select(blobs.c.blob_id, blobs.c.damage, blobs.c.damage_found_at, blobs.c.size)
                .where(blobs.c.damage.is_not(None), blobs.c.refcount > 0)
                .order_by(blobs.c.damage_found_at, blobs.c.blob_id)
                .limit(min(limit, MAX_PAGE))
            ).all()
            refs = _versions_of(conn, [r.blob_id for r in rows])
            return [
                DamagedBlob(r.blob_id, r.damage, r.damage_found_at, r.size, refs.get(r.blob_id, []))
                for r in rows
            ]

        return self._read(run)

    def versions_of(self, blob_ids: Sequence[str]) -> dict[str, list[VersionRef]]:
        return self._read(lambda conn: _versions_of(conn, blob_ids))

    def blobs_after(self, cursor: str, limit: int) -> list[StoredBlob]:
        """Referenced blobs in blob id order after `cursor`: the scrub's pages."""

        def run(conn: Connection) -> list[StoredBlob]:
            rows = conn.execute(
                _stored_select()
                .where(blobs.c.blob_id > cursor, blobs.c.refcount > 0)
                .order_by(blobs.c.blob_id)
                .limit(min(limit, MAX_PAGE))
            ).all()
            return [_stored(r) for r in rows]

        return self._read(run)

    def stored_blob(self, blob_id: str) -> StoredBlob | None:
        def run(conn: Connection) -> StoredBlob | None:
            r = conn.execute(_stored_select().where(blobs.c.blob_id == blob_id)).first()
            return None if r is None else _stored(r)

        return self._read(run)

    # block checksums -----------------------------------------------------------------
    def block_checksums(self, blob_id: str) -> BlockChecksums | None:
        """The blob's block checksums; None if it has none (yet) or is unknown."""

        def run(conn: Connection) -> BlockChecksums | None:
            row = conn.execute(
                select(blobs.c.block_size, blobs.c.block_crc32c).where(blobs.c.blob_id == blob_id)
            ).first()
            return None if row is None else block_checksums(row.block_size, row.block_crc32c)

        return self._read(run)

    def record_block_checksums(self, blob_id: str, sha256: str, blocks: BlockChecksums) -> bool:
        """Fill in the block checksums of a blob that has none, computed from bytes that
        hashed to `sha256`: only if that is still the blob's SHA-256 and nobody filled
        them in meanwhile (never overwrites). True if recorded."""

        def run(conn: Connection) -> bool:
            stmt = (
                update(blobs)
                .where(blobs.c.blob_id == blob_id, blobs.c.sha256 == sha256)
                .where(blobs.c.block_crc32c.is_(None))
                .values(block_size=blocks.block_size, block_crc32c=blocks.crc32c)
            )
            return conn.execute(stmt).rowcount == 1

        return self._write(run)

    # the scrub's state and lease -------------------------------------------------------
    def scrub_state(self) -> ScrubState:
        def run(conn: Connection) -> ScrubState:
            row = conn.execute(select(scrub_state).where(scrub_state.c.name == _SCRUB)).first()
            if row is None:
                return ScrubState(None, None, {}, None, None, None)
            return ScrubState(
                cursor=row.cursor,
                pass_started_at=row.pass_started_at,
                progress=dict(row.progress or {}),
                last_report=None if row.last_report is None else dict(row.last_report),
                lease_holder=row.lease_holder,
                lease_until=row.lease_until,
            )

        return self._read(run)

    def acquire_scrub_lease(self, holder: str, until: datetime) -> bool:
        """Take (or renew) the one scrubber's lease unless another holder's is current."""

        def run(conn: Connection) -> bool:
            now = utcnow()
            # Two first-ever scrubbers may race to create the row: neither fails.
            conn.execute(
                upsert(conn, scrub_state)
                .values(name=_SCRUB)
                .on_conflict_do_nothing(index_elements=[scrub_state.c.name])
            )
            stmt = (
                update(scrub_state)
                .where(scrub_state.c.name == _SCRUB)
                .where(
                    scrub_state.c.lease_holder.is_(None)
                    | (scrub_state.c.lease_holder == holder)
                    | (scrub_state.c.lease_until < now)
                )
                .values(lease_holder=holder, lease_until=until)
            )
            return conn.execute(stmt).rowcount == 1

        return self._write(run)

    def release_scrub_lease(self, holder: str) -> None:
        self._write(
            lambda conn: conn.execute(
                update(scrub_state)
                .where(scrub_state.c.name == _SCRUB, scrub_state.c.lease_holder == holder)
                .values(lease_holder=None, lease_until=None)
            )
        )

    def save_scrub_progress(
        self,
        holder: str,
        *,
        cursor: str | None,
        pass_started_at: datetime | None,
        progress: dict[str, Any],
        lease_until: datetime,
        last_report: dict[str, Any] | None = None,
    ) -> bool:
        """Store where the pass is (and renew the lease); False if the lease was lost,
        in which case nothing is written: another instance scrubs now."""
        values: dict[str, Any] = {
            "cursor": cursor,
            "pass_started_at": pass_started_at,
            "progress": progress,
            "lease_until": lease_until,
        }
        if last_report is not None:
            values["last_report"] = last_report

        def run(conn: Connection) -> bool:
            stmt = (
                update(scrub_state)
                .where(scrub_state.c.name == _SCRUB, scrub_state.c.lease_holder == holder)
                .values(**values)
            )
            return conn.execute(stmt).rowcount == 1

        return self._write(run)


def _stored_select() -> Select[Any]:
    return select(
        blobs.c.blob_id,
        blobs.c.size,
        blobs.c.md5,
        blobs.c.sha256,
        blobs.c.block_size,
        blobs.c.block_crc32c,
    )


def _stored(r: Row[Any]) -> StoredBlob:
    blocks = block_checksums(r.block_size, r.block_crc32c)
    return StoredBlob(r.blob_id, r.size, r.md5, r.sha256, blocks)


def _versions_of(conn: Connection, blob_ids: Sequence[str]) -> dict[str, list[VersionRef]]:
    found: dict[str, list[VersionRef]] = {}
    for batch in chunks(blob_ids):
        stmt = (
            select(versions.c.blob_id, versions.c.file_id, buckets.c.name, versions.c.key)
            .select_from(versions.join(buckets, buckets.c.id == versions.c.bucket_id))
            .where(versions.c.blob_id.in_(batch))
            .order_by(versions.c.blob_id, versions.c.id.desc())
        )
        for blob_id, file_id, bucket, key in conn.execute(stmt):
            refs = found.setdefault(blob_id, [])
            if len(refs) < _VERSIONS_PER_BLOB:
                refs.append(VersionRef(file_id, bucket, key))
    return found
