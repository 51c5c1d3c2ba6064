"""A server with PACK_THRESHOLD packs small objects; deleting most of them and letting
garbage collection run (at start-up) gives the space back, and the rest reads back. Two
worker processes share the data directory (and its packs)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from tests.server.conftest import ServerFactory
from tests.server.helpers import blob_files
from tfstorage.blobs.packs import DEFAULT_DEAD_SHARE

pytestmark = pytest.mark.server

BUCKET = "artifacts"
ENV = {
    "PACK_THRESHOLD": "64KB",
    "WORKERS": "2",
    "GC_INTERVAL_SECONDS": "0",
    "ORPHAN_GRACE_SECONDS": "3600",
}


def packs_size(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in (data_dir / "blobs" / ".packs").glob("*.pack"))


@pytest.mark.timeout(120)
def test_small_objects_are_packed_and_gc_reclaims_their_space(
    make_server: ServerFactory,
) -> None:
    server = make_server(ENV)
    rng = random.Random(11)
    objects = {f"small/{n}.bin": rng.randbytes(rng.randrange(1, 20_000)) for n in range(200)}
    file_ids: dict[str, str] = {}
    with server.client() as client:
        for key, data in objects.items():
            answer = client.put(f"/api/v1/objects/{BUCKET}/{key}", content=data)
            assert answer.status_code == 200, answer.text
            file_ids[key] = answer.json()["file_id"]
        big = rng.randbytes(200_000)  # over the threshold: a file
        assert client.put(f"/api/v1/objects/{BUCKET}/big.bin", content=big).status_code == 200
        gone = list(objects)[: 3 * len(objects) // 4]
        for key in gone:
            answer = client.delete(
                f"/api/v1/delete/{BUCKET}/{key}", params={"version_id": file_ids[key]}
            )
            assert answer.status_code == 200, answer.text
    assert len(blob_files(server.data_dir)) == 1  # only the big one is a file
    before = packs_size(server.data_dir)
    assert before > sum(map(len, objects.values()))
    server.stop()

    # Garbage collection runs at start-up: the blobs of the deleted versions go, then the
    # packs they leave mostly dead are compacted.
    kept = {key: data for key, data in objects.items() if key not in gone}
    # What is left is about the kept objects (record headers: 48 bytes each). Waited for
    # as such: each worker compacts, one after the other, so a size under half of the
    # first can still be midway.
    left = sum(len(d) + 48 for d in kept.values()) * 1.05
    server = make_server(ENV, data_dir=server.data_dir)
    deadline = time.monotonic() + 20
    while packs_size(server.data_dir) > left and time.monotonic() < deadline:
        time.sleep(0.2)
    after = packs_size(server.data_dir)
    assert after < before / 2, (before, after, server.log_tail())
    # Usually all of it goes. But both workers collect garbage at start-up: one can
    # compact while the other still deletes blobs it had claimed, copying records that
    # die right after. The packs that leaves are under DEFAULT_DEAD_SHARE dead, so they
    # are not rewritten until more of them dies: the bound is that share, not zero.
    assert after <= left / (1 - DEFAULT_DEAD_SHARE), (before, after, left)
    with server.client() as client:
        for key, data in kept.items():
            answer = client.get(f"/api/v1/download/{BUCKET}/{key}")
            assert answer.status_code == 200 and answer.content == data, key
        for key in gone[:10]:
            assert client.get(f"/api/v1/download/{BUCKET}/{key}").status_code == 404
        assert client.get(f"/api/v1/download/{BUCKET}/big.bin").content == big
        verify = client.post(f"/api/v1/files/{file_ids[next(iter(kept))]}/verify")
        assert verify.status_code == 200 and verify.json()["status"] == "ok", verify.text
