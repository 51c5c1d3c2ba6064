"""One S3 request as the operations see it: who signed it, which bucket and key it names."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field

from starlette.requests import Request

from tfstorage.domain.caller import Caller
from tfstorage.errors import InvalidRequest
from tfstorage.s3api import sigv4
from tfstorage.s3api.body import object_body
from tfstorage.service.storage import Storage


@dataclass
class S3Request:
    http: Request
    storage: Storage
    caller: Caller
    auth: sigv4.Authenticated | None
    bucket: str  # "" for the service (ListBuckets)
    key: str  # "" for a bucket
    request_id: str
    query: dict[str, str] = field(default_factory=dict)  # decoded; the first of repeats
    _headers: dict[str, str] | None = field(default=None, init=False, repr=False)
    _lower: dict[str, str] | None = field(default=None, init=False, repr=False)

    @property
    def method(self) -> str:
        return self.http.method

    def header(self, name: str) -> str | None:
        """The first value of a header, as Starlette's `headers.get` gives it. An
        operation asks for a dozen or two: each of those scanned the whole list."""
        headers = self._headers
        if headers is None:
            headers = {}
            for key, value in self.http.scope["headers"]:
                headers.setdefault(key.decode("latin-1").lower(), value.decode("latin-1"))
            self._headers = headers
        return headers.get(name.lower())

    @property
    def lower_headers(self) -> dict[str, str]:
        """Every header by lowercase name, the last value of a repeated one (read only:
        built once per request)."""
        lower = self._lower
        if lower is None:
            lower = self._lower = {
                key.decode("latin-1").lower(): value.decode("latin-1")
                for key, value in self.http.scope["headers"]
            }
        return lower

    @property
    def client(self) -> str | None:
        return self.http.client.host if self.http.client else None

    def raw_body(self) -> AsyncIterator[bytes]:
        """The body as it arrives. BodyDeadlineMiddleware, in front of the S3 app as of
        the REST one, cuts off a body that stalls or trickles (RequestTimeout)."""
        return _chunks(self.http)

    def body(self) -> AsyncIterable[bytes]:
        """The object bytes: aws-chunked decoded, signatures and checksums verified."""
        return object_body(self.raw_body(), self.lower_headers, self.auth)

    def declared_size(self) -> int | None:
        """The object's size as the client declared it (the decoded one for aws-chunked)."""
        value = self.header("x-amz-decoded-content-length") or self.header("content-length")
        if value is None:
            return None
        if not value.isascii() or not value.isdigit() or len(value) > 19:
            raise InvalidRequest("Content-Length is not a number")
        return int(value)

    async def audit(self, action: str, **fields: object) -> None:
        await self.storage.access.record(
            self.caller, action, client=self.client, request_id=self.request_id, **fields
        )


async def _chunks(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk
