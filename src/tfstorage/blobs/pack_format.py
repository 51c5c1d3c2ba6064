"""The record format of pack files: self-describing, so the packs alone can rebuild the
location index, and a torn tail (a crash mid-append) is told from a record.

A record is a 48-byte header followed by the blob's bytes:

    magic "TFPK" | version (1) | kind (1) | 2 reserved | blob id (16, raw) |
    length (u64) | modified (f64, epoch seconds) | CRC32C of the data (u32) |
    CRC32C of the 44 bytes before it (u32)

all big-endian. A record is valid when its magic, version and both checksums hold and
its data fits in the file; a scan stops at the first record that is not.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from tfstorage.domain.blocks import crc32c

MAGIC: Final = b"TFPK"
VERSION: Final = 1
KIND_BLOB: Final = 1
_FIELDS: Final = struct.Struct(">4sBB2x16sQdI")
_CHECK: Final = struct.Struct(">I")
HEADER_SIZE: Final = _FIELDS.size + _CHECK.size
_SCAN_READ: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Record:
    """A record found in a pack: where it starts, and what its header says."""

    offset: int
    blob_id: str
    length: int
    modified: float
    data_crc: int

    @property
    def size(self) -> int:
        return HEADER_SIZE + self.length

    @property
    def end(self) -> int:
        return self.offset + self.size


def encode_record(blob_id: str, data: bytes, modified: float) -> bytes:
    fields = _FIELDS.pack(
        MAGIC, VERSION, KIND_BLOB, bytes.fromhex(blob_id), len(data), modified, crc32c(data)
    )
    return fields + _CHECK.pack(crc32c(fields)) + data


def decode_header(header: bytes, offset: int) -> Record | None:
    """The record whose header is `header`, or None if it is not one (torn, garbage)."""
    if len(header) < HEADER_SIZE:
        return None
    fields = header[: _FIELDS.size]
    (check,) = _CHECK.unpack_from(header, _FIELDS.size)
    if crc32c(fields) != check:
        return None
    magic, version, kind, raw_id, length, modified, data_crc = _FIELDS.unpack(fields)
    if magic != MAGIC or version != VERSION or kind != KIND_BLOB:
        return None
    return Record(offset, raw_id.hex(), length, modified, data_crc)


def scan(fd: int, start: int, end: int) -> Iterator[Record]:
    """The valid records of the pack open as `fd` from `start` (a record boundary) up to
    `end` (its size), stopping at the first one that is torn or damaged."""
    offset = start
    while offset + HEADER_SIZE <= end:
        record = decode_header(os.pread(fd, HEADER_SIZE, offset), offset)
        if record is None or record.end > end:
            return
        crc = 0
        position, remaining = offset + HEADER_SIZE, record.length
        while remaining:
            chunk = os.pread(fd, min(remaining, _SCAN_READ), position)
            if not chunk:
                return
            crc = crc32c(chunk, crc)
            position += len(chunk)
            remaining -= len(chunk)
        if crc != record.data_crc:
            return
        yield record
        offset = record.end
