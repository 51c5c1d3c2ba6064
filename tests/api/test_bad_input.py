"""Bad input: a JSON error with the right status and code, and nothing left behind."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import anyio
import httpx
import pytest
from fastapi import FastAPI

from tests.api.conftest import assert_error, send_raw, stored_files
from tfstorage.config import Settings

pytestmark = pytest.mark.anyio


def error_code(body: bytes) -> str:
    payload = json.loads(body)
    assert isinstance(payload["error"], str) and payload["request_id"]
    return str(payload["code"])


BAD_KEYS = [
    b"..",
    b"a/../b",
    b"a/./b",
    b"%2e%2e/x",
    b"a/%2e%2e/%2e%2e/etc/passwd",
    b"%2e%2e%2fx",
    b"a%5cb",  # backslash
    b"..%5c..%5cwin",
    b"a%00b",
    b"a%0d%0ab",
    b"tab%09key",
    b"%c0%ae%c0%ae/x",  # overlong UTF-8 for ".."
    b"%ff%fe",  # invalid UTF-8
    b"%2fleading",  # decodes to a leading '/'
    b"x" * 1025,
    quote("é" * 513).encode(),  # 1026 bytes in UTF-8, 513 characters
]


@pytest.mark.parametrize("key", BAD_KEYS, ids=lambda k: k[:24].decode("latin-1"))
async def test_bad_keys_rejected_on_put(app: FastAPI, settings: Settings, key: bytes) -> None:
    status, _, body = await send_raw(app, "PUT", b"/api/v1/objects/artifacts/" + key, b"data")
    assert status == 400, (key, body)
    assert error_code(body) in ("InvalidObjectName", "KeyTooLong")
    assert stored_files(settings) == []


@pytest.mark.parametrize("key", BAD_KEYS[:8], ids=lambda k: k[:24].decode("latin-1"))
async def test_bad_keys_rejected_on_read_routes(app: FastAPI, key: bytes) -> None:
    for method, prefix in (
        ("GET", b"/api/v1/download/artifacts/"),
        ("DELETE", b"/api/v1/delete/artifacts/"),
        ("GET", b"/api/v1/versions/artifacts/"),
        ("POST", b"/api/v1/restore/artifacts/"),
        ("GET", b"/download/"),
    ):
        status, _, body = await send_raw(app, method, prefix + key)
        assert status == 400, (method, key, body)
        assert error_code(body) in ("InvalidObjectName", "KeyTooLong")


@pytest.mark.parametrize(
    "bucket",
    [
        b"..",
        b"%2e%2e",
        b"ART",
        b"a%2fb",
        b"..%5c",
        b"%c0%ae%c0%ae",
        quote("\uff41rtifacts").encode(),  # fullwidth look-alike
    ],
)
async def test_bad_buckets_in_paths(app: FastAPI, settings: Settings, bucket: bytes) -> None:
    status, _, body = await send_raw(app, "PUT", b"/api/v1/objects/" + bucket + b"/k", b"1")
    assert status in (400, 404), body  # 404: the path no longer matches a route
    assert error_code(body) in ("InvalidBucketName", "NotFound")
    status, _, body = await send_raw(app, "GET", b"/api/v1/list/" + bucket)
    assert status in (400, 404), body
    assert stored_files(settings) == []


async def test_key_of_exactly_1024_bytes_is_fine(client: httpx.AsyncClient) -> None:
    key = "k" * 1024
    assert (await client.put(f"/api/v1/objects/artifacts/{key}", content=b"1")).status_code == 200


async def test_bad_key_in_form(client: httpx.AsyncClient, settings: Settings) -> None:
    r = await client.post(
        "/api/v1/upload",
        files={"file": ("a.txt", b"1")},
        data={"bucket": "artifacts", "key": "../x"},
    )
    assert_error(r, 400, "InvalidObjectName")
    r = await client.post(
        "/api/v1/upload", files={"file": ("a.txt", b"1")}, data={"bucket": "Bad_Bucket"}
    )
    assert_error(r, 400, "InvalidBucketName")
    assert stored_files(settings) == []


async def test_filename_paths_are_reduced_to_their_last_segment(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/upload", files={"file": ("../../etc/passwd", b"1")}, data={"bucket": "artifacts"}
    )
    assert r.status_code == 200 and r.json()["key"] == "passwd"
    r = await client.post(
        "/api/v1/upload", files={"file": ("..\\..\\boot.ini", b"1")}, data={"bucket": "artifacts"}
    )
    assert r.status_code == 200 and r.json()["key"] == "boot.ini"
    r = await client.post(
        "/api/v1/upload", files={"file": ("..", b"1")}, data={"bucket": "artifacts"}
    )
    assert_error(r, 400, "InvalidObjectName")


async def test_missing_file_field(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/upload", data={"bucket": "artifacts"}, files={"notes": (None, "x")}
    )
    assert_error(r, 400, "MissingFile")


async def test_not_multipart(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/upload", content=b"hello", headers={"content-type": "text/plain"}
    )
    assert_error(r, 400, "MalformedPOSTRequest")
    r = await client.post(
        "/api/v1/upload", content=b"hello", headers={"content-type": "multipart/form-data"}
    )
    assert_error(r, 400, "MalformedPOSTRequest")


async def test_truncated_multipart(client: httpx.AsyncClient, settings: Settings) -> None:
    boundary = "B0UND"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n\r\n'
    ).encode() + b"x" * 5000  # no closing boundary
    r = await client.post(
        "/api/v1/upload",
        content=body,
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 400, r.text
    assert r.json()["code"] in ("IncompleteBody", "MalformedPOSTRequest")
    assert stored_files(settings) == []
    listing = (await client.get("/api/v1/list/tensorfleet")).json()
    assert listing["objects"] == []


async def test_garbage_multipart(client: httpx.AsyncClient, settings: Settings) -> None:
    r = await client.post(
        "/api/v1/upload",
        content=b"--zz\r\nno headers here\r\n\r\n\x00\x01--zz--",
        headers={"content-type": "multipart/form-data; boundary=zz"},
    )
    assert r.status_code == 400, r.text
    assert stored_files(settings) == []


async def test_declared_length_over_limit_is_413_before_reading(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    async def body():  # would fail the test if the server read it
        raise AssertionError("body was read")
        yield b""

    r = await client.put(
        "/api/v1/objects/artifacts/big.bin",
        content=body(),
        headers={"content-length": str(settings.max_file_size + 1)},
    )
    assert_error(r, 413, "EntityTooLarge")


async def test_streamed_body_over_limit_is_aborted(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    await client.put("/api/v1/objects/artifacts/big.bin", content=b"previous")
    chunk = b"z" * 65536
    sent = 0

    async def body():
        nonlocal sent
        while sent <= settings.max_file_size:
            sent += len(chunk)
            yield chunk

    r = await client.put("/api/v1/objects/artifacts/big.bin", content=body())  # chunked
    assert_error(r, 413, "EntityTooLarge")
    assert (await client.get("/api/v1/download/artifacts/big.bin")).content == b"previous"
    assert len(stored_files(settings)) == 1  # only the previous version's blob


async def test_exactly_max_size_is_accepted(client: httpx.AsyncClient, settings: Settings) -> None:
    r = await client.put(
        "/api/v1/objects/artifacts/edge.bin", content=b"e" * settings.max_file_size
    )
    assert r.status_code == 200, r.text


async def test_form_file_over_limit(client: httpx.AsyncClient, settings: Settings) -> None:
    r = await client.post(
        "/api/v1/upload",
        files={"file": ("huge.bin", b"h" * (settings.max_file_size + 1))},
        data={"bucket": "artifacts"},
    )
    assert_error(r, 413, "EntityTooLarge")
    assert stored_files(settings) == []


async def test_body_shorter_than_content_length(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    async def body():
        yield b"only-this"

    r = await client.put(
        "/api/v1/objects/artifacts/short.bin", content=body(), headers={"content-length": "100"}
    )
    assert_error(r, 400, "IncompleteBody")
    assert stored_files(settings) == []


@pytest.mark.parametrize(
    ("metadata", "code"),
    [
        ("[1, 2]", "InvalidMetadata"),
        ('"text"', "InvalidMetadata"),
        ("{bad json", "InvalidMetadata"),
        ('{"x": "' + "y" * 9000 + '"}', "MetadataTooLarge"),
        ("[" * 10000 + "]" * 10000, "MetadataTooLarge"),
    ],
)
async def test_bad_metadata(
    client: httpx.AsyncClient, settings: Settings, metadata: str, code: str
) -> None:
    r = await client.post(
        "/api/v1/upload",
        files={"file": ("a.txt", b"1")},
        data={"bucket": "artifacts", "metadata": metadata},
    )
    assert r.status_code == 400, r.text
    assert r.json()["code"] in (code, "RequestTooLarge")
    r = await client.put(
        "/api/v1/objects/artifacts/a.txt", content=b"1", headers={"X-Metadata": metadata[:4000]}
    )
    assert r.status_code == 400
    assert stored_files(settings) == []


async def test_deeply_nested_metadata(client: httpx.AsyncClient) -> None:
    deep = '{"a":' * 100 + "1" + "}" * 100
    r = await client.put(
        "/api/v1/objects/artifacts/a.txt", content=b"1", headers={"X-Metadata": deep}
    )
    assert_error(r, 400, "InvalidMetadata")


async def test_bad_tags(client: httpx.AsyncClient) -> None:
    r = await client.put(
        "/api/v1/objects/artifacts/a.txt", content=b"1", headers={"X-Tags": "novalue"}
    )
    assert_error(r, 400, "InvalidTag")
    many = ",".join(f"k{i}=v" for i in range(51))
    r = await client.put("/api/v1/objects/artifacts/a.txt", content=b"1", headers={"X-Tags": many})
    assert_error(r, 400, "InvalidTag")


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ('quote"d.txt', "attachment; filename=\"quote_d.txt\"; filename*=UTF-8''quote%22d.txt"),
        (
            "naïve résumé.pdf",
            "attachment; filename=\"na_ve r_sum_.pdf\"; filename*=UTF-8''na%C3%AFve%20r%C3%A9sum%C3%A9.pdf",
        ),
        (
            "semi;colon.txt",
            "attachment; filename=\"semi_colon.txt\"; filename*=UTF-8''semi%3Bcolon.txt",
        ),
        ("back\\slash", None),  # refused at upload: backslashes never become keys
    ],
)
async def test_content_disposition_is_well_formed(
    client: httpx.AsyncClient, key: str, expected: str | None
) -> None:
    url = f"/api/v1/objects/artifacts/{quote(key)}"
    r = await client.put(url, content=b"1")
    if expected is None:
        assert_error(r, 400, "InvalidObjectName")
        return
    assert r.status_code == 200, r.text
    dl = await client.get(f"/api/v1/download/artifacts/{quote(key)}")
    assert dl.headers.get_list("content-disposition") == [expected]


async def test_crlf_in_filename_cannot_inject_headers(client: httpx.AsyncClient) -> None:
    r = await client.put("/api/v1/objects/artifacts/a%0d%0aSet-Cookie:%20x=1.txt", content=b"1")
    assert_error(r, 400, "InvalidObjectName")
    # In a form, httpx (like browsers) percent-encodes CR/LF in the filename; the result
    # is a literal, harmless key, and its download header stays one clean line.
    r = await client.post(
        "/api/v1/upload",
        files={"file": ("a\r\nSet-Cookie: x=1.txt", b"1")},
        data={"bucket": "artifacts"},
    )
    assert r.status_code == 200, r.text
    key = r.json()["key"]
    assert "\r" not in key and "\n" not in key
    dl = await client.get(f"/api/v1/download/artifacts/{quote(key)}")
    assert dl.status_code == 200
    assert "set-cookie" not in dl.headers
    [disposition] = dl.headers.get_list("content-disposition")
    assert "\r" not in disposition and "\n" not in disposition


@pytest.mark.parametrize(
    ("name", "ctype"), [("page.html", "text/html"), ("img.svg", "image/svg+xml")]
)
async def test_active_content_served_as_attachment(
    client: httpx.AsyncClient, name: str, ctype: str
) -> None:
    await client.put(
        f"/api/v1/objects/artifacts/{name}",
        content=b"<script>alert(1)</script>",
        headers={"content-type": ctype},
    )
    r = await client.get(f"/api/v1/download/artifacts/{name}")
    assert r.headers["content-disposition"].startswith("attachment;")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in r.headers["content-security-policy"]


async def test_listing_limit_capped_and_validated(client: httpx.AsyncClient) -> None:
    assert_error(
        await client.get("/api/v1/list/artifacts", params={"limit": 0}), 400, "InvalidArgument"
    )
    assert_error(
        await client.get("/api/v1/list/artifacts", params={"limit": "x"}), 400, "InvalidArgument"
    )
    assert (await client.get("/api/v1/list/artifacts", params={"limit": 10**9})).status_code == 200
    assert_error(
        await client.get("/api/v1/list/artifacts", params={"delimiter": "//"}),
        400,
        "InvalidArgument",
    )


@pytest.mark.parametrize("value", ["'; DROP TABLE versions; --", "%", "_", "\\", "' OR '1'='1"])
async def test_sql_metacharacters_in_filters(client: httpx.AsyncClient, value: str) -> None:
    await client.put("/api/v1/objects/artifacts/plain.txt", content=b"1", headers={"X-Tags": "k=v"})
    r = await client.get("/api/v1/list/artifacts", params={"prefix": value, "marker": value})
    assert r.status_code in (200, 400)
    if r.status_code == 200:
        assert r.json()["objects"] == []
    r = await client.get(
        "/api/v1/files", params={"prefix": value, "content_type": value, "tag": f"k={value}"}
    )
    assert r.status_code in (200, 400)
    if r.status_code == 200:
        assert r.json()["files"] == []
    assert (await client.get("/api/v1/download/artifacts/plain.txt")).status_code == 200


def _form(
    parts: list[bytes], boundary: str = "bomb", preamble: bytes = b""
) -> tuple[bytes, dict[str, str]]:
    body = preamble + b"".join(f"--{boundary}\r\n".encode() + p + b"\r\n" for p in parts)
    body += f"--{boundary}--\r\n".encode()
    return body, {"content-type": f"multipart/form-data; boundary={boundary}"}


async def test_multipart_with_thousands_of_parts(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    field = b'Content-Disposition: form-data; name="x"\r\n\r\n1'
    file = b'Content-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nhello'
    body, headers = _form([file] + [field] * 5000)
    r = await client.post("/api/v1/upload", content=body, headers=headers)
    assert_error(r, 413, "RequestTooLarge")
    assert stored_files(settings) == []


async def test_multipart_with_many_files(client: httpx.AsyncClient, settings: Settings) -> None:
    files = [
        f'Content-Disposition: form-data; name="file"; filename="f{i}.txt"\r\n\r\nx'.encode()
        for i in range(150)
    ]
    body, headers = _form(files)
    r = await client.post("/api/v1/files/upload", content=body, headers=headers)
    assert_error(r, 413, "RequestTooLarge")
    assert stored_files(settings) == []


async def test_multipart_with_a_huge_preamble(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    file = b'Content-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nhello'
    body, headers = _form([file], preamble=b"p" * (2 * 1024 * 1024))
    r = await client.post("/api/v1/upload", content=body, headers=headers)
    assert r.status_code in (400, 413), r.text
    assert r.json()["code"] in ("MalformedPOSTRequest", "RequestTooLarge")
    assert stored_files(settings) == []


async def test_multipart_with_a_huge_field(client: httpx.AsyncClient, settings: Settings) -> None:
    file = b'Content-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nhello'
    huge = b'Content-Disposition: form-data; name="tags"\r\n\r\n' + b"a=b," * (1024 * 1024)
    body, headers = _form([file, huge])
    r = await client.post("/api/v1/upload", content=body, headers=headers)
    assert_error(r, 413, "RequestTooLarge")
    assert stored_files(settings) == []


async def test_multipart_with_huge_part_headers(client: httpx.AsyncClient) -> None:
    part = (
        b'Content-Disposition: form-data; name="file"; filename="a.txt"\r\nX-Pad: '
        + b"p" * 100_000
        + b"\r\n\r\nx"
    )
    body, headers = _form([part])
    r = await client.post("/api/v1/upload", content=body, headers=headers)
    assert r.status_code in (400, 413), r.text


async def test_json_bodies_are_bounded(client: httpx.AsyncClient) -> None:
    big = '{"name": "' + "x" * (2 * 1024 * 1024) + '"}'
    r = await client.post(
        "/api/v1/buckets", content=big, headers={"content-type": "application/json"}
    )
    assert_error(r, 413, "RequestTooLarge")

    async def chunked():  # no Content-Length: counted as it arrives
        yield b'{"name": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    r = await client.post(
        "/api/v1/buckets", content=chunked(), headers={"content-type": "application/json"}
    )
    assert_error(r, 413, "RequestTooLarge")


async def test_ten_thousand_deep_json(client: httpx.AsyncClient) -> None:
    up = await client.put("/api/v1/objects/artifacts/deep.txt", content=b"1")
    deep = '{"metadata": {"a": ' + "[" * 10000 + "]" * 10000 + "}}"
    r = await client.put(
        f"/api/v1/files/{up.json()['file_id']}",
        content=deep,
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400, r.text
    r = await client.post(
        "/api/v1/tokens",
        content='{"name": ' + "[" * 10000 + "]" * 10000 + "}",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert (await client.get(f"/api/v1/files/{up.json()['file_id']}")).json()["metadata"] == {}


@pytest.mark.parametrize(
    ("header", "value", "code"),
    [
        ("X-Metadata", '{"a": NaN}', "InvalidMetadata"),
        ("X-Metadata", '{"a": Infinity}', "InvalidMetadata"),
        ("X-Metadata", '{"a": "\\ud800"}', "InvalidMetadata"),
        ("X-Tags", "[" * 3000, "InvalidTag"),
        ("X-Tags", '{"a": "\\ud800"}', "InvalidTag"),
    ],
)
async def test_hostile_metadata_headers(
    client: httpx.AsyncClient, settings: Settings, header: str, value: str, code: str
) -> None:
    r = await client.put("/api/v1/objects/artifacts/h.txt", content=b"1", headers={header: value})
    assert_error(r, 400, code)
    assert stored_files(settings) == []


def test_absurd_max_file_size_is_a_config_error() -> None:
    from tfstorage.config import load_settings
    from tfstorage.errors import ConfigError

    with pytest.raises(ConfigError, match="MAX_FILE_SIZE"):
        load_settings(max_file_size="9" * 400)


@pytest.mark.parametrize(
    "ctype",
    ["text/plain\r\nSet-Cookie: pwn=1", "text/plain; name=中", "nonsense", "a" * 300 + "/b"],
)
async def test_bad_content_types_are_refused(
    client: httpx.AsyncClient, settings: Settings, ctype: str
) -> None:
    r = await client.post(
        "/api/v1/upload",
        files={"file": ("a.txt", b"1")},
        data={"bucket": "artifacts", "content_type": ctype},
    )
    assert_error(r, 400, "InvalidArgument")
    assert stored_files(settings) == []
    ok = await client.put("/api/v1/objects/artifacts/ok.txt", content=b"1")
    r = await client.put(f"/api/v1/files/{ok.json()['file_id']}", json={"content_type": ctype})
    assert_error(r, 400, "InvalidArgument")
    assert (await client.get("/api/v1/download/artifacts/ok.txt")).status_code == 200


async def test_raw_put_with_a_bad_content_type_is_refused_before_reading(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    r = await client.put(
        "/api/v1/objects/artifacts/x.txt", content=b"1", headers={"content-type": "a\tb/c"}
    )
    assert_error(r, 400, "InvalidArgument")
    assert stored_files(settings) == []


async def test_curl_default_content_type_is_replaced_by_a_guess(client: httpx.AsyncClient) -> None:
    r = await client.put(
        "/api/v1/objects/artifacts/d.csv",
        content=b"1",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.json()["content_type"] == "text/csv"


async def test_a_form_slower_than_half_the_orphan_grace_is_refused(tmp_path: Path) -> None:
    from tests.api.conftest import ADMIN, make_settings
    from tfstorage.api.app import create_app

    settings = make_settings(tmp_path, orphan_grace_seconds=2)
    app = create_app(settings)

    async def slow_form():
        yield (
            b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n\r\nxyz\r\n'
            b'--B\r\nContent-Disposition: form-data; name="bucket"\r\n\r\narti'
        )
        await anyio.sleep(1.3)  # the file's blob is stored; the rest of the form dawdles
        yield b"facts\r\n--B--\r\n"

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=ADMIN) as c:
            r = await c.post(
                "/api/v1/upload",
                content=slow_form(),
                headers={"content-type": "multipart/form-data; boundary=B"},
            )
            assert_error(r, 408, "RequestTimeout")
            assert (await c.get("/api/v1/list/artifacts")).json()["objects"] == []
    assert stored_files(settings) == []


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


TRAVERSALS = [
    b"../../outside.txt",
    b"..%2f..%2foutside.txt",
    b"%2e%2e%2f%2e%2e%2foutside.txt",
    b"%252e%252e%252foutside.txt",  # double-encoded: a literal, harmless key
    b"..%5c..%5coutside.txt",
    b"%c0%ae%c0%ae%c0%afoutside.txt",
    b"%ef%bc%8e%ef%bc%8e%ef%bc%8foutside.txt",  # fullwidth look-alikes of ../
    b"/etc/passwd",
]


@pytest.mark.parametrize("target", TRAVERSALS, ids=lambda t: t[:20].decode())
async def test_traversal_writes_nothing_outside_and_reads_nothing_else(
    app: FastAPI, settings: Settings, tmp_path: Path, target: bytes
) -> None:
    before = _tree(tmp_path)
    routes = [
        ("PUT", b"/api/v1/objects/artifacts/"),
        ("GET", b"/api/v1/download/artifacts/"),
        ("DELETE", b"/api/v1/delete/artifacts/"),
        ("POST", b"/api/v1/restore/artifacts/"),
        ("GET", b"/api/v1/versions/artifacts/"),
        ("GET", b"/api/v1/files/"),
        ("GET", b"/api/v1/files/download/"),
        ("GET", b"/api/v1/list/"),
        ("GET", b"/download/"),
        ("PUT", b"/api/v1/objects/"),
    ]
    for method, prefix in routes:
        status, _, body = await send_raw(app, method, prefix + target, b"payload")
        if status == 200 and method == "PUT":
            # Only forms that decode to no traversal at all are stored, as literal keys
            # (the double-encoded "%2e%2e%2f", fullwidth look-alikes of "../").
            key = json.loads(body)["key"]
            assert ".." not in key.split("/") and "\\" not in key, key
        elif status not in (200, 404):
            # 307: Starlette's slash redirect for "//", which writes nothing either.
            assert status in (400, 405, 307), (method, prefix, status, body)
    after = _tree(tmp_path)
    new = {p for p in after - before if not p.startswith(("data/blobs/", "data/index.db"))}
    assert new == set()
    assert (
        not (tmp_path / "outside.txt").exists() and not (tmp_path.parent / "outside.txt").exists()
    )
