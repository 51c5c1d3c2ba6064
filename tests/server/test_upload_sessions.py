"""A resumable upload survives SIGKILLs of the server: the session and every part it
acknowledged are still there after a restart, a part cut off by the crash is not, and
the upload then completes with the right bytes (local disk + SQLite, and S3)."""

from __future__ import annotations

import hashlib
import random
import threading
from pathlib import Path

import httpx
import pytest

from tests.s3.fixtures import s3_settings_overrides
from tests.server.conftest import ServerFactory, ServerProcess
from tests.server.helpers import chunks

pytestmark = pytest.mark.server

MiB = 1024 * 1024
PART = 5 * MiB


def part_data(number: int) -> bytes:
    size = PART if number < 4 else 123_457
    return random.Random(number).randbytes(size)


def send_part(client: httpx.Client, upload_id: str, number: int) -> None:
    r = client.put(f"/api/v1/uploads/{upload_id}/parts/{number}", content=part_data(number))
    assert r.status_code == 200, r.text
    assert r.json()["etag"] == hashlib.md5(part_data(number)).hexdigest()


def stored_parts(server: ServerProcess, upload_id: str) -> dict[int, str]:
    with server.client() as client:
        r = client.get(f"/api/v1/uploads/{upload_id}")
    assert r.status_code == 200, r.text + server.log_tail()
    return {p["part_number"]: p["etag"] for p in r.json()["parts"]}


def cut_off_mid_part(server: ServerProcess, upload_id: str, number: int) -> None:
    """Send part `number` slowly and SIGKILL the server while its body is arriving."""
    halfway = threading.Event()
    body = part_data(number)

    def slow() -> object:
        for i, piece in enumerate(chunks(body, 256 * 1024)):
            if i == 8:
                halfway.set()
                halfway.wait()
            yield piece

    def send() -> None:
        try:
            with server.client() as client:
                client.put(
                    f"/api/v1/uploads/{upload_id}/parts/{number}",
                    content=slow(),  # type: ignore[arg-type]
                    headers={"Content-Length": str(len(body))},
                )
        except httpx.HTTPError:
            pass  # the server died under it: expected

    sender = threading.Thread(target=send)
    sender.start()
    assert halfway.wait(30)
    server.kill()
    sender.join(30)
    assert not sender.is_alive()


@pytest.fixture(params=["local", "s3"])
def server_env(request: pytest.FixtureRequest) -> dict[str, str]:
    env = {"MAX_FILE_SIZE": "64MB"}
    if request.param == "s3":
        seaweed = request.getfixturevalue("seaweedfs")
        prefix = request.getfixturevalue("s3_prefix")
        overrides = s3_settings_overrides(seaweed, seaweed.bucket, prefix=prefix)
        env.update({name.upper(): str(value) for name, value in overrides.items()})
    return env


def test_upload_session_survives_sigkill(
    make_server: ServerFactory, server_env: dict[str, str], tmp_path: Path
) -> None:
    server = make_server(server_env)
    whole = b"".join(part_data(n) for n in (1, 2, 3, 4))
    with server.client() as client:
        r = client.post(
            "/api/v1/uploads",
            json={
                "bucket": "checkpoints",
                "key": "crash/ckpt.bin",
                "size": len(whole),
                "sha256": hashlib.sha256(whole).hexdigest(),
            },
        )
        assert r.status_code == 201, r.text
        upload_id = r.json()["upload_id"]
        send_part(client, upload_id, 3)
        send_part(client, upload_id, 1)

    # Killed between parts: everything acknowledged is there after the restart.
    server.kill()
    server.start()
    expected = {n: hashlib.md5(part_data(n)).hexdigest() for n in (1, 3)}
    assert stored_parts(server, upload_id) == expected

    # Killed in the middle of a part: that part is simply not there.
    cut_off_mid_part(server, upload_id, 2)
    server.start()
    assert stored_parts(server, upload_id) == expected

    with server.client() as client:
        send_part(client, upload_id, 2)
        send_part(client, upload_id, 4)
    server.kill()
    server.start()
    parts = stored_parts(server, upload_id)
    assert parts == {n: hashlib.md5(part_data(n)).hexdigest() for n in (1, 2, 3, 4)}

    with server.client() as client:
        listing = [{"part_number": n, "etag": etag} for n, etag in sorted(parts.items())]
        r = client.post(f"/api/v1/uploads/{upload_id}/complete", json={"parts": listing})
        assert r.status_code == 200, r.text + server.log_tail()
        assert r.json()["sha256"] == hashlib.sha256(whole).hexdigest()
        assert r.json()["etag"] == hashlib.md5(whole).hexdigest()
        got = client.get("/api/v1/download/checkpoints/crash/ckpt.bin")
        assert got.status_code == 200 and got.content == whole
        assert client.get(f"/api/v1/uploads/{upload_id}").status_code == 404
    if server_env.get("STORAGE_TYPE") is None:
        parts_dir = server.data_dir / "blobs" / ".parts"
        assert list(parts_dir.iterdir()) == []  # the parts went with the completion
