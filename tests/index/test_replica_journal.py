"""The replica catch-up journal's table, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import pytest

from tfstorage.index.object_index import ObjectIndex
from tfstorage.index.replica_journal import ReplicaJournalIndex

A, B, C = "a" * 32, "b" * 32, "c" * 32


def test_entries_come_back_in_queue_order_by_page(index: ObjectIndex) -> None:
    journal = ReplicaJournalIndex(index.engine)
    journal.remove([seq for seq, *_ in journal.entries(0, 1000)])  # a shared PG database
    journal.add([("put", A), ("put", B)])
    journal.add([("delete", A), ("put", C)])
    assert journal.pending() == 4
    entries = journal.entries(0, 3)
    assert [(op, blob) for _, op, blob in entries] == [("put", A), ("put", B), ("delete", A)]
    seqs = [seq for seq, *_ in entries]
    assert seqs == sorted(seqs)
    assert [(op, blob) for _, op, blob in journal.entries(seqs[-1], 3)] == [("put", C)]

    journal.remove(seqs[:2])
    assert journal.pending() == 2
    assert [blob for _, _, blob in journal.entries(0, 10)] == [A, C]
    with pytest.raises(ValueError):
        journal.add([("copy", A)])
    last = journal.entries(0, 10)[-1][0]
    journal.remove([seq for seq, *_ in journal.entries(0, 10)])
    assert journal.pending() == 0
    # Sequence numbers are never reused: a run paging `after` a seq misses nothing.
    journal.add([("put", B)])
    [(seq, _, _)] = journal.entries(0, 10)
    assert seq > last
    journal.remove([seq])
