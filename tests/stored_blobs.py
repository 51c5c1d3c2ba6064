"""What a local blob store holds, read from disk past the service: blob files under
`ab/cd/<id>` and packed blobs (the live rows of `.packs/index.sqlite`), so that a test
counting stored blobs checks the default layout (PACK_THRESHOLD on) as well as files."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from tfstorage.blobs.pack_files import PACK_SUFFIX, TEMP_PREFIX
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
