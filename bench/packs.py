"""Small durable puts per second: files (LocalBlobStore) against packs (PackedBlobStore).

    .venv/bin/python bench/packs.py [--dir DIR] [--size 4096] [--puts 2000]
        [--concurrency 1,16,64] [--rounds 3] [--threshold 65536]

In a scratch directory on the disk under test (`--dir`, default: the system's temporary
directory), `--concurrency` tasks put `--puts` blobs of `--size` random bytes in all, each
put durable when it returns (files: fsync + rename + directory fsyncs; packs: a share of
one group fdatasync). Prints puts per second (median over `--rounds`, interleaved) and
the fsync-class calls per put of the last round.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path

import anyio

from tfstorage.blobs import BlobStore, new_blob_id
from tfstorage.blobs.local import LocalBlobStore
from tfstorage.blobs.packs import PackedBlobStore


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


class _SyncCounter:
    def __init__(self) -> None:
        self.calls = 0
        self._real = (os.fsync, os.fdatasync)

    def __enter__(self) -> _SyncCounter:
        real_fsync, real_fdatasync = self._real

        def fsync(fd: int) -> None:
            self.calls += 1
            real_fsync(fd)

        def fdatasync(fd: int) -> None:
            self.calls += 1
            real_fdatasync(fd)

        os.fsync, os.fdatasync = fsync, fdatasync  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        os.fsync, os.fdatasync = self._real  # type: ignore[assignment]


async def _run(store: BlobStore, puts: int, size: int, concurrency: int) -> float:
    payloads = [os.urandom(size) for _ in range(min(puts, 256))]
    remaining = iter(range(puts))

    async def worker() -> None:
        for n in remaining:
            await store.put(new_blob_id(), _one(payloads[n % len(payloads)]))

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return puts / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--puts", type=int, default=2000)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threshold", type=int, default=64 * 1024, help="PACK_THRESHOLD")
    args = parser.parse_args()
    stores: dict[str, Callable[[Path], BlobStore]] = {
        "files": LocalBlobStore,
        "packs": partial(PackedBlobStore, threshold=args.threshold),
    }
    print(f"{args.puts} puts of {args.size} B per round, {args.rounds} rounds, in {args.dir}")
    for concurrency in (int(c) for c in args.concurrency.split(",")):
        rates: dict[str, list[float]] = {name: [] for name in stores}
        syncs: dict[str, float] = {}
        for _ in range(args.rounds):
            for name, make in stores.items():
                scratch = Path(tempfile.mkdtemp(prefix="bench-packs-", dir=args.dir))
                try:
                    store = make(scratch / "blobs")
                    with _SyncCounter() as counter:
                        rates[name].append(
                            anyio.run(_run, store, args.puts, args.size, concurrency)
                        )
                    syncs[name] = counter.calls / args.puts
                    anyio.run(store.close)
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
        line = [f"concurrency {concurrency:3d}:"]
        for name in stores:
            line.append(
                f"{name} {statistics.median(rates[name]):8.0f} puts/s ({syncs[name]:.2f} syncs/put)"
            )
        ratio = statistics.median(rates["packs"]) / statistics.median(rates["files"])
        print("  ".join(line) + f"  packs/files x{ratio:.1f}")


if __name__ == "__main__":
    main()
