"""Racing conditional writers against a real server process, on SQLite and PostgreSQL.

Each round, 8 clients send `If-None-Match: *` to one new key at once (half as a raw PUT,
half as a form, whose precondition is judged only at commit, after its bytes are
stored): exactly one gets 200, the others 412 PreconditionFailed. Then rounds of 8
`If-Match: <current ETag>` writers: exactly one replaces it. Afterwards the blob files
on disk are exactly the winners', and a garbage collection past the orphan grace finds
nothing to remove.
"""

from __future__ import annotations

import random
import threading
import time

import httpx
import pytest

from tests.server.conftest import ADMIN_TOKEN, ServerFactory
from tests.server.helpers import md5, multipart_body, temp_files
from tests.stored_blobs import stored_blob_ids
from tfstorage.api.app import create_app
from tfstorage.config import Settings
from tfstorage.service.storage import Storage

pytestmark = [pytest.mark.server, pytest.mark.anyio]

BUCKET = "artifacts"
WRITERS = 8
ROUNDS = 3
ENV = {"GC_INTERVAL_SECONDS": "0", "ORPHAN_GRACE_SECONDS": "3600"}
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


def _write(
    client: httpx.Client, key: str, payload: bytes, headers: dict[str, str], *, form: bool
) -> httpx.Response:
    if not form:
        return client.put(f"/api/v1/objects/{BUCKET}/{key}", content=payload, headers=headers)
    content_type, body = multipart_body({"bucket": BUCKET, "key": key}, "f.bin", iter([payload]))
    return client.post(
        "/api/v1/upload", content=body, headers={**headers, "Content-Type": content_type}
    )


def _race(
    base_url: str, key: str, payloads: list[bytes], headers: dict[str, str]
) -> list[httpx.Response]:
    barrier = threading.Barrier(len(payloads))
    answers: list[httpx.Response | BaseException | None] = [None] * len(payloads)

    def run(i: int) -> None:
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        with httpx.Client(base_url=base_url, headers=auth, timeout=30) as client:
            client.get("/health")  # connected before the barrier: the requests overlap
            barrier.wait(timeout=20)
            try:
                answers[i] = _write(client, key, payloads[i], headers, form=i % 2 == 1)
            except BaseException as exc:
                answers[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(payloads))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    out = []
    for i, answer in enumerate(answers):
        assert isinstance(answer, httpx.Response), f"writer {i}: {answer!r}"
        out.append(answer)
    return out


def _one_winner(answers: list[httpx.Response], payloads: list[bytes]) -> bytes:
    winners = [i for i, r in enumerate(answers) if r.status_code == 200]
    assert len(winners) == 1, [(r.status_code, r.text[:200]) for r in answers]
    for r in answers:
        if r.status_code != 200:
            assert r.status_code == 412, r.text
            body = r.json()
            assert body["code"] == "PreconditionFailed" and body["request_id"], body
    return payloads[winners[0]]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_racing_conditional_writers_one_winner_no_orphans(
    backend: str, make_server: ServerFactory, request: pytest.FixtureRequest
) -> None:
    env = dict(ENV)
    if backend == "postgres":
        env["DATABASE_URL"] = request.getfixturevalue("postgres_database")
    server = make_server(env)
    rng = random.Random(7)
    kept: list[bytes] = []  # every version that should remain, hence every blob

    def payloads() -> list[bytes]:
        return [rng.randbytes(rng.randrange(64 * 1024, 256 * 1024)) for _ in range(WRITERS)]

    for round_ in range(ROUNDS):
        key = f"create/{round_}.bin"
        batch = payloads()
        winner = _one_winner(_race(server.base_url, key, batch, {"If-None-Match": "*"}), batch)
        kept.append(winner)
        with server.client() as client:
            assert client.get(f"/api/v1/download/{BUCKET}/{key}").content == winner

    key, current = "cas.bin", kept[0]
    with server.client() as client:
        assert client.put(f"/api/v1/objects/{BUCKET}/{key}", content=current).status_code == 200
    for _ in range(ROUNDS):
        batch = payloads()
        answers = _race(server.base_url, key, batch, {"If-Match": f'"{md5(current)}"'})
        current = _one_winner(answers, batch)
        kept.append(current)
        with server.client() as client:
            assert client.get(f"/api/v1/download/{BUCKET}/{key}").content == current
    server.stop()

    # The first payload was stored twice (create/0 and cas.bin's start): one blob.
    assert len(stored_blob_ids(server.data_dir / "blobs")) == len(kept), server.log_tail()
    assert temp_files(server.data_dir) == []
    settings = Settings(
        data_dir=server.data_dir,
        database_url=env.get("DATABASE_URL", ""),
        admin_token=ADMIN_TOKEN,
        gc_interval_seconds=0,
        orphan_grace_seconds=3600,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        storage: Storage = app.state.storage
        report = await storage.gc.run_once(now=time.time() + 7200)
    assert report.orphan_blobs == 0 and report.unreferenced_blobs == 0, report
    assert len(stored_blob_ids(server.data_dir / "blobs")) == len(kept)
