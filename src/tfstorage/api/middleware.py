"""Request ids: one per request, in logs, error bodies and the X-Request-ID header.

A plain ASGI middleware rather than BaseHTTPMiddleware, which would put every
streamed body chunk through an extra task and queue.
"""

from __future__ import annotations

import json
import logging
import secrets
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tfstorage.errors import RequestTooLarge

log = logging.getLogger("tfstorage.access")


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = request_id
        start = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log.debug(
                "%s %s %s %.1fms rid=%s",
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - start) * 1000,
                request_id,
            )


# Routes whose bodies stream to the blob store (bounded by MAX_FILE_SIZE instead).
_STREAMING_PREFIXES = ("/api/v1/objects/", "/api/v1/upload", "/api/v1/files/upload", "/upload")
MAX_SMALL_BODY = 1024 * 1024


class BodyLimitMiddleware:
    """Every other body (JSON) is read whole by FastAPI: bound it to 1 MiB."""

    def __init__(self, app: ASGIApp, limit: int = MAX_SMALL_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope["path"]).startswith(_STREAMING_PREFIXES):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _too_large(scope, send, self.limit)
                return
        # Read the (small) body here, so an oversized one is answered with 413 before
        # the app sees it; the app then gets it replayed.
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([], message), send)
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.limit:
                await _too_large(scope, send, self.limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(chunks, None, receive), send)


def _replay(chunks: list[bytes], final: Message | None, receive: Receive | None = None) -> Receive:
    body = b"".join(chunks)
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if final is not None:
            return final
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        assert receive is not None
        return await receive()  # after the body: wait for the disconnect, as the server would

    return replay


async def _too_large(scope: Scope, send: Send, limit: int) -> None:
    request_id = scope.get("state", {}).get("request_id", "")
    body = json.dumps(
        {
            "error": f"request bodies are limited to {limit} bytes",
            "code": RequestTooLarge.code,
            "request_id": request_id,
        }
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
