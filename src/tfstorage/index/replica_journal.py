"""The replica catch-up journal's rows: blob ids queued for the replica, oldest first.

Knows nothing of blob stores: the service adapts it to `blobs.replicated.ReplicaJournal`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from sqlalchemy import Connection, delete, func, insert, select

from tfstorage.index.reads import utcnow
from tfstorage.index.tables import replica_journal
from tfstorage.index.transactions import MAX_PAGE, IndexStore

OPERATIONS = ("put", "delete")


class ReplicaJournalIndex(IndexStore):
    def add(self, entries: Iterable[tuple[str, str]]) -> None:
        """Queue `(operation, blob_id)` pairs, in the order given."""
        rows = [
            {"operation": operation, "blob_id": blob_id, "queued_at": utcnow()}
            for operation, blob_id in entries
        ]
        if any(row["operation"] not in OPERATIONS for row in rows):
            raise ValueError(f"a journal operation is one of {OPERATIONS}")
        if rows:
            self._write(lambda conn: conn.execute(insert(replica_journal), rows))

    def pending(self) -> int:
        return self._read(
            lambda conn: int(
                conn.execute(select(func.count()).select_from(replica_journal)).scalar_one()
            )
        )

    def entries(self, after: int, limit: int) -> list[tuple[int, str, str]]:
        def run(conn: Connection) -> list[tuple[int, str, str]]:
            stmt = (
                select(replica_journal.c.id, replica_journal.c.operation, replica_journal.c.blob_id)
                .where(replica_journal.c.id > after)
                .order_by(replica_journal.c.id)
                .limit(min(limit, MAX_PAGE))
            )
            return [(row.id, row.operation, row.blob_id) for row in conn.execute(stmt)]

        return self._read(run)

    def remove(self, seqs: Collection[int]) -> None:
        if seqs:
            ids = list(seqs)
            self._write(
                lambda conn: conn.execute(
                    delete(replica_journal).where(replica_journal.c.id.in_(ids))
                )
            )
