"""A transport that records what the SDK really sends to the app."""

from __future__ import annotations

import httpx
from fastapi import FastAPI


class CountingTransport(httpx.AsyncBaseTransport):
    """The app's ASGI transport, recording (method, path, body bytes) of each request."""

    def __init__(self, app: FastAPI) -> None:
        self.inner = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        self.seen: list[tuple[str, str, int]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        self.seen.append((request.method, request.url.path, len(body)))
        return await self.inner.handle_async_request(request)

    def part_bytes(self) -> int:
        return sum(n for m, p, n in self.seen if m == "PUT" and "/parts/" in p)
