"""Request ids, the access log and the HTTP metrics: one plain ASGI middleware.

Every request gets an id (in logs, error bodies and the X-Request-ID header), one log
line (`tfstorage.access`: method, route template, status, body bytes both ways,
duration, the token's name, the client) and one observation of the latency histogram.
A plain ASGI middleware rather than BaseHTTPMiddleware, which would put every streamed
body chunk through an extra task and queue.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tfstorage.domain.ids import random_hex
from tfstorage.errors import RequestTooLarge

log = logging.getLogger("tfstorage.access")

UNMATCHED_ROUTE = "unmatched"  # no route matched (404/405): one label for all such paths
# Any token is a method on the wire: others share one label, not a series each.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = random_hex(8)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        start = time.perf_counter()
        status = 0
        bytes_in = bytes_out = 0

        async def counting_receive() -> Message:
            nonlocal bytes_in
            message = await receive()
            if message["type"] == "http.request":
                bytes_in += len(message.get("body", b""))
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, bytes_out
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                bytes_out += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            route = route_template(scope)
            status_class = f"{status // 100}xx" if status else "none"
            metrics = _metrics(scope)
            if metrics is not None:
                method = scope["method"] if scope["method"] in _METHODS else "other"
                metrics.observe_request(route, method, status_class, seconds, bytes_in, bytes_out)
            if log.isEnabledFor(logging.INFO):  # at WARNING and up, no line to build
                _log_request(scope, state, route, request_id, status, seconds, bytes_in, bytes_out)


def _log_request(
    scope: Scope,
    state: dict[str, Any],
    route: str,
    request_id: str,
    status: int,
    seconds: float,
    bytes_in: int,
    bytes_out: int,
) -> None:
    client = scope.get("client")
    fields: dict[str, Any] = {
        "request_id": request_id,
        "method": scope["method"],
        "route": route,
        "path": scope["path"],
        "status": status,
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "duration_ms": round(seconds * 1000, 2),
        "token": state.get("caller_name"),  # the token's name, never its secret
        "client": client[0] if client else None,
        "pid": os.getpid(),
    }
    log.info(
        "%s %s %s %.1fms in=%d out=%d token=%s client=%s rid=%s",
        scope["method"],
        scope["path"],
        status,
        seconds * 1000,
        bytes_in,
        bytes_out,
        fields["token"] or "-",
        fields["client"] or "-",
        request_id,
        extra={"request": fields},
    )


def route_template(scope: Scope) -> str:
    """The matched route's path template ("/api/v1/download/{bucket}/{key:objkey}")."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


def _metrics(scope: Scope) -> Any:
    app = scope.get("app")
    storage = getattr(getattr(app, "state", None), "storage", None)
    return getattr(getattr(storage, "ctx", None), "metrics", None)


# Routes whose bodies stream to the blob store (bounded by MAX_FILE_SIZE instead).
_STREAMING_PREFIXES = ("/api/v1/objects/", "/api/v1/upload", "/api/v1/files/upload", "/upload")
# Resumable upload parts stream too; the rest of /api/v1/uploads is small JSON.
_PART_UPLOAD = re.compile(r"/api/v1/uploads/[^/]+/parts/[^/]+")


def _streams(path: str) -> bool:
    if path.startswith("/api/v1/uploads"):
        return _PART_UPLOAD.fullmatch(path) is not None
    return path.startswith(_STREAMING_PREFIXES)


MAX_SMALL_BODY = 1024 * 1024


class BodyLimitMiddleware:
    """Every other body (JSON) is read whole by FastAPI: bound it to 1 MiB."""

    def __init__(self, app: ASGIApp, limit: int = MAX_SMALL_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _streams(str(scope["path"])):
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
    message = f"request bodies are limited to {limit} bytes"
    await send_error(scope, send, 413, RequestTooLarge.code, message)


async def send_error(
    scope: Scope,
    send: Send,
    status: int,
    code: str,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """The JSON error body of errors.py, for answers given before the app runs."""
    request_id = scope.get("state", {}).get("request_id", "")
    body = json.dumps({"error": message, "code": code, "request_id": request_id}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": head + (headers or [])})
    await send({"type": "http.response.body", "body": body})
