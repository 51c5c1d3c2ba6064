"""A server killed with SIGKILL in the middle of uploads loses nothing it acknowledged,
shows nothing partial, keeps no orphan rows, collects its orphan blobs on restart, and
its usage counters still agree with a recomputation.

Several client threads upload objects of varied sizes through PUT /api/v1/objects,
multipart POST /api/v1/upload, the S3 door's PutObject and its multipart uploads (Create,
UploadPart, Complete), some streamed slowly so that the kill lands mid-body. Once
some uploads have been acknowledged the server gets SIGKILL at a random moment (while at
least one slow body is being sent), is restarted on the same DATA_DIR with
ORPHAN_GRACE_SECONDS=0, and the whole store is checked against what the clients sent;
three times over. Set TFS_CRASH_SEED to replay a run. The server runs with the default
PACK_THRESHOLD: the small objects are records in packs, the others files.

And the client's crash: a body cut short by a vanished client never becomes an object.
"""

from __future__ import annotations

import configparser
import json
import os
import random
import re
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import AUTH_HEADER, ServerFactory, ServerProcess
from tests.server.helpers import (
    chunks,
    list_all,
    multipart_body,
    sha256,
    temp_files,
)
from tests.stored_blobs import (
    packed_blob_ids,
    stored_blob_digests,
    stored_blob_ids,
    temp_pack_files,
)

pytestmark = pytest.mark.server

BUCKET = "artifacts"
CLIENTS = 8
CYCLES = 3
SHARED_KEYS = [f"crash/shared/{i}.bin" for i in range(4)]
KiB = 1024
MiB = 1024 * KiB
MODES = ("put", "form", "s3put", "s3mpu")
S3_PART = 5 * MiB  # S3's smallest part but the last


@dataclass
class Attempt:
    key: str
    payload: bytes
    sha256: str
    mode: str  # "put", "form" (REST), "s3put" or "s3mpu" (the S3 door)
    slow: bool
    cycle: int
    # "body": the payload is being sent; "trailer": a form's file part is complete (the
    # server holds the whole blob) but a field after it is not sent yet.
    phase: str = ""
    status: int | None = None
    body: dict[str, Any] | None = None
    error: str | None = None

    @property
    def acked(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class Model:
    """Everything the clients tried, shared by the worker threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    attempts: list[Attempt] = field(default_factory=list)
    by_key: dict[str, list[Attempt]] = field(default_factory=lambda: defaultdict(list))
    payloads: dict[str, bytes] = field(default_factory=dict)  # sha256 -> bytes
    unexpected: list[str] = field(default_factory=list)

    def add(self, attempt: Attempt) -> None:
        with self.lock:
            self.attempts.append(attempt)
            self.by_key[attempt.key].append(attempt)
            self.payloads[attempt.sha256] = attempt.payload

    def reuse(self, rng: random.Random) -> bytes | None:
        with self.lock:
            if not self.payloads:
                return None
            return self.payloads[rng.choice(sorted(self.payloads))]

    def acked_in(self, cycle: int) -> int:
        with self.lock:
            return sum(a.acked for a in self.attempts if a.cycle == cycle)

    def slow_acked_in(self, cycle: int) -> int:
        with self.lock:
            return sum(a.acked and a.slow for a in self.attempts if a.cycle == cycle)

    def in_phase(self, cycle: int, phase: str) -> int:
        with self.lock:
            return sum(a.cycle == cycle and a.phase == phase for a in self.attempts)


def _size(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.4:
        return rng.randint(4 * KiB, 64 * KiB)
    if r < 0.85:
        return rng.randint(128 * KiB, MiB)
    return rng.randint(2 * MiB, 5 * MiB)


def _new_attempt(model: Model, rng: random.Random, cycle: int, client: int, n: int) -> Attempt:
    payload = model.reuse(rng) if rng.random() < 0.1 else None  # same bytes, another key
    if payload is None:
        payload = rng.randbytes(_size(rng))
    # Some attempts go to a few keys that several attempts (and cycles) write to.
    shared = rng.random() < 0.2
    key = rng.choice(SHARED_KEYS) if shared else f"crash/c{cycle}/t{client}/{n}.bin"
    attempt = Attempt(
        key=key,
        payload=payload,
        sha256=sha256(payload),
        mode=rng.choice(MODES),
        slow=rng.random() < 0.4,
        cycle=cycle,
    )
    model.add(attempt)
    return attempt


def _tracked(attempt: Attempt, body: Iterator[bytes]) -> Iterator[bytes]:
    try:
        yield from body
    finally:
        attempt.phase = ""


def _slow_payload(attempt: Attempt, rng: random.Random) -> Iterator[bytes]:
    attempt.phase = "body"
    yield from chunks(attempt.payload, 64 * KiB, pause=lambda: time.sleep(rng.uniform(0.005, 0.03)))


def _s3_signed(
    server: ServerProcess, method: str, path: str, payload_hash: str, query: str = ""
) -> tuple[str, dict[str, str]]:
    """URL and headers signed by botocore's SigV4 signer with the admin's S3 key."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    parser = configparser.ConfigParser()
    parser.read(server.data_dir / "admin.s3")
    keys = parser["default"]
    url = f"{server.s3_url}{path}" + (f"?{query}" if query else "")

    class Signer(S3SigV4Auth):
        def payload(self, request: Any) -> str:
            return payload_hash  # the body is streamed later: its hash (or UNSIGNED-PAYLOAD)

    request = AWSRequest(method=method, url=url)
    credentials = Credentials(keys["aws_access_key_id"], keys["aws_secret_access_key"])
    Signer(credentials, "s3", "us-east-1").add_auth(request)
    return url, dict(request.headers.items())


def _s3_body(attempt: Attempt, rng: random.Random, data: bytes) -> bytes | Iterator[bytes]:
    if not attempt.slow:
        return data
    attempt.phase = "body"
    pieces = chunks(data, 64 * KiB, pause=lambda: time.sleep(rng.uniform(0.005, 0.03)))
    return _tracked(attempt, pieces)


def _s3_put(server: ServerProcess, attempt: Attempt, rng: random.Random) -> httpx.Response:
    """PutObject: signed payload when sent at once, UNSIGNED-PAYLOAD when trickled."""
    payload_hash = "UNSIGNED-PAYLOAD" if attempt.slow else attempt.sha256
    url, headers = _s3_signed(server, "PUT", f"/{BUCKET}/{attempt.key}", payload_hash)
    headers["Content-Length"] = str(len(attempt.payload))
    body = _s3_body(attempt, rng, attempt.payload)
    with httpx.Client(timeout=httpx.Timeout(15.0)) as client:
        return client.put(url, content=body, headers=headers)


def _s3_multipart(server: ServerProcess, attempt: Attempt, rng: random.Random) -> httpx.Response:
    """Create, parts of 5 MiB (the last smaller), Complete: S3's multipart upload."""
    empty = sha256(b"")
    path = f"/{BUCKET}/{attempt.key}"
    with httpx.Client(timeout=httpx.Timeout(15.0)) as client:
        url, headers = _s3_signed(server, "POST", path, empty, "uploads")
        created = client.post(url, headers=headers)
        if created.status_code != 200:
            return created
        upload_id = re.search(r"<UploadId>([^<]+)</UploadId>", created.text)
        assert upload_id, created.text
        parts = [attempt.payload[i : i + S3_PART] for i in range(0, len(attempt.payload), S3_PART)]
        etags = []
        for number, part in enumerate(parts or [b""], start=1):
            query = f"partNumber={number}&uploadId={upload_id.group(1)}"
            url, headers = _s3_signed(server, "PUT", path, "UNSIGNED-PAYLOAD", query)
            headers["Content-Length"] = str(len(part))
            sent = client.put(url, content=_s3_body(attempt, rng, part), headers=headers)
            if sent.status_code != 200:
                return sent
            etags.append(sent.headers["etag"])
        xml = "".join(
            f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>"
            for n, e in enumerate(etags, start=1)
        )
        body = f"<CompleteMultipartUpload>{xml}</CompleteMultipartUpload>".encode()
        url, headers = _s3_signed(
            server, "POST", path, sha256(body), f"uploadId={upload_id.group(1)}"
        )
        return client.post(url, content=body, headers=headers)


def _s3_acknowledged(attempt: Attempt, response: httpx.Response) -> dict[str, Any] | None:
    """What an S3 answer acknowledges, in the REST answer's terms (the version it made)."""
    if response.status_code != 200:
        return None
    if attempt.mode == "s3mpu" and "<CompleteMultipartUploadResult" not in response.text:
        return None  # an error reported inside a 200, as S3 does for a slow Complete
    return {
        "bucket": BUCKET,
        "key": attempt.key,
        "file_id": response.headers["x-amz-version-id"],
        "sha256": attempt.sha256,  # checked against the stored version by _verify_store
        "size": len(attempt.payload),
    }


def _send(client: httpx.Client, attempt: Attempt, rng: random.Random) -> httpx.Response:
    if attempt.mode == "put":
        headers = {"Content-Type": "application/octet-stream"}
        if rng.random() < 0.5:
            headers["X-Checksum-SHA256"] = attempt.sha256
        url = f"/api/v1/objects/{BUCKET}/{attempt.key}"
        if not attempt.slow:
            return client.put(url, content=attempt.payload, headers=headers)
        if rng.random() < 0.5:  # else chunked
            headers["Content-Length"] = str(len(attempt.payload))
        body = _tracked(attempt, _slow_payload(attempt, rng))
        return client.put(url, content=body, headers=headers)

    fields = {"bucket": BUCKET, "key": attempt.key}
    if not attempt.slow:
        files = {"file": ("blob.bin", attempt.payload, "application/octet-stream")}
        return client.post("/api/v1/upload", data=fields, files=files)

    def before_trailer() -> None:
        time.sleep(0.1)  # the server has read the file part's end: its blob is stored
        attempt.phase = "trailer"
        time.sleep(rng.uniform(0.1, 0.3))

    content_type, form = multipart_body(
        fields,
        "blob.bin",
        _slow_payload(attempt, rng),
        trailer={"metadata": json.dumps({"client": "crash-test"})},
        before_trailer=before_trailer,
    )
    return client.post(
        "/api/v1/upload",
        content=_tracked(attempt, form),
        headers={"Content-Type": content_type},
    )


def _client_loop(
    server: ServerProcess,
    model: Model,
    seed: int,
    cycle: int,
    client_no: int,
    stop: threading.Event,
    killed: threading.Event,
) -> None:
    rng = random.Random(f"{seed}-{cycle}-{client_no}")
    n = 0
    with server.client(timeout=httpx.Timeout(15.0)) as client:
        while not stop.is_set():
            attempt = _new_attempt(model, rng, cycle, client_no, n)
            n += 1
            try:
                if attempt.mode == "s3put":
                    response = _s3_put(server, attempt, rng)
                elif attempt.mode == "s3mpu":
                    response = _s3_multipart(server, attempt, rng)
                else:
                    response = _send(client, attempt, rng)
            except httpx.TransportError as exc:
                attempt.error = f"{type(exc).__name__}: {exc}"
                if not killed.is_set():
                    model.unexpected.append(f"{attempt.key}: {attempt.error} (server alive)")
                continue
            attempt.status = response.status_code
            if attempt.mode.startswith("s3"):
                attempt.body = _s3_acknowledged(attempt, response)
                if attempt.body is None:
                    attempt.status = 500  # not acknowledged, whatever the status said
            elif attempt.acked:
                attempt.body = response.json()
            if not attempt.acked:
                model.unexpected.append(
                    f"{attempt.key}: {response.status_code} {response.text[:300]}"
                )


@dataclass
class Kill:
    mid_body: int  # uploads whose body was being sent
    staged: int  # form uploads whose blob was stored but whose form was not complete
    blobs: int  # blobs on disk after the kill, files or packed (committed or not)
    temp_files: int


def _upload_and_kill(
    server: ServerProcess, model: Model, seed: int, cycle: int, rng: random.Random
) -> Kill:
    """Run the clients, SIGKILL the server mid-upload."""
    stop, killed = threading.Event(), threading.Event()
    threads = [
        threading.Thread(
            target=_client_loop,
            args=(server, model, seed, cycle, i, stop, killed),
            name=f"client-{i}",
            daemon=True,
        )
        for i in range(CLIENTS)
    ]
    for t in threads:
        t.start()
    wanted = rng.randint(4, 12)
    deadline = time.monotonic() + 20
    while model.acked_in(cycle) < wanted or not model.slow_acked_in(cycle):
        assert time.monotonic() < deadline, (
            f"only {model.acked_in(cycle)} uploads acknowledged in 20 s; unexpected: "
            f"{model.unexpected[:5]}\n{server.log_tail()}"
        )
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 0.5))
    # Land the kill while a form's blob is stored but not committed (an orphan to be).
    deadline = time.monotonic() + 5
    while not model.in_phase(cycle, "trailer") and time.monotonic() < deadline:
        time.sleep(0.002)
    stop.set()
    killed.set()
    mid_body, staged = model.in_phase(cycle, "body"), model.in_phase(cycle, "trailer")
    server.kill()
    for t in threads:
        t.join(timeout=20)
        assert not t.is_alive(), f"{t.name} is stuck after the kill"
    return Kill(
        mid_body=mid_body,
        staged=staged,
        blobs=len(stored_blob_ids(server.data_dir / "blobs")),
        temp_files=len(temp_files(server.data_dir)),
    )


def _check_acknowledged(model: Model) -> None:
    for a in model.attempts:
        if not a.acked:
            continue
        assert a.body is not None
        assert a.body["sha256"] == a.sha256, f"{a.key}: response sha256 is not the data's"
        assert a.body["size"] == len(a.payload), a.key
        assert (a.body["bucket"], a.body["key"]) == (BUCKET, a.key)


def _verify_store(server: ServerProcess, model: Model, context: str) -> set[str]:
    """Check every key against the attempts; returns the sha256 of every stored version."""
    _check_acknowledged(model)
    stored: set[str] = set()
    with server.client() as client:
        listed = list_all(client, BUCKET)
        unknown = set(listed) - set(model.by_key)
        assert not unknown, f"{context}: listed keys nobody uploaded: {sorted(unknown)[:5]}"
        for key, attempts in model.by_key.items():
            tried = {a.sha256 for a in attempts}
            response = client.get(f"/api/v1/versions/{BUCKET}/{key}")
            if response.status_code == 404:
                versions: list[dict[str, Any]] = []
            else:
                assert response.status_code == 200, f"{context}: {key}: {response.text}"
                versions = response.json()["versions"]
            ids = [v["file_id"] for v in versions]
            assert len(set(ids)) == len(ids), f"{context}: {key}: repeated file_ids"
            by_id = {v["file_id"]: v for v in versions}

            # Every acknowledged upload is there, with the bytes that were sent.
            for a in attempts:
                if a.acked:
                    assert a.body is not None
                    version = by_id.get(a.body["file_id"])
                    assert version is not None, f"{context}: acknowledged {key} is lost"
                    assert version["sha256"] == a.sha256, f"{context}: {key} changed"

            # Every stored version is one complete attempt, and its blob exists.
            for v in versions:
                assert v["sha256"] in tried, f"{context}: {key} holds bytes nobody sent"
                payload = model.payloads[v["sha256"]]
                assert v["size"] == len(payload), f"{context}: {key}: partial version"
                got = client.get(
                    f"/api/v1/download/{BUCKET}/{key}", params={"version_id": v["file_id"]}
                )
                assert got.status_code == 200, f"{context}: {key}@{v['file_id']}: {got.text}"
                assert got.headers["x-checksum-sha256"] == v["sha256"]
                assert sha256(got.content) == v["sha256"], f"{context}: {key}: bad bytes"
                assert got.content == payload
                stored.add(v["sha256"])

            # The key itself: its newest version, whole, or nothing at all.
            latest = client.get(f"/api/v1/download/{BUCKET}/{key}")
            if not versions:
                assert latest.status_code == 404, f"{context}: {key}: {latest.status_code}"
                assert latest.json()["code"] == "NoSuchKey"
                assert key not in listed, f"{context}: {key} listed without versions"
                assert not any(a.acked for a in attempts)
                continue
            newest = versions[0]
            assert [v["file_id"] for v in versions if v["is_latest"]] == [newest["file_id"]]
            assert latest.status_code == 200, f"{context}: {key}: {latest.text}"
            assert latest.headers["x-file-id"] == newest["file_id"]
            assert latest.content == model.payloads[newest["sha256"]]
            assert key in listed, f"{context}: {key} has versions but is not listed"
            assert listed[key]["file_id"] == newest["file_id"]
            assert listed[key]["sha256"] == newest["sha256"]

        stats = client.get("/api/v1/stats")
        assert stats.status_code == 200, stats.text
        assert stats.json()["dedup"]["blobs"] == len(stored), (
            f"{context}: the index records {stats.json()['dedup']['blobs']} blobs, "
            f"versions reference {len(stored)} distinct sha256"
        )
        # The usage counters (issue 11) moved in the transactions the kills cut short,
        # or not at all: they agree with a recomputation, and with the listing.
        figures = stats.json()["buckets"][BUCKET]
        assert figures["objects"] == len(listed), f"{context}: {figures} vs {len(listed)} keys"
        counters = client.get("/api/v1/storage/counters").json()
        assert counters["differences"] == [], f"{context}: counters: {counters}"
    return stored


def _abort_open_uploads(server: ServerProcess) -> None:
    with server.client() as client:
        open_uploads = client.get("/api/v1/uploads", params={"bucket": BUCKET})
        assert open_uploads.status_code == 200, open_uploads.text
        for upload in open_uploads.json()["uploads"]:
            gone = client.delete(f"/api/v1/uploads/{upload['upload_id']}")
            assert gone.status_code in (200, 204), gone.text


def _wait_for_collection(server: ServerProcess, stored: set[str], context: str) -> int:
    """Start-up GC (ORPHAN_GRACE_SECONDS=0) leaves exactly one blob, a file or a packed
    record, per sha256; returns how many are packed."""
    blob_dir = server.data_dir / "blobs"
    deadline = time.monotonic() + 15
    while True:
        blobs = stored_blob_digests(blob_dir)
        temps = temp_files(server.data_dir) + temp_pack_files(blob_dir)
        if len(blobs) == len(stored) and not temps:
            break
        if time.monotonic() > deadline:
            pytest.fail(
                f"{context}: {len(blobs)} blobs and {len(temps)} temp files after GC, "
                f"expected {len(stored)} and 0\n{server.log_tail()}"
            )
        time.sleep(0.1)
    on_disk = sorted(blobs.values())
    assert on_disk == sorted(stored), f"{context}: stored blobs do not hold the stored versions"
    return len(packed_blob_ids(blob_dir))


def test_sigkill_mid_upload_loses_nothing_acknowledged_and_leaves_no_debris(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    seed = int(os.environ.get("TFS_CRASH_SEED") or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)
    env = {
        "MAX_FILE_SIZE": "64MB",
        "ORPHAN_GRACE_SECONDS": "0",
        "GC_INTERVAL_SECONDS": "0",
        "S3_PORT": "auto",
    }
    server = make_server(env, data_dir=tmp_path / "data")
    model = Model()
    kills: list[Kill] = []
    orphans = 0  # blobs without an index row, left by the kills
    packed = 0
    for cycle in range(CYCLES):
        context = f"cycle {cycle} (TFS_CRASH_SEED={seed})"
        kill = _upload_and_kill(server, model, seed, cycle, rng)
        kills.append(kill)
        assert not model.unexpected, f"{context}: {model.unexpected[:5]}\n{server.log_tail()}"
        assert any(not a.acked for a in model.attempts if a.cycle == cycle)
        server.start()
        stored = _verify_store(server, model, context)
        _abort_open_uploads(server)  # multipart uploads the kill cut short, as a client would
        orphans += kill.blobs - len(stored)
        packed += _wait_for_collection(server, stored, context)

    acked = sum(a.acked for a in model.attempts)
    assert acked >= CYCLES * 4
    assert sum(k.mid_body for k in kills) > 0, f"no kill landed mid-body: {kills}"
    assert sum(k.staged for k in kills) > 0, f"no kill left a stored, uncommitted blob: {kills}"
    assert orphans > 0, f"the kills left no orphan blob to collect: {kills}"
    assert packed > 0, "no object was packed: the default PACK_THRESHOLD is not in play"
    assert {a.mode for a in model.attempts if a.acked} == set(MODES)
    cut = {a.mode for a in model.attempts if not a.acked}
    assert cut & {"s3put", "s3mpu"}, f"no kill landed in an S3 upload: {cut}"
    assert {a.slow for a in model.attempts if a.acked} == {True, False}


def _abort_after(port: int, head: bytes, body: bytes) -> None:
    """Send a request head and part of its body, then drop the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        time.sleep(0.2)  # the server has read what was sent


def test_client_gone_mid_body_leaves_nothing_visible_or_stored(
    make_server: ServerFactory,
) -> None:
    """The other crash: the client's. A body cut short never becomes an object, whatever
    the framing, and the server removes what it had written without waiting for GC."""
    server = make_server({"MAX_FILE_SIZE": "64MB", "ORPHAN_GRACE_SECONDS": "3600"})
    payload = random.Random(4).randbytes(3 * MiB)
    host = f"Host: 127.0.0.1:{server.port}\r\n{AUTH_HEADER}"
    cut = payload[: 2 * MiB + 12345]

    def put_head(key: str, framing: str) -> bytes:
        return (
            f"PUT /api/v1/objects/{BUCKET}/{key} HTTP/1.1\r\n{host}{framing}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()

    _abort_after(server.port, put_head("gone/length.bin", f"Content-Length: {len(payload)}"), cut)
    chunk = f"{len(cut):x}\r\n".encode() + cut + b"\r\n"  # no terminating 0-chunk
    _abort_after(server.port, put_head("gone/chunked.bin", "Transfer-Encoding: chunked"), chunk)
    for key, trailer in (("gone/form.bin", None), ("gone/form-trailer.bin", {"tags": "a=b"})):
        content_type, form = multipart_body(
            {"bucket": BUCKET, "key": key}, "blob.bin", [payload], trailer=trailer
        )
        body = b"".join(form)
        # Cut mid-file, or with the file complete but not the form.
        body = body[: len(body) // 2 if trailer is None else body.rindex(b"a=b")]
        head = (
            f"POST /api/v1/upload HTTP/1.1\r\n{host}Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body) + 100}\r\n\r\n"
        ).encode()
        _abort_after(server.port, head, body)

    with server.client() as client:
        for key in (
            "gone/length.bin",
            "gone/chunked.bin",
            "gone/form.bin",
            "gone/form-trailer.bin",
        ):
            got = client.get(f"/api/v1/download/{BUCKET}/{key}")
            assert got.status_code == 404, (key, got.status_code, got.headers)
            assert got.json()["code"] == "NoSuchKey", (key, got.text)
        assert list_all(client, BUCKET) == {}
        # The request is still a valid one afterwards: the same bytes, whole, are accepted.
        whole = client.put(f"/api/v1/objects/{BUCKET}/gone/length.bin", content=payload)
        assert whole.status_code == 200 and whole.json()["sha256"] == sha256(payload)

    deadline = time.monotonic() + 10
    blob_dir = server.data_dir / "blobs"
    while temp_files(server.data_dir) or len(stored_blob_ids(blob_dir)) != 1:
        assert time.monotonic() < deadline, (
            f"left behind: {temp_files(server.data_dir)}, "
            f"{len(stored_blob_ids(blob_dir))} blobs (expected 1)\n{server.log_tail()}"
        )
        time.sleep(0.05)
