from __future__ import annotations

import os
import tracemalloc
from collections.abc import AsyncIterator, Iterable, Sequence
from itertools import cycle
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from starlette.requests import ClientDisconnect

from tfstorage import formdata
from tfstorage.errors import (
    IncompleteBody,
    InvalidRequest,
    MalformedMultipart,
    RequestTooLarge,
)
from tfstorage.formdata import MultipartStream, Part, PartHeaders

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

BOUNDARY = "tfs-Boundary.0123456789"
CHUNK_SIZES = [1, 7, 64 * 1024, None]  # None: the whole body in one chunk

Parsed = list[tuple[PartHeaders, bytes]]


def encode(
    files: Sequence[tuple[str, Any]] = (),
    data: dict[str, Any] | None = None,
    boundary: str = BOUNDARY,
) -> tuple[bytes, str]:
    """A body and its Content-Type from httpx's real multipart encoder."""
    request = httpx.Request(
        "POST",
        "http://x",
        data=data or {},
        files=list(files),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    return request.read(), request.headers["Content-Type"]


async def feed(body: bytes, size: int | Iterable[int] | None) -> AsyncIterator[bytes]:
    if size is None:
        yield body
        return
    sizes = cycle([size]) if isinstance(size, int) else cycle(size)
    i = 0
    while i < len(body):
        n = next(sizes)
        yield body[i : i + n]
        i += n


async def parse(
    body: bytes, content_type: str, size: int | Iterable[int] | None = None, **limits: int
) -> Parsed:
    out: Parsed = []
    async for part in MultipartStream(feed(body, size), content_type, **limits):
        data = bytearray()
        async for chunk in part:
            assert isinstance(chunk, bytes)
            data += chunk
        out.append((part.headers, bytes(data)))
    return out


def raw_body(*parts: bytes, boundary: str = BOUNDARY, close: bool = True) -> bytes:
    """A hand-built body, for headers no encoder produces."""
    b = boundary.encode()
    out = b"".join(b"--" + b + b"\r\n" + p + b"\r\n" for p in parts)
    return out + (b"--" + b + b"--\r\n" if close else b"")


CT = f"multipart/form-data; boundary={BOUNDARY}"

TRICKY = (
    b"\r\n--"
    + BOUNDARY[:-1].encode()
    + b"X\r\n--\r\n\r\n"
    + b"--"
    + BOUNDARY[:5].encode()
    + bytes(range(256))
    + b"\r\n-\r\r\n\r\n--"
    + BOUNDARY[:-2].encode()
)


@pytest.mark.parametrize("size", CHUNK_SIZES)
async def test_fields_and_files_round_trip(size: int | None) -> None:
    big = os.urandom(30_000) + b"\r\n--" + BOUNDARY.encode()[:-1]
    body, ct = encode(
        data={"title": "héllo wörld", "empty": ""},
        files=[
            ("raw", (None, b"\xff\x00binary field")),
            ("file", ("tricky.bin", TRICKY, "application/octet-stream")),
            ("file", ("empty.txt", b"", "text/plain")),
            ("file", ("données 数据 📦.tar", big, "application/x-tar")),
            ("file", ("ends-in-cr.bin", b"data\r")),
        ],
    )
    parts = await parse(body, ct, size)
    assert parts == [
        (PartHeaders("title", None, None), "héllo wörld".encode()),
        (PartHeaders("empty", None, None), b""),
        (PartHeaders("raw", None, None), b"\xff\x00binary field"),
        (PartHeaders("file", "tricky.bin", "application/octet-stream"), TRICKY),
        (PartHeaders("file", "empty.txt", "text/plain"), b""),
        (PartHeaders("file", "données 数据 📦.tar", "application/x-tar"), big),
        (PartHeaders("file", "ends-in-cr.bin", "application/octet-stream"), b"data\r"),
    ]


@pytest.mark.parametrize("size", CHUNK_SIZES)
async def test_rfc5987_filename_star(size: int | None) -> None:
    body = raw_body(
        b'Content-Disposition: form-data; name="file"; filename="fallback.txt"; '
        b"filename*=UTF-8''%E2%82%AC%20rates.txt\r\nContent-Type: text/plain\r\n\r\nabc",
        b"Content-Disposition: form-data; name=\"only\"; filename*=utf-8''na%C3%AFve.csv\r\n\r\n",
        b"Content-Disposition: form-data; name=\"cont\"; filename*0*=UTF-8''%C3%A9; "
        b'filename*1="t\xc3\xa9.bin"\r\n\r\nx',
    )
    parts = await parse(body, CT, size)
    assert [(h.name, h.filename, h.content_type, d) for h, d in parts] == [
        ("file", "€ rates.txt", "text/plain", b"abc"),
        ("only", "naïve.csv", None, b""),
        ("cont", "été.bin", None, b"x"),
    ]


async def test_filename_star_with_bad_utf8_is_malformed() -> None:
    body = raw_body(b"Content-Disposition: form-data; name=f; filename*=UTF-8''%FF\r\n\r\nx")
    with pytest.raises(MalformedMultipart):
        await parse(body, CT)


async def test_quoted_and_unquoted_parameters() -> None:
    body = raw_body(
        b'content-disposition: form-data; name=plain; filename="a;b \\"c\\".txt"\r\n'
        b"content-type: text/csv; charset=utf-8\r\n\r\nx"
    )
    for ct in (
        f'multipart/form-data; boundary="{BOUNDARY}"',
        f"Multipart/Form-Data;boundary={BOUNDARY}",
    ):
        parts = await parse(body, ct)
        assert parts == [(PartHeaders("plain", 'a;b "c".txt', "text/csv; charset=utf-8"), b"x")]


async def test_header_text_is_utf8_or_else_latin1() -> None:
    body = raw_body(
        b'Content-Disposition: form-data; name="caf\xc3\xa9"; filename="\xe9t\xe9.txt"\r\n\r\nx'
    )
    assert await parse(body, f'multipart/form-data; boundary="{BOUNDARY}"') == [
        (PartHeaders("café", "été.txt", None), b"x")
    ]


@pytest.mark.parametrize(
    "content_type",
    [
        "",
        "text/plain",
        "multipart/form-data",
        "multipart/form-data; charset=utf-8",
        "multipart/mixed; boundary=abc",
        "multipart/form-data; boundary=",
        'multipart/form-data; boundary=""',
        "multipart/form-data; boundary=has\rcr",
        'multipart/form-data; boundary="ends-in-space "',
        "multipart/form-data; boundary=bad<char>",
        "multipart/form-data; boundary=" + "a" * 257,
        "multipart/form-data; boundary=non-latin-€",
    ],
)
async def test_bad_content_type(content_type: str) -> None:
    with pytest.raises(MalformedMultipart):
        MultipartStream(feed(b"", None), content_type)


@pytest.mark.parametrize(
    "body",
    [
        b"garbage",
        b"--wrong-boundary\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--wrong--\r\n",
        b"--" + BOUNDARY.encode() + b"XYZ\r\n",
        raw_body(b"Content-Disposition: form-data; name=a\r\nbad header line\r\n\r\nx"),
        raw_body(b"Content-Disposition: form-data; name=a\r\n: no name\r\n\r\nx"),
        raw_body(b"Content-Type: text/plain\r\n\r\nno disposition"),
        raw_body(b"Content-Disposition: attachment; name=a\r\n\r\nx"),
        raw_body(b"Content-Disposition: form-data; filename=a.txt\r\n\r\nx"),
        raw_body(
            b"Content-Disposition: form-data; name=a\r\n"
            b"Content-Disposition: form-data; name=b\r\n\r\nx"
        ),
    ],
)
@pytest.mark.parametrize("size", [1, None])
async def test_malformed_bodies(body: bytes, size: int | None) -> None:
    with pytest.raises(MalformedMultipart):
        await parse(body, CT, size)


async def test_empty_multipart_has_no_parts() -> None:
    assert await parse(b"--" + BOUNDARY.encode() + b"--\r\n", CT) == []


async def test_preamble_and_epilogue_are_ignored() -> None:
    body = b"\r\npreamble text\r\n" + raw_body(b"Content-Disposition: form-data; name=a\r\n\r\nx")
    body += b"epilogue that is never parsed"
    for size in (1, None):
        assert await parse(body, CT, size) == [(PartHeaders("a", None, None), b"x")]


async def test_body_is_not_read_past_the_closing_boundary() -> None:
    served: list[bytes] = []
    closed = False

    async def body() -> AsyncIterator[bytes]:
        nonlocal closed
        try:
            yield raw_body(b"Content-Disposition: form-data; name=a\r\n\r\nx")
            while True:
                served.append(b"junk")
                yield b"junk"
        finally:
            closed = True

    names = [part.name async for part in MultipartStream(body(), CT)]
    assert names == ["a"]
    assert served == []
    assert closed


# -- truncation ---------------------------------------------------------------------------


async def test_truncated_body_never_yields_a_short_file() -> None:
    body, ct = encode(
        data={"meta": "{}"},
        files=[("file", ("a.bin", b"0123\r\n--" + BOUNDARY.encode()[:4] + b"\r\n" + b"z" * 40))],
    )
    assert body.endswith(b"--\r\n")
    for size in (1, 7, None):
        for cut in range(len(body) - 2):  # the trailing CRLF after "--boundary--" is optional
            with pytest.raises((IncompleteBody, MalformedMultipart)):
                await parse(body[:cut], ct, size)
        for cut in (len(body) - 2, len(body) - 1):
            assert len(await parse(body[:cut], ct, size)) == 2


async def test_truncation_inside_file_data_fails_the_part_reader() -> None:
    content = os.urandom(100_000)
    body, ct = encode(files=[("file", ("a.bin", content))])
    cut = body.index(content) + 50_000
    stream = MultipartStream(feed(body[:cut], 4096), ct)
    async for part in stream:
        received = 0
        with pytest.raises(IncompleteBody):
            async for chunk in part:
                received += len(chunk)
        assert received <= 50_000
        break
    # The stream stays failed rather than pretending the body ended cleanly.
    with pytest.raises(IncompleteBody):
        await anext(aiter(stream))


async def test_client_disconnect_is_incomplete_body() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield raw_body(
            b"Content-Disposition: form-data; name=f; filename=x\r\n\r\nabc", close=False
        )
        raise ClientDisconnect()

    with pytest.raises(IncompleteBody):
        async for part in MultipartStream(body(), CT):
            async for _ in part:
                pass


# -- limits -------------------------------------------------------------------------------


async def counting(head: bytes, filler: bytes, tally: list[int]) -> AsyncIterator[bytes]:
    """`head`, then `filler` forever, counting what was served: limits must stop it."""
    yield head
    while True:
        tally.append(len(filler))
        yield filler


async def test_too_many_parts() -> None:
    body, ct = encode(files=[(f"f{i}", (None, b"v")) for i in range(11)])
    assert len(await parse(body, ct, max_parts=11)) == 11
    with pytest.raises(RequestTooLarge):
        await parse(body, ct, max_parts=10)


async def test_oversized_field_fails_promptly() -> None:
    body, ct = encode(files=[("f", (None, b"x" * 100))])
    assert len(await parse(body, ct, max_field_size=100)) == 1
    with pytest.raises(RequestTooLarge):
        await parse(body, ct, max_field_size=99)

    tally: list[int] = []
    head = raw_body(b"Content-Disposition: form-data; name=f\r\n\r\n", close=False)[:-2]
    with pytest.raises(RequestTooLarge):
        await parse_stream(MultipartStream(counting(head, b"y" * 1000, tally), CT))
    assert sum(tally) <= 64 * 1024 + 1000


async def test_files_are_not_limited_by_field_size() -> None:
    body, ct = encode(files=[("f", ("a.bin", b"x" * 1000))])
    assert (await parse(body, ct, max_field_size=10))[0][1] == b"x" * 1000


async def test_read_text() -> None:
    body, ct = encode(
        files=[("a", (None, "zß€".encode())), ("b", (None, b"\xff")), ("c", (None, b"12345"))]
    )
    stream = aiter(MultipartStream(feed(body, 1), ct))
    assert await (await anext(stream)).read_text(limit=6) == "zß€"
    with pytest.raises(InvalidRequest):
        await (await anext(stream)).read_text(limit=10)
    with pytest.raises(RequestTooLarge):
        await (await anext(stream)).read_text(limit=4)


async def test_oversized_headers_fail_promptly() -> None:
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(10))
    body = raw_body(b"Content-Disposition: form-data; name=a\r\n" + many + b"\r\nx")
    assert len(await parse(body, CT)) == 1
    with pytest.raises(RequestTooLarge):
        await parse(body, CT, max_header_size=1000)

    # One endless header line.
    tally: list[int] = []
    head = b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: form-data; name="
    with pytest.raises(RequestTooLarge):
        await parse_stream(MultipartStream(counting(head, b"a" * 1000, tally), CT))
    assert sum(tally) <= 16 * 1024 + 1000

    # Endless tiny header lines.
    tally = []
    head = b"--" + BOUNDARY.encode() + b"\r\n"
    with pytest.raises(RequestTooLarge):
        await parse_stream(MultipartStream(counting(head, b"A: b\r\n", tally), CT))
    assert sum(tally) <= 16 * 1024


async def test_huge_preamble_fails_promptly() -> None:
    tally: list[int] = []
    with pytest.raises(MalformedMultipart):
        await parse_stream(MultipartStream(counting(b"\r\n", b"preamble " * 100, tally), CT))
    assert sum(tally) <= 64 * 1024 + 900


@pytest.mark.parametrize("size", [1, 2, 5, 7, 64, None])
@pytest.mark.parametrize("line_break", [b"\r\n", b"\n"])
async def test_preamble_limit_is_exact_whatever_the_chunking(
    size: int | None, line_break: bytes
) -> None:
    part = raw_body(b"Content-Disposition: form-data; name=a\r\n\r\nx")
    for preamble in (b"", b"p" * 30, b"\r\n" * 15, b"-" * 29 + b"\r"):
        body = preamble + line_break + part if preamble else part
        assert await parse(body, CT, size, max_preamble=30) == [
            (PartHeaders("a", None, None), b"x")
        ]
    with pytest.raises(MalformedMultipart):
        await parse(b"p" * 31 + line_break + part, CT, size, max_preamble=30)


@pytest.mark.parametrize("size", [1, 3, None])
async def test_body_without_a_boundary(size: int | None) -> None:
    with pytest.raises(IncompleteBody):
        await parse(b"", CT, size)
    with pytest.raises(IncompleteBody):  # cut inside the first boundary
        await parse(b"pre\r\n--" + BOUNDARY.encode()[:5], CT, size)
    with pytest.raises(MalformedMultipart):
        await parse(b"no boundary here\r\n", CT, size)


async def parse_stream(stream: MultipartStream) -> None:
    async for part in stream:
        async for _ in part:
            pass


# -- consumption order --------------------------------------------------------------------


async def test_unread_parts_are_skipped() -> None:
    body, ct = encode(
        files=[("a", ("a", b"A" * 5000)), ("b", (None, b"B")), ("c", ("c", b"C" * 10))]
    )
    stream = MultipartStream(feed(body, 7), ct)
    seen: list[Part] = []
    async for part in stream:
        seen.append(part)
        if part.name == "a":
            assert await anext(aiter(part)) == b"A"  # read a little, leave the rest
        if part.name == "c":
            assert await part.read_text(100) == "C" * 10
    assert [p.name for p in seen] == ["a", "b", "c"]
    with pytest.raises(RuntimeError):
        await anext(aiter(seen[0]))
    # A fully read part is simply exhausted.
    with pytest.raises(StopAsyncIteration):
        await anext(aiter(seen[2]))
    # So is the stream, however often it is asked.
    with pytest.raises(StopAsyncIteration):
        await anext(aiter(stream))


def test_public_api() -> None:
    assert sorted(formdata.__all__) == ["MultipartStream", "Part", "PartHeaders"]


# -- properties ---------------------------------------------------------------------------

_b = BOUNDARY.encode()
_tokens = st.sampled_from(
    [
        b"\r",
        b"\n",
        b"\r\n",
        b"-",
        b"--",
        b"\r\n--",
        b"\r\n\r\n",
        *(_b[:k] for k in (1, 5, len(_b) - 1)),
    ]
)
_content = st.lists(st.one_of(_tokens, st.binary(max_size=30)), max_size=12).map(b"".join)
_name = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters='"\\'), max_size=12
)
_part = st.tuples(_name, st.none() | _name.filter(bool), _content)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parts=st.lists(_part, min_size=1, max_size=5),
    sizes=st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=8),
)
async def test_round_trip_property(
    parts: list[tuple[str, str | None, bytes]], sizes: list[int]
) -> None:
    for _, _, content in parts:
        assume(b"\r\n--" + _b not in b"\r\n" + content)
    body, ct = encode(
        files=[(n, (f, c, "application/octet-stream" if f else None)) for n, f, c in parts]
    )
    parsed = await parse(body, ct, sizes)
    assert [(h.name, h.filename, d) for h, d in parsed] == parts


# -- memory -------------------------------------------------------------------------------


async def test_memory_is_bounded_by_one_chunk() -> None:
    head, ct = encode(
        data={"meta": "{}"}, files=[("file", ("big.bin", b"@"))], boundary=os.urandom(16).hex()
    )
    head, tail = head.split(b"@")
    block = os.urandom(64 * 1024)  # random, so it holds CRs that look like boundary starts
    blocks = 200 * 16  # 200 MiB

    async def body() -> AsyncIterator[bytes]:
        yield head
        for _ in range(blocks):
            yield bytes(memoryview(block))  # a fresh chunk each time, as from a socket
        yield tail

    tracemalloc.start()
    try:
        baseline, _ = tracemalloc.get_traced_memory()
        received = 0
        async for part in MultipartStream(body(), ct):
            async for chunk in part:
                received += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == 2 + blocks * len(block)
    assert peak - baseline < 8 * 1024 * 1024
