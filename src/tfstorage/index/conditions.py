"""Write preconditions (If-Match / If-None-Match), judged on a key's head row inside the
transaction that moves it: a check made before that transaction could be overtaken.

PostgreSQL: an existing head row is locked (FOR UPDATE) before the new version takes
its sequence number, so conditional writers of one key queue on the row and each judges
the head its predecessor committed. A key without a head row has nothing to lock: the
head is then created with a plain INSERT (no ON CONFLICT), so of two racing creators the
second waits on the first's uncommitted row, fails on the primary key once it commits,
and judges that committed head instead. SQLite admits one writer at a time: the same
code never meets a conflict there.

Lock order (see writes.py): the head row comes after the blob row.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from tfstorage.domain.conditions import WriteCondition
from tfstorage.errors import PreconditionFailed
from tfstorage.index.tables import object_keys, versions


@dataclass(frozen=True, slots=True)
class Head:
    current_id: int
    etag: str | None  # the latest version's, None while the key is in the trash
    parts_etag: str | None = None  # its S3 multipart ETag, if assembled from parts


def lock_head(conn: Connection, bid: int, key: str) -> Head | None:
    row = conn.execute(
        select(object_keys.c.current_id, object_keys.c.deleted_at)
        .where(object_keys.c.bucket_id == bid, object_keys.c.key == key)
        .with_for_update()
    ).first()
    if row is None:
        return None
    if row.deleted_at is not None:
        return Head(int(row.current_id), None)
    etags = conn.execute(
        select(versions.c.etag, versions.c.parts_etag).where(versions.c.id == row.current_id)
    ).one()
    return Head(int(row.current_id), etags.etag, etags.parts_etag)


def check_head(conn: Connection, bid: int, key: str, condition: WriteCondition) -> Head | None:
    """Lock the key's head and raise PreconditionFailed unless `condition` holds on it."""
    head = lock_head(conn, bid, key)
    if head is None:
        condition.check(None)
    else:
        condition.check(head.etag, head.parts_etag)
    return head


def place_head(
    conn: Connection,
    bid: int,
    key: str,
    seq: int,
    condition: WriteCondition,
    head: Head | None,
) -> None:
    """Make version `seq` the key's head, `head` being what `check_head` locked and
    accepted before `seq` was allocated."""
    if head is None:
        try:
            with conn.begin_nested():  # PostgreSQL: the conflict must not end the transaction
                conn.execute(
                    insert(object_keys).values(
                        bucket_id=bid, key=key, current_id=seq, deleted_at=None
                    )
                )
        except IntegrityError:
            # A concurrent writer created the head and committed: judge its version.
            head = check_head(conn, bid, key, condition)
            if head is None:
                raise  # not the primary key after all
            if head.current_id > seq:
                # It holds a newer seq, so ours could never become the latest.
                raise PreconditionFailed("the object was written concurrently") from None
        else:
            return
    # The row is locked since check_head, and every seq allocated since is newer than
    # the one it holds: ours is the newest version of the key.
    conn.execute(
        update(object_keys)
        .where(object_keys.c.bucket_id == bid, object_keys.c.key == key)
        .values(current_id=seq, deleted_at=None)
    )
