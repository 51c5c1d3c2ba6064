"""Every way a request can fail authentication, against a real server on SQLite and on
PostgreSQL: each answers its S3 error code in XML with a request id, and stores nothing
(no object over REST, no blob on disk, no upload session).

Requests are signed by botocore's own signers; a case that needs a bad signature changes
what the signer produced, a clock-skew case runs the signer with its clock moved.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import os
import re
import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

import httpx
import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.s3api.test_endpoint_server import admin_keys, s3_client
from tests.server.conftest import ServerProcess, fresh_postgres_database
from tests.stored_blobs import stored_blob_ids

pytestmark = pytest.mark.timeout(180)

REGION = "us-east-1"
BODY = b"must never be stored"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp(f"auth-{request.param}")
    with contextlib.ExitStack() as stack:
        env = {"S3_PORT": "auto"}
        if request.param == "postgres":
            env["DATABASE_URL"] = stack.enter_context(fresh_postgres_database())
        proc = ServerProcess(root / "data", env, log_dir=root)
        proc.start()
        stack.callback(proc.stop)
        yield proc


@pytest.fixture(scope="module")
def rest(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture(scope="module")
def scoped(rest: httpx.Client) -> dict[str, Any]:
    """A key pair limited to bucket `models` and prefix `team-a/`."""
    body = {"name": "scoped", "scopes": ["read", "write"], "buckets": ["models"]}
    created = rest.post("/api/v1/tokens", json={**body, "prefix": "team-a/", "s3": True})
    assert created.status_code == 201, created.text
    keys: dict[str, Any] = created.json()
    return keys


def _signed(
    key_id: str, secret: str, url: str, body: bytes = BODY, content_md5: bytes | None = None
) -> dict[str, str]:
    request = AWSRequest(method="PUT", url=url, data=body)
    request.headers["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
    if content_md5 is not None:  # signed with the rest
        request.headers["Content-MD5"] = base64.b64encode(
            hashlib.md5(content_md5).digest()
        ).decode()
    S3SigV4Auth(Credentials(key_id, secret), "s3", REGION).add_auth(request)
    return dict(request.headers.items())


def _presigned(key_id: str, secret: str, url: str, expires: int = 300) -> str:
    request = AWSRequest(method="PUT", url=url)
    S3SigV4QueryAuth(Credentials(key_id, secret), "s3", REGION, expires=expires).add_auth(request)
    return str(request.url)


def _refused(
    server: ServerProcess, rest: httpx.Client, answer: httpx.Response, status: int, code: str
) -> None:
    assert answer.status_code == status, answer.text
    assert f"<Code>{code}</Code>" in answer.text
    assert answer.headers["content-type"].startswith("application/xml")
    request_id = answer.headers["x-amz-request-id"]
    assert f"<RequestId>{request_id}</RequestId>" in answer.text
    assert "Traceback" not in answer.text


def _nothing_stored(server: ServerProcess, rest: httpx.Client, bucket: str, key: str) -> None:
    assert rest.get(f"/api/v1/download/{bucket}/{key}").status_code == 404
    listed = rest.get(f"/api/v1/list/{bucket}", params={"prefix": key}).json()["objects"]
    assert listed == []


@pytest.fixture
def blobs_unchanged(server: ServerProcess) -> Iterator[None]:
    before = len(stored_blob_ids(server.data_dir / "blobs"))
    yield
    assert len(stored_blob_ids(server.data_dir / "blobs")) == before  # no blob left behind either


@pytest.mark.usefixtures("blobs_unchanged")
def test_tampered_header_signature(server: ServerProcess, rest: httpx.Client) -> None:
    key_id, secret = admin_keys(server)
    url = f"{server.s3_url}/models/auth/header.bin"
    headers = _signed(key_id, secret, url)
    signature = re.search(r"Signature=([0-9a-f]{64})", headers["Authorization"])
    assert signature
    flipped = signature.group(1)[:-1] + ("0" if signature.group(1)[-1] != "0" else "1")
    headers["Authorization"] = headers["Authorization"].replace(signature.group(1), flipped)
    answer = httpx.put(url, content=BODY, headers=headers)
    _refused(server, rest, answer, 403, "SignatureDoesNotMatch")
    _nothing_stored(server, rest, "models", "auth/header.bin")
    # A signed header changed after signing is the same failure (one second earlier: a
    # fixed "00" seconds left it unchanged when the signer ran at :00).
    headers = _signed(key_id, secret, url)
    signed_at = datetime.datetime.strptime(headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    headers["X-Amz-Date"] = (signed_at - datetime.timedelta(seconds=1)).strftime("%Y%m%dT%H%M%SZ")
    answer = httpx.put(url, content=BODY, headers=headers)
    assert answer.status_code == 403
    _nothing_stored(server, rest, "models", "auth/header.bin")


@pytest.mark.usefixtures("blobs_unchanged")
def test_tampered_query_signature(server: ServerProcess, rest: httpx.Client) -> None:
    key_id, secret = admin_keys(server)
    url = _presigned(key_id, secret, f"{server.s3_url}/models/auth/query.bin")
    good = re.search(r"X-Amz-Signature=([0-9a-f]{64})", url)
    assert good
    bad = url.replace(good.group(1), good.group(1)[::-1])
    _refused(server, rest, httpx.put(bad, content=BODY), 403, "SignatureDoesNotMatch")
    # Another key in the signed path, same signature.
    moved = url.replace("/auth/query.bin", "/auth/other.bin")
    _refused(server, rest, httpx.put(moved, content=BODY), 403, "SignatureDoesNotMatch")
    for key in ("auth/query.bin", "auth/other.bin"):
        _nothing_stored(server, rest, "models", key)
    # Signed for more than 7 days: refused before anything else.
    long = _presigned(key_id, secret, f"{server.s3_url}/models/auth/long.bin", 8 * 86400)
    _refused(server, rest, httpx.put(long, content=BODY), 400, "AuthorizationQueryParametersError")
    _nothing_stored(server, rest, "models", "auth/long.bin")


@pytest.mark.usefixtures("blobs_unchanged")
def test_wrong_secret_and_unknown_key(server: ServerProcess, rest: httpx.Client) -> None:
    key_id, secret = admin_keys(server)
    url = f"{server.s3_url}/models/auth/wrong.bin"
    wrong = _signed(key_id, secret[:-1] + ("A" if secret[-1] != "A" else "B"), url)
    _refused(
        server, rest, httpx.put(url, content=BODY, headers=wrong), 403, "SignatureDoesNotMatch"
    )
    unknown = _signed("TFSK" + "Z" * 16, secret, url)
    _refused(server, rest, httpx.put(url, content=BODY, headers=unknown), 403, "InvalidAccessKeyId")
    _nothing_stored(server, rest, "models", "auth/wrong.bin")


@pytest.mark.usefixtures("blobs_unchanged")
def test_expired_presigned_url(server: ServerProcess, rest: httpx.Client) -> None:
    key_id, secret = admin_keys(server)
    url = f"{server.s3_url}/models/auth/expired.bin"
    an_hour_ago = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - datetime.timedelta(
        hours=1
    )
    with mock.patch("botocore.auth.get_current_datetime", return_value=an_hour_ago):
        expired = _presigned(key_id, secret, url, expires=600)
    _refused(server, rest, httpx.put(expired, content=BODY), 403, "AccessDenied")
    assert "expired" in httpx.put(expired, content=BODY).text.lower()
    _nothing_stored(server, rest, "models", "auth/expired.bin")


@pytest.mark.usefixtures("blobs_unchanged")
def test_clock_skew(server: ServerProcess, rest: httpx.Client) -> None:
    key_id, secret = admin_keys(server)
    url = f"{server.s3_url}/models/auth/skewed.bin"
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    for skew in (datetime.timedelta(minutes=16), -datetime.timedelta(minutes=16)):
        with mock.patch("botocore.auth.get_current_datetime", return_value=now - skew):
            headers = _signed(key_id, secret, url)
        answer = httpx.put(url, content=BODY, headers=headers)
        _refused(server, rest, answer, 403, "RequestTimeTooSkewed")
    _nothing_stored(server, rest, "models", "auth/skewed.bin")


def test_clock_within_15_minutes_is_accepted(server: ServerProcess, rest: httpx.Client) -> None:
    key_id, secret = admin_keys(server)
    url = f"{server.s3_url}/models/auth/in-time.bin"
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    with mock.patch(
        "botocore.auth.get_current_datetime", return_value=now - datetime.timedelta(minutes=14)
    ):
        headers = _signed(key_id, secret, url, b"in time")
    assert httpx.put(url, content=b"in time", headers=headers).status_code == 200
    assert rest.get("/api/v1/download/models/auth/in-time.bin").content == b"in time"


@pytest.mark.usefixtures("blobs_unchanged")
def test_payload_hash_mismatch(server: ServerProcess, rest: httpx.Client) -> None:
    key_id, secret = admin_keys(server)
    url = f"{server.s3_url}/models/auth/sha.bin"
    headers = _signed(key_id, secret, url, BODY)  # signed for BODY, another body sent
    answer = httpx.put(url, content=BODY[::-1], headers=headers)
    _refused(server, rest, answer, 400, "XAmzContentSHA256Mismatch")
    _nothing_stored(server, rest, "models", "auth/sha.bin")


def test_a_parts_payload_hash_and_content_md5_are_checked_in_order(
    server: ServerProcess, rest: httpx.Client
) -> None:
    """The write path checks a signed part with its own digests (no second SHA-256 of
    the bytes): the payload hash first, then Content-MD5, and a refused part is never
    recorded."""
    key_id, secret = admin_keys(server)
    s3 = s3_client(server, key_id, secret)
    key = "auth/part-hash.bin"
    upload = s3.create_multipart_upload(Bucket="models", Key=key)["UploadId"]
    url = f"{server.s3_url}/models/{key}?partNumber=1&uploadId={upload}"
    other = BODY[::-1]
    # Both promises broken: the payload hash is the one reported.
    headers = _signed(key_id, secret, url, BODY, content_md5=BODY)
    answer = httpx.put(url, content=other, headers=headers)
    _refused(server, rest, answer, 400, "XAmzContentSHA256Mismatch")
    # The payload hash kept and Content-MD5 broken.
    headers = _signed(key_id, secret, url, other, content_md5=BODY)
    _refused(server, rest, httpx.put(url, content=other, headers=headers), 400, "BadDigest")
    assert "Parts" not in s3.list_parts(Bucket="models", Key=key, UploadId=upload)
    # Both kept: the part is stored, its ETag the MD5 of its bytes.
    headers = _signed(key_id, secret, url, BODY, content_md5=BODY)
    answer = httpx.put(url, content=BODY, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["etag"] == f'"{hashlib.md5(BODY).hexdigest()}"'
    parts = [{"PartNumber": 1, "ETag": answer.headers["etag"]}]
    s3.complete_multipart_upload(
        Bucket="models", Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
    )
    assert rest.get(f"/api/v1/download/models/{key}").content == BODY


@pytest.mark.usefixtures("blobs_unchanged")
def test_revoked_and_expired_tokens(server: ServerProcess, rest: httpx.Client) -> None:
    created = rest.post(
        "/api/v1/tokens", json={"name": "to-revoke", "scopes": ["read", "write"], "s3": True}
    ).json()
    s3 = s3_client(server, created["access_key_id"], created["secret_access_key"])
    s3.head_bucket(Bucket="models")  # works while the token lives
    assert rest.delete(f"/api/v1/tokens/{created['id']}").status_code == 200
    url = f"{server.s3_url}/models/auth/revoked.bin"
    headers = _signed(created["access_key_id"], created["secret_access_key"], url)
    _refused(server, rest, httpx.put(url, content=BODY, headers=headers), 403, "InvalidAccessKeyId")
    _nothing_stored(server, rest, "models", "auth/revoked.bin")
    short = rest.post(
        "/api/v1/tokens",
        json={"name": "short", "scopes": ["write"], "s3": True, "expires_in": 1},
    ).json()
    time.sleep(1.5)
    url = f"{server.s3_url}/models/auth/expired-token.bin"
    headers = _signed(short["access_key_id"], short["secret_access_key"], url)
    answer = httpx.put(url, content=BODY, headers=headers)
    assert answer.status_code == 403 and "<Code>" in answer.text
    _nothing_stored(server, rest, "models", "auth/expired-token.bin")


@pytest.mark.usefixtures("blobs_unchanged")
def test_scoped_key_outside_its_bucket_or_prefix(
    server: ServerProcess, rest: httpx.Client, scoped: dict[str, Any]
) -> None:
    key_id, secret = scoped["access_key_id"], scoped["secret_access_key"]
    for bucket, key in (("models", "team-b/x.bin"), ("datasets", "team-a/x.bin")):
        url = f"{server.s3_url}/{bucket}/{key}"
        headers = _signed(key_id, secret, url)
        _refused(server, rest, httpx.put(url, content=BODY, headers=headers), 403, "AccessDenied")
        _nothing_stored(server, rest, bucket, key)
    # Multipart outside the prefix: refused at Create, no session left.
    url = f"{server.s3_url}/models/team-b/big.bin?uploads"
    request = AWSRequest(method="POST", url=url, data=b"")
    request.headers["x-amz-content-sha256"] = hashlib.sha256(b"").hexdigest()
    S3SigV4Auth(Credentials(key_id, secret), "s3", REGION).add_auth(request)
    answer = httpx.post(url, headers=dict(request.headers.items()))
    _refused(server, rest, answer, 403, "AccessDenied")
    uploads = rest.get("/api/v1/uploads", params={"bucket": "models"})
    assert uploads.status_code == 200
    assert all(u["key"] != "team-b/big.bin" for u in uploads.json()["uploads"])


def test_scoped_key_inside_its_scope(
    server: ServerProcess, rest: httpx.Client, scoped: dict[str, Any]
) -> None:
    inside = s3_client(server, scoped["access_key_id"], scoped["secret_access_key"])
    data = os.urandom(1000)
    inside.put_object(Bucket="models", Key="team-a/ok.bin", Body=data)
    assert rest.get("/api/v1/download/models/team-a/ok.bin").content == data
