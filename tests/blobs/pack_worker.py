"""A process working on a pack store, for the tests that kill it or run several at once.

    python -m tests.blobs.pack_worker write ROOT SEED COUNT   puts COUNT blobs, 8 at a
        time, printing "ACK <id>" as each put returns
    python -m tests.blobs.pack_worker read ROOT ID...          prints "OK <id>" for each
        blob that reads back as `content(id)`
    python -m tests.blobs.pack_worker compact ROOT             compacts (dead share 0)

A blob's bytes are a function of its id (`content`), so whoever reads a blob can tell
whether it is whole.
"""

from __future__ import annotations

import hashlib
import random
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio

from tfstorage.blobs.packs import PackedBlobStore

KiB = 1024
PACK_SIZE = 256 * KiB  # small packs: the kills land around rollovers too


def content(blob_id: str) -> bytes:
    seed = int(hashlib.sha256(blob_id.encode()).hexdigest()[:16], 16)
    rng = random.Random(seed)
    return rng.randbytes(rng.choice([0, 1, 100, 4 * KiB, 20 * KiB, 64 * KiB]))


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


def open_store(root: str) -> PackedBlobStore:
    return PackedBlobStore(Path(root), pack_size=PACK_SIZE)


async def write(root: str, seed: int, count: int) -> None:
    store = open_store(root)
    rng = random.Random(seed)
    ids = iter([rng.randbytes(16).hex() for _ in range(count)])

    async def put_next() -> None:
        for blob_id in ids:  # shared: each writer takes the next id
            await store.put(blob_id, one_chunk(content(blob_id)))
            print(f"ACK {blob_id}", flush=True)

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(put_next)
    await store.close()
    print("DONE", flush=True)


async def read(root: str, ids: list[str]) -> None:
    store = open_store(root)
    for blob_id in ids:
        stream = await store.open(blob_id)
        if b"".join([chunk async for chunk in stream]) == content(blob_id):
            print(f"OK {blob_id}", flush=True)
    await store.close()


async def compact(root: str) -> None:
    store = open_store(root)
    report = await store.compact(0.0)
    await store.close()
    print(f"COMPACTED {report.packs_removed} {report.packs_rewritten}", flush=True)


def main(argv: list[str]) -> None:
    command, root, *rest = argv
    if command == "write":
        anyio.run(write, root, int(rest[0]), int(rest[1]))
    elif command == "read":
        anyio.run(read, root, rest)
    elif command == "compact":
        anyio.run(compact, root)
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
