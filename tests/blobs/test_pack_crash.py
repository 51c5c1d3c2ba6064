"""Must-show 4: a pack store killed with SIGKILL loses nothing it acknowledged and shows
nothing partial, whether it was writing or compacting; and once compacted, its packs hold
exactly its live records.

Real processes (tests/blobs/pack_worker.py), real kills. Set TFS_PACK_CRASH_SEED to
replay a run; the seeds are printed.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.blobs.contract import chunked, read_all
from tests.blobs.pack_worker import PACK_SIZE, content
from tests.blobs.test_packs import pack_files, packed_bytes, packs_size, worker
from tfstorage.blobs import BlobNotFound
from tfstorage.blobs.packs import PackedBlobStore

ROUNDS = 4


def base_seed() -> int:
    seed = int(os.environ.get("TFS_PACK_CRASH_SEED", random.randrange(1 << 30)))
    print(f"TFS_PACK_CRASH_SEED={seed}")
    return seed


def kill_while_writing(root: Path, seed: int) -> tuple[list[str], str]:
    """A writer killed at a random moment after some acknowledgements: (acknowledged
    ids, what happened)."""
    rng = random.Random(seed)
    writer = worker("write", str(root), str(seed), "100000")
    assert writer.stdout is not None
    acked: list[str] = []
    enough = threading.Event()
    wanted = rng.randrange(1, 300)

    def collect() -> None:
        assert writer.stdout is not None
        for line in writer.stdout:
            if line.startswith("ACK "):
                acked.append(line.split()[1])
                if len(acked) >= wanted:
                    enough.set()
        enough.set()

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    assert enough.wait(30), "the writer acknowledged nothing"
    time.sleep(rng.random() * 0.05)
    writer.send_signal(signal.SIGKILL)
    writer.wait(10)
    reader.join(10)
    assert writer.returncode == -signal.SIGKILL
    return acked, f"killed after {len(acked)} acks (waited for {wanted})"


@pytest.mark.anyio
@pytest.mark.timeout(120)
async def test_writer_killed_at_random_loses_no_acknowledged_blob(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    PackedBlobStore(root, pack_size=PACK_SIZE)
    seed = base_seed()
    acknowledged: list[str] = []
    for round_ in range(ROUNDS):
        acked, what = kill_while_writing(root, seed + round_)
        print(f"round {round_} (seed {seed + round_}): {what}")
        acknowledged += acked
        store = PackedBlobStore(root, pack_size=PACK_SIZE)  # recovers the index
        for blob_id in acknowledged:
            assert await read_all(store, blob_id) == content(blob_id), (round_, blob_id)
        # Whatever is readable (acknowledged or not) is whole: no partial blob.
        listed = [info async for info in store.list_blobs()]
        assert {info.blob_id for info in listed} >= set(acknowledged)
        for info in listed:
            data = content(info.blob_id)
            assert info.size == len(data)
            assert await read_all(store, info.blob_id) == data, (round_, info.blob_id)
        await store.close()
    # The kills left torn tails; a compaction leaves exactly the live records.
    store = PackedBlobStore(root, pack_size=PACK_SIZE)
    await store.compact(0.0)
    assert packs_size(root) == await packed_bytes(store)
    for blob_id in acknowledged:
        assert await read_all(store, blob_id) == content(blob_id)
    await store.close()


CRASH_POINTS = ("pack-compact-copied", "pack-compact-synced", "pack-compact-switched")


@pytest.mark.anyio
@pytest.mark.timeout(120)
async def test_compaction_killed_anywhere_loses_nothing_and_leaks_nothing(
    tmp_path: Path,
) -> None:
    root = tmp_path / "blobs"
    seed = base_seed()
    rng = random.Random(seed)
    store = PackedBlobStore(root, pack_size=PACK_SIZE)
    blobs = {rng.randbytes(16).hex(): rng.randbytes(rng.randrange(0, 8000)) for _ in range(1500)}
    for blob_id, data in blobs.items():
        await store.put(blob_id, chunked(data))
    deleted = set(rng.sample(sorted(blobs), 1000))
    for blob_id in deleted:
        await store.delete(blob_id)
    live = {k: v for k, v in blobs.items() if k not in deleted}
    await store.close()
    assert len(pack_files(root)) > 10
    kills = [*CRASH_POINTS, *CRASH_POINTS, "random", "random", "random"]
    for round_, point in enumerate(kills):
        if point == "random":
            compactor = worker("compact", str(root))
            time.sleep(rng.random() * 0.6)  # start-up is part of it: before, during, after
            compactor.send_signal(signal.SIGKILL)
        else:
            compactor = worker("compact", str(root), env={"TFSTORAGE_TEST_CRASH_POINT": point})
        out, _ = compactor.communicate(timeout=60)
        print(f"round {round_} ({point}): exit {compactor.returncode}, {out.strip()!r}")
        if point != "random":
            assert compactor.returncode == -signal.SIGKILL, out
        store = PackedBlobStore(root, pack_size=PACK_SIZE)
        for blob_id, data in live.items():
            assert await read_all(store, blob_id) == data, (round_, point, blob_id)
        assert {info.blob_id async for info in store.list_blobs()} == set(live)
        for blob_id in list(deleted)[:50]:
            with pytest.raises(BlobNotFound):
                await store.stat(blob_id)
        await store.close()
    store = PackedBlobStore(root, pack_size=PACK_SIZE)
    await store.sweep_incomplete(time.time(), ())  # what garbage collection runs
    await store.compact(0.0)
    assert packs_size(root) == await packed_bytes(store)
    assert await packed_bytes(store) == sum(48 + len(v) for v in live.values())
    assert sorted(os.listdir(root / ".packs")) == sorted(
        [p.name for p in pack_files(root)]
        + ["compact.lock", "index.sqlite"]
        + [n for n in os.listdir(root / ".packs") if n.startswith("index.sqlite-")]
    )
    for blob_id, data in live.items():
        assert await read_all(store, blob_id) == data
    await store.close()
