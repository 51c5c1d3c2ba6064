from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from fastapi import FastAPI

from tests.s3.fixtures import SeaweedFS, multipart_uploads, object_keys, s3_settings_overrides
from tests.stored_blobs import packed_blob_ids
from tfstorage.api.app import create_app
from tfstorage.blobs.pack_files import TEMP_PREFIX
from tfstorage.blobs.packs import PACKS_DIR
from tfstorage.config import Settings

ADMIN_TOKEN = "tfs_test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path / "data",
        "max_file_size": 4 * 1024 * 1024,
        "gc_interval_seconds": 0,
        "orphan_grace_seconds": 3600,
        "admin_token": ADMIN_TOKEN,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(params=["local", "s3"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """The whole API suite runs on local disk and on a real S3 engine (SeaweedFS)."""
    if request.param == "local":
        return make_settings(tmp_path)
    seaweed = request.getfixturevalue("seaweedfs")
    prefix = request.getfixturevalue("s3_prefix")
    return make_settings(tmp_path, **s3_settings_overrides(seaweed, seaweed.bucket, prefix=prefix))


def stored_files(settings: Settings) -> list[str]:
    """Every blob and every unfinished write in the blob store, whatever its kind:
    files (temp files included) and packed blobs on disk, objects and multipart uploads
    on S3. A pack file is not listed, only the blobs its index points at (a record whose
    write failed stays in its pack as dead bytes, as a deleted one does)."""
    if settings.storage_type == "local":
        root = settings.blob_dir
        files = [
            str(p)
            for p in root.rglob("*")
            if p.is_file() and p.relative_to(root).parts[0] != PACKS_DIR
        ]
        unfinished = [str(p) for p in (root / PACKS_DIR).glob(f"{TEMP_PREFIX}*")]
        packed = [f"packed:{blob_id}" for blob_id in packed_blob_ids(root)]
        return sorted(files + unfinished + packed)
    engine = SeaweedFS(
        endpoint_url=settings.s3_endpoint_url,
        access_key=settings.minio_access_key,
        secret_key=settings.minio_secret_key,
        region=settings.s3_region,
        bucket=settings.s3_bucket,
        s3_port=0,
        log_path=Path(),
    )
    prefix = settings.s3_prefix
    return sorted(object_keys(engine, prefix) + multipart_uploads(engine, prefix))


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        # The maintenance run at start-up (GC, compaction, repairs) must not run into
        # the test: it swept a test's orphan before the test's own GC, and compacted a
        # pack while a test listed the stored files (on a loaded machine).
        await application.state.storage.started_up.wait()
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client holding the admin token."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=ADMIN
    ) as c:
        yield c


@pytest.fixture
async def anon(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client without any token."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    assert isinstance(body["error"], str) and body["error"]
    assert body["request_id"]
    assert "Traceback" not in response.text and "/tmp" not in response.text


async def send_raw(
    app: FastAPI, method: str, raw_path: bytes, body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """Call the app with a path exactly as a client sent it on the wire.

    httpx normalises `..` segments before sending; a hostile client does not. The path
    is decoded as uvicorn decodes it (percent-decoding, invalid UTF-8 replaced).
    """
    from urllib.parse import unquote

    path, _, query = raw_path.partition(b"?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(path.decode("ascii")),
        "raw_path": path,
        "query_string": query,
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"content-length", str(len(body)).encode()),
            (b"authorization", ADMIN["Authorization"].encode()),
        ],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
        "state": {},
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    status = 0
    headers: dict[str, str] = {}
    chunks: list[bytes] = []

    async def receive() -> dict[str, object]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])  # type: ignore[call-overload]
            for k, v in message.get("headers", []):  # type: ignore[attr-defined]
                headers[k.decode().lower()] = v.decode()
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))  # type: ignore[arg-type]

    await app(scope, receive, send)
    return status, headers, b"".join(chunks)


async def workers_starting_together(settings: Settings, n: int) -> list[FastAPI]:
    """`n` apps on one DATA_DIR and index, their start-ups run at once, as uvicorn's
    worker processes do: each step of one interleaves with the others'."""
    apps = [create_app(settings) for _ in range(n)]
    started: list[FastAPI] = []
    failures: list[Exception] = []
    stop = anyio.Event()

    async def worker(app: FastAPI) -> None:
        try:
            async with app.router.lifespan_context(app):
                started.append(app)
                await stop.wait()  # up until every other has started or failed
        except Exception as exc:  # a failed start-up, asserted on below
            failures.append(exc)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as workers:
            for app in apps:
                workers.start_soon(worker, app)
            while len(started) + len(failures) < n:
                await anyio.sleep(0.01)
            stop.set()
    assert failures == [], failures
    return apps


def rendezvous(monkeypatch: pytest.MonkeyPatch, owner: object, name: str, n: int) -> None:
    """Make `owner.name` (a blocking call, run in a thread) wait until `n` callers are in
    it, or 1 s: workers starting together then all make the call before any goes on,
    the interleaving that loses a race. Unless something serialises them: then the
    first waits out the second and goes on alone, and the later callers find the
    barrier broken and do not wait."""
    barrier = threading.Barrier(n, timeout=1.0)
    original = getattr(owner, name)

    def meeting(*args: object, **kwargs: object) -> object:
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, meeting)
