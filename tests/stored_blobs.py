"""What a local blob store holds, read from disk past the service: blob files under
`ab/cd/<id>` and packed blobs (the live rows of `.packs/index.sqlite`), so that a test
counting stored blobs checks the default layout (PACK_THRESHOLD on) as well as files."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from pathlib import Path

from tfstorage.blobs.pack_files import PACK_SUFFIX, TEMP_PREFIX
from tfstorage.blobs.pack_format import HEADER_SIZE
from tfstorage.blobs.packs import INDEX_FILE, PACKS_DIR

_BLOB_NAME = re.compile(r"[0-9a-f]{32,64}")


def blob_file_paths(blob_dir: Path) -> list[Path]:
    """The committed blob files (`ab/cd/<id>`, not `.tmp` nor `.packs`)."""
    return [
        p
        for p in blob_dir.glob("[0-9a-f][0-9a-f]/[0-9a-f][0-9a-f]/*")
        if p.is_file() and _BLOB_NAME.fullmatch(p.name)
    ]


def packed_blob_ids(blob_dir: Path) -> list[str]:
    """The blobs the pack index points at (a record the index forgot is not a blob)."""
    index = blob_dir / PACKS_DIR / INDEX_FILE
    if not index.exists():
        return []
    conn = sqlite3.connect(index, timeout=60)
    try:
        return [row[0] for row in conn.execute("SELECT blob_id FROM blobs ORDER BY blob_id")]
    finally:
        conn.close()


def pack_files(blob_dir: Path) -> list[Path]:
    """The pack files (`*.pack`), not the unfinished `tmp-*` ones."""
    packs = (blob_dir / PACKS_DIR).glob(f"*{PACK_SUFFIX}")
    return sorted(p for p in packs if not p.name.startswith(TEMP_PREFIX))


def stored_blob_ids(blob_dir: Path) -> list[str]:
    """Every blob stored, packed or a file."""
    return sorted(packed_blob_ids(blob_dir) + [p.name for p in blob_file_paths(blob_dir)])


def stored_blob_digests(blob_dir: Path) -> dict[str, str]:
    """The sha256 of every stored blob's bytes, by blob id: packed ones read from their
    pack where the index says they are, files whole."""
    digests: dict[str, str] = {}
    index = blob_dir / PACKS_DIR / INDEX_FILE
    if index.exists():
        conn = sqlite3.connect(index, timeout=60)
        try:
            rows = conn.execute("SELECT blob_id, pack, offset, length FROM blobs").fetchall()
        finally:
            conn.close()
        for blob_id, pack, offset, length in rows:
            with (blob_dir / PACKS_DIR / pack).open("rb") as f:
                f.seek(offset + HEADER_SIZE)
                data = f.read(length)
            assert len(data) == length, f"packed blob {blob_id} runs past its pack's end"
            digests[blob_id] = hashlib.sha256(data).hexdigest()
    for path in blob_file_paths(blob_dir):
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while block := f.read(1024 * 1024):
                digest.update(block)
        digests[path.name] = digest.hexdigest()
    return digests


def temp_pack_files(blob_dir: Path) -> list[str]:
    """A compaction's unfinished packs (`.packs/tmp-*`)."""
    packs = blob_dir / PACKS_DIR
    return sorted(p.name for p in packs.glob(f"{TEMP_PREFIX}*")) if packs.is_dir() else []
