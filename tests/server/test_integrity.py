"""Bytes that rot on disk are never served as a clean response."""

from __future__ import annotations

import hashlib
import os
import random

import httpx
import pytest

from tests.server.conftest import ServerFactory
from tests.stored_blobs import blob_file_paths

pytestmark = pytest.mark.server


def test_a_flipped_byte_aborts_the_download(make_server: ServerFactory) -> None:
    server = make_server({"MAX_FILE_SIZE": "64MB"})
    data = random.Random(7).randbytes(3 * 1024 * 1024 + 123)
    with server.client() as client:
        r = client.put("/api/v1/objects/artifacts/model.bin", content=data)
        assert r.status_code == 200
        [blob] = blob_file_paths(server.data_dir / "blobs")  # too big to be packed
        with open(blob, "r+b") as f:
            f.seek(len(data) // 2)
            byte = f.read(1)
            f.seek(len(data) // 2)
            f.write(bytes([byte[0] ^ 0x01]))
            f.flush()
            os.fsync(f.fileno())

        # A range over intact blocks is verified block by block, and served.
        part = client.get("/api/v1/download/artifacts/model.bin", headers={"Range": "bytes=0-99"})
        assert part.status_code == 206 and part.content == data[:100]

        received = bytearray()
        with (
            pytest.raises(httpx.HTTPError),  # the connection ends before Content-Length
            client.stream("GET", "/api/v1/download/artifacts/model.bin") as response,
        ):
            assert response.status_code == 200
            for chunk in response.iter_bytes():
                received += chunk
        # Checked block by block (1 MiB CRC32Cs): the blocks before the flipped byte
        # arrive, not one byte of its block.
        mib = 1024 * 1024
        assert bytes(received) == data[: len(data) // 2 // mib * mib]
        assert hashlib.sha256(received).hexdigest() != r.json()["sha256"]

        # The failed download marked the blob in the index: from now on every read of it,
        # ranges too, is refused before any byte is sent.
        for headers in ({}, {"Range": "bytes=0-99"}):
            refused = client.get("/api/v1/download/artifacts/model.bin", headers=headers)
            assert refused.status_code == 500 and refused.json()["code"] == "ObjectCorrupted"
        # The untouched service keeps answering.
        assert client.get("/health").status_code == 200


def test_a_flipped_byte_aborts_a_ranged_download_before_its_block(
    make_server: ServerFactory,
) -> None:
    """Over a real socket: the 206 starts, the blocks before the damaged one arrive, and
    the connection ends before Content-Length; not one byte of the bad block is sent."""
    server = make_server({"MAX_FILE_SIZE": "64MB"})  # the default 1 MiB blocks
    mib = 1024 * 1024
    data = random.Random(8).randbytes(3 * mib + 123)
    with server.client() as client:
        assert client.put("/api/v1/objects/artifacts/r.bin", content=data).status_code == 200
        [blob] = blob_file_paths(server.data_dir / "blobs")  # too big to be packed
        with open(blob, "r+b") as f:
            f.seek(2 * mib + 500)  # block 2
            byte = f.read(1)
            f.seek(2 * mib + 500)
            f.write(bytes([byte[0] ^ 0x01]))
        start, end = 1000, 2 * mib + mib // 2
        received = bytearray()
        with (
            pytest.raises(httpx.HTTPError),
            client.stream(
                "GET", "/api/v1/download/artifacts/r.bin", headers={"Range": f"bytes={start}-{end}"}
            ) as response,
        ):
            assert response.status_code == 206
            assert response.headers["content-length"] == str(end - start + 1)
            for chunk in response.iter_bytes():
                received += chunk
        assert bytes(received) == data[start : 2 * mib]
        refused = client.get("/api/v1/download/artifacts/r.bin", headers={"Range": "bytes=0-9"})
        assert refused.status_code == 500 and refused.json()["code"] == "ObjectCorrupted"
