"""The triggers that keep the usage counters (revision 0011) in step with every write.

Triggers rather than calls in each write path: they run in the writing statement's own
transaction, see each changed row's exact old and new values (so concurrent writers on
PostgreSQL cannot make a delta wrong), and no write path, present or future, can forget
them. Each changed row of `versions`, `object_keys` and `blobs` takes its old
contribution out of the counters and puts its new one in:

- a version: `versions`/`version_bytes`; the trash when its key's head is deleted; the
  live figures when it is the head of a live key (only an UPDATE can see that: a new
  version is not yet a head, a head's version cannot be deleted).
- a head: the live figures (its version's size, in its version's category) when not
  deleted; else one trashed key (category '') and every version of the key in the trash.
- a version, again: its writer's versions and bytes in the bucket (`usage_owners`).
- a blob row: rows and bytes, and whether anything references it.

On PostgreSQL the trash and live figures read across tables (a version's trigger reads
its key's head; a head's trigger reads the key's versions), so two transactions changing
one key must not both read before either writes: the version trigger first locks the
key's head row (FOR UPDATE: the same lock a head update takes, so a PUT racing a DELETE
waits instead of deadlocking), or, while the key has no head row, an advisory lock on
(bucket, hash of key), after which it locks the head row a concurrent writer may have
committed meanwhile. Found by tests/server/test_counters_instances.py.

On PostgreSQL each transaction adds into one of SLOTS rows per (bucket, category),
chosen by its transaction id: concurrent writers to one bucket rarely wait on one
another's counter row, and one transaction never holds two slots of a row (no deadlock
between slots). Two transactions of one slot touching several (bucket, category) rows in
opposite orders can still deadlock, as the trash purge can with a commit (it locks head
rows first): PostgreSQL breaks it and ObjectIndex retries (transactions.py). Readers sum
the slots. SQLite has one writer at a time: slot 0 only. bench/counters.py measured the
choice (bench/README.md).
"""

from __future__ import annotations

from sqlalchemy import Connection

# The trigger bodies are built from the constant names and fragments below, never from
# input: S608 (string-built SQL) does not apply to this module.
# ruff: noqa: S608

SLOTS = 16
_FIELDS = "objects, bytes, versions, version_bytes, trash_versions, trash_bytes, trashed_keys"
_BLOB_FIELDS = "blobs, bytes, referenced, referenced_bytes"
_TRIGGERS = (
    ("versions", "tfs_usage_versions"),
    ("object_keys", "tfs_usage_heads"),
    ("blobs", "tfs_usage_blobs"),
    ("buckets", "tfs_usage_buckets"),
)


def _upsert_sqlite(source: str) -> str:
    """Add the rows of `source` (bucket_id, category, then _FIELDS) into the counters."""
    sets = ", ".join(f"{f} = {f} + excluded.{f}" for f in _FIELDS.split(", "))
    # "WHERE true" in the source: SQLite's parser needs a WHERE before ON CONFLICT.
    return (
        f"INSERT INTO usage_counters (bucket_id, category, slot, {_FIELDS}) "
        f"SELECT * FROM ({source}) WHERE true "
        f"ON CONFLICT (bucket_id, category, slot) DO UPDATE SET {sets};"
    )


def _version_rows(row: str, sign: str) -> str:
    # One version's contribution (see the module docstring).
    trashed = (
        f"CAST(EXISTS (SELECT 1 FROM object_keys k WHERE k.bucket_id = {row}.bucket_id "
        f"AND k.key = {row}.key AND k.deleted_at IS NOT NULL) AS INTEGER)"
    )
    live = (
        f"CAST(EXISTS (SELECT 1 FROM object_keys k WHERE k.current_id = {row}.id "
        "AND k.deleted_at IS NULL) AS INTEGER)"
    )
    return (
        f"SELECT {row}.bucket_id, {row}.category, 0, "
        f"{sign}({live}), {sign}({live}) * {row}.size, {sign}1, {sign}{row}.size, "
        f"{sign}({trashed}), {sign}({trashed}) * {row}.size, 0"
    )


def _head_rows(row: str, sign: str) -> list[str]:
    live = (
        f"SELECT {row}.bucket_id, v.category, 0, {sign}1, {sign}v.size, 0, 0, 0, 0, 0 "
        f"FROM versions v WHERE v.id = {row}.current_id AND {row}.deleted_at IS NULL"
    )
    trash = (
        f"SELECT {row}.bucket_id, v.category, 0, 0, 0, 0, 0, {sign}count(*), "
        f"{sign}sum(v.size), 0 FROM versions v WHERE v.bucket_id = {row}.bucket_id "
        f"AND v.key = {row}.key AND {row}.deleted_at IS NOT NULL GROUP BY v.category"
    )
    keys = (
        f"SELECT {row}.bucket_id, '', 0, 0, 0, 0, 0, 0, 0, {sign}1 "
        f"WHERE {row}.deleted_at IS NOT NULL"
    )
    return [live, trash, keys]


def _owner_sqlite(row: str, sign: str) -> str:
    return (
        "INSERT INTO usage_owners (bucket_id, owner, slot, versions, bytes) "
        f"SELECT {row}.bucket_id, {row}.created_by, 0, {sign}1, {sign}{row}.size WHERE true "
        "ON CONFLICT (bucket_id, owner, slot) DO UPDATE SET "
        "versions = versions + excluded.versions, bytes = bytes + excluded.bytes;"
    )


def _owner_pg(row: str, sign: str) -> str:
    return (
        "INSERT INTO usage_owners (bucket_id, owner, slot, versions, bytes) "
        f"VALUES ({row}.bucket_id, {row}.created_by, my_slot, {sign}1, {sign}{row}.size) "
        "ON CONFLICT (bucket_id, owner, slot) DO UPDATE SET "
        "versions = usage_owners.versions + excluded.versions, "
        "bytes = usage_owners.bytes + excluded.bytes;"
    )


def _blob_sqlite(row: str, sign: str) -> str:
    sets = ", ".join(f"{f} = {f} + excluded.{f}" for f in _BLOB_FIELDS.split(", "))
    return (
        f"INSERT INTO usage_blobs (slot, {_BLOB_FIELDS}) SELECT 0, {sign}1, {sign}{row}.size, "
        f"{sign}CAST({row}.refcount > 0 AS INTEGER), "
        f"{sign}CAST({row}.refcount > 0 AS INTEGER) * {row}.size WHERE true "
        f"ON CONFLICT (slot) DO UPDATE SET {sets};"
    )


def _sqlite_ddl() -> list[str]:
    def body(*statements: str) -> str:
        return "BEGIN " + " ".join(statements) + " END"

    old_v, new_v = (
        _upsert_sqlite(_version_rows("OLD", "-")) + " " + _owner_sqlite("OLD", "-"),
        _upsert_sqlite(_version_rows("NEW", "")) + " " + _owner_sqlite("NEW", ""),
    )
    old_h = [_upsert_sqlite(s) for s in _head_rows("OLD", "-")]
    new_h = [_upsert_sqlite(s) for s in _head_rows("NEW", "")]
    return [
        f"CREATE TRIGGER tfs_usage_versions_ins AFTER INSERT ON versions {body(new_v)}",
        f"CREATE TRIGGER tfs_usage_versions_del AFTER DELETE ON versions {body(old_v)}",
        "CREATE TRIGGER tfs_usage_versions_upd AFTER UPDATE OF bucket_id, key, size, category, "
        "created_by "
        f"ON versions {body(old_v, new_v)}",
        f"CREATE TRIGGER tfs_usage_heads_ins AFTER INSERT ON object_keys {body(*new_h)}",
        f"CREATE TRIGGER tfs_usage_heads_del AFTER DELETE ON object_keys {body(*old_h)}",
        f"CREATE TRIGGER tfs_usage_heads_upd AFTER UPDATE ON object_keys {body(*old_h, *new_h)}",
        f"CREATE TRIGGER tfs_usage_blobs_ins AFTER INSERT ON blobs {body(_blob_sqlite('NEW', ''))}",
        "CREATE TRIGGER tfs_usage_blobs_del AFTER DELETE ON blobs "
        f"{body(_blob_sqlite('OLD', '-'))}",
        "CREATE TRIGGER tfs_usage_blobs_upd AFTER UPDATE OF refcount, size ON blobs "
        f"{body(_blob_sqlite('OLD', '-'), _blob_sqlite('NEW', ''))}",
        "CREATE TRIGGER tfs_usage_buckets_del AFTER DELETE ON buckets "
        "BEGIN DELETE FROM usage_counters WHERE bucket_id = OLD.id; "
        "DELETE FROM usage_owners WHERE bucket_id = OLD.id; END",
    ]


def _pg_add(source: str) -> str:
    sets = ", ".join(f"{f} = usage_counters.{f} + excluded.{f}" for f in _FIELDS.split(", "))
    # The slot replaces the source's 0: one per transaction (see the module docstring).
    return (
        f"INSERT INTO usage_counters (bucket_id, category, slot, {_FIELDS}) "
        f"SELECT s.bucket_id, s.category, my_slot, s.objects, s.bytes, s.versions, "
        f"s.version_bytes, s.trash_versions, s.trash_bytes, s.trashed_keys FROM ("
        f"{source}) AS s (bucket_id, category, z, {_FIELDS}) "
        f"ON CONFLICT (bucket_id, category, slot) DO UPDATE SET {sets};"
    )


def _pg_blob(row: str, sign: str) -> str:
    sets = ", ".join(f"{f} = usage_blobs.{f} + excluded.{f}" for f in _BLOB_FIELDS.split(", "))
    return (
        f"INSERT INTO usage_blobs (slot, {_BLOB_FIELDS}) VALUES (my_slot, {sign}1, "
        f"{sign}{row}.size, {sign}CAST({row}.refcount > 0 AS INTEGER), "
        f"{sign}CAST({row}.refcount > 0 AS INTEGER) * {row}.size) "
        f"ON CONFLICT (slot) DO UPDATE SET {sets};"
    )


_PG_LOCK_KEY = """
CREATE FUNCTION tfs_usage_lock_key(b integer, k text) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
  PERFORM 1 FROM object_keys WHERE bucket_id = b AND key = k FOR UPDATE;
  IF NOT FOUND THEN
    PERFORM pg_advisory_xact_lock(b, hashtext(k));
    PERFORM 1 FROM object_keys WHERE bucket_id = b AND key = k FOR UPDATE;
  END IF;
END
$fn$"""

_PG_LOCK_OLD = (
    "IF TG_OP <> 'INSERT' THEN PERFORM tfs_usage_lock_key(OLD.bucket_id, OLD.key); END IF;"
)
_PG_LOCK_NEW = (
    "IF TG_OP <> 'DELETE' THEN PERFORM tfs_usage_lock_key(NEW.bucket_id, NEW.key); END IF;"
)


def _pg_function(
    name: str, on_insert: list[str], on_delete: list[str], slots: int, lock_key: bool = False
) -> str:
    locks = f"{_PG_LOCK_OLD}\n  {_PG_LOCK_NEW}" if lock_key else ""
    insert_sql = "\n    ".join(on_insert)
    delete_sql = "\n    ".join(on_delete)
    return f"""
CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE my_slot integer := mod(txid_current(), {slots})::integer;
BEGIN
  {locks}
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    {delete_sql}
  END IF;
  IF TG_OP IN ('UPDATE', 'INSERT') THEN
    {insert_sql}
  END IF;
  RETURN NULL;
END
$fn$"""


def _postgres_ddl(slots: int) -> list[str]:
    versions_fn = _pg_function(
        "tfs_usage_versions",
        [_pg_add(_version_rows("NEW", "")), _owner_pg("NEW", "")],
        [_pg_add(_version_rows("OLD", "-")), _owner_pg("OLD", "-")],
        slots,
        lock_key=True,
    )
    heads_fn = _pg_function(
        "tfs_usage_heads",
        [_pg_add(s) for s in _head_rows("NEW", "")],
        [_pg_add(s) for s in _head_rows("OLD", "-")],
        slots,
    )
    blobs_fn = _pg_function("tfs_usage_blobs", [_pg_blob("NEW", "")], [_pg_blob("OLD", "-")], slots)
    return [
        _PG_LOCK_KEY,
        versions_fn,
        heads_fn,
        blobs_fn,
        "CREATE FUNCTION tfs_usage_buckets() RETURNS trigger LANGUAGE plpgsql AS $fn$ "
        "BEGIN DELETE FROM usage_counters WHERE bucket_id = OLD.id; "
        "DELETE FROM usage_owners WHERE bucket_id = OLD.id; RETURN NULL; END $fn$",
        "CREATE TRIGGER tfs_usage_versions AFTER INSERT OR DELETE OR UPDATE OF bucket_id, "
        "key, size, category, created_by ON versions "
        "FOR EACH ROW EXECUTE FUNCTION tfs_usage_versions()",
        "CREATE TRIGGER tfs_usage_heads AFTER INSERT OR DELETE OR UPDATE ON object_keys "
        "FOR EACH ROW EXECUTE FUNCTION tfs_usage_heads()",
        "CREATE TRIGGER tfs_usage_blobs AFTER INSERT OR DELETE OR UPDATE OF refcount, size "
        "ON blobs FOR EACH ROW EXECUTE FUNCTION tfs_usage_blobs()",
        "CREATE TRIGGER tfs_usage_buckets AFTER DELETE ON buckets "
        "FOR EACH ROW EXECUTE FUNCTION tfs_usage_buckets()",
    ]


def trigger_statements(dialect: str, slots: int = SLOTS) -> list[str]:
    """The DDL creating the triggers on `dialect` ("sqlite" or "postgresql"); `slots`
    other than SLOTS only for bench/counters.py."""
    return _postgres_ddl(slots) if dialect == "postgresql" else _sqlite_ddl()


def drop_statements(dialect: str) -> list[str]:
    """The DDL removing them: bulk loads (tests/index/bulk.py) drop them, load, put them
    back and rebuild the counters with one repair."""
    out: list[str] = []
    for table, name in _TRIGGERS:
        if dialect == "postgresql":
            out.append(f"DROP TRIGGER IF EXISTS {name} ON {table}")
            out.append(f"DROP FUNCTION IF EXISTS {name}()")
        else:
            out.extend(f"DROP TRIGGER IF EXISTS {name}_{op}" for op in ("ins", "del", "upd"))
    if dialect == "postgresql":
        out.append("DROP FUNCTION IF EXISTS tfs_usage_lock_key(integer, text)")
    return out


def create_triggers(conn: Connection) -> None:
    for statement in trigger_statements(conn.dialect.name):
        conn.exec_driver_sql(statement)


def drop_triggers(conn: Connection) -> None:
    for statement in drop_statements(conn.dialect.name):
        conn.exec_driver_sql(statement)
