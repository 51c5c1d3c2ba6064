"""The client side, from real clients: boto3 and botocore's signers, and AWS's chunk spec.

boto3 runs its whole request pipeline (serialisation, key encoding, checksums,
aws-chunked bodies, signing) and a `before-send` hook keeps the request instead of
putting it on the wire, so the tests see exactly the bytes boto3 would send.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.auth import BaseSigner
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.config import Config
from botocore.credentials import Credentials

from tfstorage.s3api.canonical import SignedRequest

# AWS's published example credentials (their documentation's test vectors use them).
ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
KEYS = {ACCESS_KEY: SECRET_KEY}


def lookup(access_key: str) -> str | None:
    return KEYS.get(access_key)


@dataclass(frozen=True)
class Sent:
    """One request as a client puts it on the wire."""

    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes

    def signed(self) -> SignedRequest:
        parts = urlsplit(self.url)
        headers = list(self.headers)
        if not any(k.lower() == "host" for k, _ in headers):
            # http.client adds Host from the URL, exactly as the signer assumed it.
            headers.append(("host", parts.netloc))
        return SignedRequest(self.method, parts.path, parts.query, headers)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def with_header(self, name: str, value: str | None) -> Sent:
        headers = [(k, v) for k, v in self.headers if k.lower() != name.lower()]
        if value is not None:
            headers.append((name, value))
        return replace(self, headers=headers)

    def lower_headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers}


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


class _NoBody:
    def stream(self, **kwargs: Any) -> Iterable[bytes]:
        yield b""

    def read(self, *args: Any, **kwargs: Any) -> bytes:
        return b""


@functools.cache
def _client(endpoint: str, region: str, presign: bool = False) -> tuple[Any, list[Sent]]:
    # One client per endpoint: building a boto3 client costs more than the tests using it.
    captured: list[Sent] = []

    def keep(request: Any, **kwargs: Any) -> AWSResponse:
        body = request.body
        if hasattr(body, "read"):
            body = body.read()
        headers = [(_text(k), _text(v)) for k, v in request.headers.items()]
        captured.append(Sent(request.method, request.url, headers, body or b""))
        return AWSResponse(request.url, 200, {"ETag": '"0"'}, _NoBody())

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            # boto3 still presigns with SigV2 unless told; every current tool says s3v4.
            signature_version="s3v4" if presign else None,
        ),
    )
    client.meta.events.register("before-send.s3.*", keep)
    return client, captured


def boto3_presigner(endpoint: str = "https://s3.example.test", region: str = "us-east-1") -> Any:
    return _client(endpoint, region, presign=True)[0]


def boto3_request(
    operation: str,
    *,
    endpoint: str = "https://s3.example.test",
    region: str = "us-east-1",
    **params: Any,
) -> Sent:
    """What boto3 sends for `operation(**params)`, captured before the socket."""
    client, captured = _client(endpoint, region)
    captured.clear()
    getattr(client, operation)(**params)
    assert len(captured) == 1
    return captured[0]


def botocore_sign(
    signer: type[BaseSigner],
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    region: str = "us-east-1",
    access_key: str = ACCESS_KEY,
    secret_key: str = SECRET_KEY,
    **signer_options: Any,
) -> Sent:
    """A request signed by one of botocore's signer classes directly."""
    request = AWSRequest(method=method, url=url, headers=headers or {}, data=body)
    signer(Credentials(access_key, secret_key), "s3", region, **signer_options).add_auth(request)  # type: ignore[call-arg]
    prepared = request.prepare()
    sent = [(_text(k), _text(v)) for k, v in prepared.headers.items()]
    return Sent(method, prepared.url, sent, body)


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    """`data` as an ASGI server would hand it over: pieces of `size` bytes."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def collect(stream: AsyncIterable[bytes]) -> bytes:
    return b"".join([piece async for piece in stream])


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def example_signing_key(date: str = "20130524", region: str = "us-east-1") -> bytes:
    key = _hmac(f"AWS4{SECRET_KEY}".encode(), date)
    for part in (region, "s3", "aws4_request"):
        key = _hmac(key, part)
    return key


@dataclass
class ChunkEncoder:
    """The client side of signed aws-chunked bodies, written from AWS's published spec
    ("Signature Calculations ... Transferring Payload in Multiple Chunks" and its
    trailing-headers page), independently of the server code under test."""

    key: bytes
    amz_date: str
    scope: str
    previous: str  # the seed signature at first

    def _sign(self, text: str) -> str:
        self.previous = hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()
        return self.previous

    def chunk(self, data: bytes) -> bytes:
        string_to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                self.amz_date,
                self.scope,
                self.previous,
                hashlib.sha256(b"").hexdigest(),
                hashlib.sha256(data).hexdigest(),
            ]
        )
        signature = self._sign(string_to_sign)
        tail = b"\r\n" if data else b""
        return f"{len(data):x};chunk-signature={signature}\r\n".encode() + data + tail

    def trailer(self, name: str, value: str) -> bytes:
        canonical = f"{name}:{value}\n"
        string_to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256-TRAILER",
                self.amz_date,
                self.scope,
                self.previous,
                hashlib.sha256(canonical.encode()).hexdigest(),
            ]
        )
        signature = self._sign(string_to_sign)
        return f"{name}:{value}\r\nx-amz-trailer-signature:{signature}\r\n\r\n".encode()

    def body(self, chunks: list[bytes], trailer: tuple[str, str] | None = None) -> bytes:
        encoded = b"".join(self.chunk(c) for c in [*chunks, b""])
        return encoded + (self.trailer(*trailer) if trailer else b"\r\n")
