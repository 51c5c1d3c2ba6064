"""Resumable multipart uploads through the SDK against the real app (in-process).

Requests are counted by a transport wrapping the ASGI one, on the server's side of the
SDK: what the second run really sent, whatever the client believes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tests.client.counting import CountingTransport
from tests.server.conftest import ADMIN_TOKEN
from tfstorage.client import AsyncClient, NoSuchUpload

pytestmark = pytest.mark.anyio
MiB = 1024 * 1024


class Interrupt(Exception):
    pass


def _client(transport: httpx.AsyncBaseTransport, state: Path) -> AsyncClient:
    return AsyncClient(
        "http://testserver", ADMIN_TOKEN, transport=transport, part_size=5 * MiB,
        multipart_threshold=5 * MiB, concurrency=2, retries=0, state_dir=state,
    )  # fmt: skip


async def _interrupted(c: AsyncClient, src: Path, after: int) -> None:
    sent = 0

    def progress(n: int) -> None:
        nonlocal sent
        sent += n
        if sent >= after:
            raise Interrupt  # as a crash would, mid-transfer

    with pytest.raises(Interrupt):
        await c.upload_file(src, "checkpoints", "run/ckpt.bin", progress=progress)


async def test_a_second_run_resumes_from_the_state_file(app: FastAPI, tmp_path: Path) -> None:
    src = tmp_path / "ckpt.bin"
    data = os.urandom(31 * MiB)  # 7 parts: six of 5 MiB and one of 1 MiB
    src.write_bytes(data)
    state = tmp_path / "state"
    first = CountingTransport(app)
    async with _client(first, state) as c:
        await _interrupted(c, src, after=16 * MiB)
        sessions = await c.list_uploads("checkpoints")
        assert len(sessions) == 1
        stored = await c.get_upload(sessions[0]["upload_id"])
    kept = sum(p["size"] for p in stored["parts"])
    assert kept >= 10 * MiB
    assert len(list(state.glob("*.json"))) == 1

    second = CountingTransport(app)
    async with _client(second, state) as c:
        info = await c.upload_file(src, "checkpoints", "run/ckpt.bin")
        assert await c.list_uploads("checkpoints") == []
    assert info.sha256 == hashlib.sha256(data).hexdigest() and info.size == len(data)
    assert second.part_bytes() == len(data) - kept  # exactly the missing parts
    assert not any(m == "POST" and p == "/api/v1/uploads" for m, p, _ in second.seen)
    assert list(state.glob("*.json")) == []


async def test_resume_from_an_upload_id_alone(app: FastAPI, tmp_path: Path) -> None:
    """Another process or machine: no state file, only the upload id."""
    src = tmp_path / "ckpt.bin"
    data = os.urandom(22 * MiB)
    src.write_bytes(data)
    async with _client(CountingTransport(app), tmp_path / "state-a") as c:
        await _interrupted(c, src, after=11 * MiB)
        upload_id = (await c.list_uploads("checkpoints"))[0]["upload_id"]
    second = CountingTransport(app)
    async with _client(second, tmp_path / "state-b") as c:
        info = await c.upload_file(src, "checkpoints", "run/ckpt.bin", upload_id=upload_id)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert second.part_bytes() < len(data) * 0.8


async def test_a_changed_file_is_not_resumed_onto_old_parts(app: FastAPI, tmp_path: Path) -> None:
    """Stored parts are checked against the local bytes (their SHA-256): parts of
    an older file content are sent again, never assembled into the new object."""
    src = tmp_path / "ckpt.bin"
    src.write_bytes(os.urandom(16 * MiB))
    async with _client(CountingTransport(app), tmp_path / "state") as c:
        await _interrupted(c, src, after=10 * MiB)
        upload_id = (await c.list_uploads("checkpoints"))[0]["upload_id"]
    new = os.urandom(16 * MiB)
    src.write_bytes(new)
    second = CountingTransport(app)
    async with _client(second, tmp_path / "state") as c:
        info = await c.upload_file(src, "checkpoints", "run/ckpt.bin", upload_id=upload_id)
    assert info.sha256 == hashlib.sha256(new).hexdigest()
    assert second.part_bytes() == len(new)


async def test_an_expired_session_starts_over(app: FastAPI, tmp_path: Path) -> None:
    src = tmp_path / "ckpt.bin"
    data = os.urandom(12 * MiB)
    src.write_bytes(data)
    state = tmp_path / "state"
    async with _client(CountingTransport(app), state) as c:
        await _interrupted(c, src, after=6 * MiB)
        upload_id = (await c.list_uploads("checkpoints"))[0]["upload_id"]
        await c.abort_upload(upload_id)
        with pytest.raises(NoSuchUpload):
            await c.get_upload(upload_id)
        info = await c.upload_file(src, "checkpoints", "run/ckpt.bin")
    assert info.sha256 == hashlib.sha256(data).hexdigest()


class LosingTransport(CountingTransport):
    """Delivers the first `lose` part uploads to the app, then drops their answers, as a
    connection that breaks after the server stored the part."""

    def __init__(self, app: FastAPI, lose: int) -> None:
        super().__init__(app)
        self.lose = lose

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if request.method == "PUT" and "/parts/" in request.url.path and self.lose > 0:
            self.lose -= 1
            raise httpx.ReadError("connection reset after the part was stored")
        return response


async def test_parts_whose_answer_was_lost_are_retried(app: FastAPI, tmp_path: Path) -> None:
    src = tmp_path / "ckpt.bin"
    data = os.urandom(12 * MiB)
    src.write_bytes(data)
    transport = LosingTransport(app, lose=2)
    async with AsyncClient(
        "http://testserver", ADMIN_TOKEN, transport=transport, part_size=5 * MiB,
        multipart_threshold=5 * MiB, retries=3, state_dir=tmp_path / "state",
    ) as c:  # fmt: skip
        info = await c.upload_file(src, "checkpoints", "run/ckpt.bin")
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    puts = [n for m, p, n in transport.seen if m == "PUT" and "/parts/" in p]
    assert len(puts) == 3 + 2  # three parts, two of them sent twice
    assert sum(puts) - len(data) in (10 * MiB, 7 * MiB)


class CorruptingTransport(CountingTransport):
    """Flips one byte of the first part upload on its way to the app."""

    def __init__(self, app: FastAPI) -> None:
        super().__init__(app)
        self.corrupted = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and "/parts/" in request.url.path and not self.corrupted:
            self.corrupted = True
            body = bytearray(await request.aread())
            body[len(body) // 2] ^= 0xFF
            request = httpx.Request(
                request.method, request.url, headers=request.headers, content=bytes(body)
            )
        return await super().handle_async_request(request)


async def test_a_part_corrupted_on_the_way_is_found_and_sent_again(
    app: FastAPI, tmp_path: Path
) -> None:
    """New parts go without their own checksum (the whole file's SHA-256 covers them);
    when `complete` finds the object wrong, the bad part is found and sent again."""
    src = tmp_path / "ckpt.bin"
    data = os.urandom(12 * MiB)
    src.write_bytes(data)
    transport = CorruptingTransport(app)
    async with _client(transport, tmp_path / "state") as c:
        info = await c.upload_file(src, "checkpoints", "run/ckpt.bin")
        assert (await c.download_bytes("checkpoints", "run/ckpt.bin")) == data
    assert transport.corrupted and info.sha256 == hashlib.sha256(data).hexdigest()
    puts = [p for m, p, _ in transport.seen if m == "PUT" and "/parts/" in p]
    assert len(puts) == 3 + 1
    completes = [p for m, p, _ in transport.seen if p.endswith("/complete")]
    assert len(completes) == 2
