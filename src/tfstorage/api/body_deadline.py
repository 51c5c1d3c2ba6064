"""A minimum body rate: a body trickled slowly enough never to trip the idle timeout
(BODY_TIMEOUT_SECONDS) still cannot hold a connection, an upload or its memory for ever.

After BODY_GRACE_SECONDS, a body must have arrived at BODY_MIN_RATE bytes per second on
average since the request began; one with a declared Content-Length L must be complete
by max(grace, L / rate). Otherwise the request is answered 408 `RequestTimeout` with
`Connection: close`: the route sees the timeout raised from its receive, so a streaming
upload discards what it staged (nothing stored), exactly as for the idle timeout.
"""

from __future__ import annotations

import math
import time

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tfstorage.api.middleware import send_error
from tfstorage.errors import RequestTimeout

_CLOSE = (b"connection", b"close")


class BodyTooSlow(RequestTimeout):
    """Raised from `receive` when the body misses its deadline."""

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Connection": "close"})


class BodyDeadlineMiddleware:
    def __init__(self, app: ASGIApp, *, min_rate: int, grace_seconds: float) -> None:
        self.app = app
        self.min_rate = min_rate
        self.grace = grace_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.min_rate <= 0:
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        start = time.monotonic()
        received = 0
        complete = False
        too_slow: BodyTooSlow | None = None
        started = False

        def deadline() -> float:
            # Declared: the whole body by then. Chunked: the average rate so far, which
            # fails at received / rate (never before the grace period ends).
            expected = declared if declared is not None else received
            return start + max(self.grace, expected / self.min_rate)

        async def timed_receive() -> Message:
            nonlocal received, complete, too_slow
            if complete:
                return await receive()  # after the body: the disconnect, whenever it comes
            message: Message | None = None
            with anyio.move_on_after(max(0.0, deadline() - time.monotonic())):
                message = await receive()
            if message is None:
                too_slow = BodyTooSlow(self._explain(declared, received, time.monotonic() - start))
                raise too_slow
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
            return message

        async def send_closing(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = message.get("headers", [])
                if too_slow is not None and _CLOSE not in headers:
                    # Whatever answers the timeout, the rest of the body is not read:
                    # the connection cannot carry another request.
                    message = {**message, "headers": [*headers, _CLOSE]}
            await send(message)

        try:
            await self.app(scope, timed_receive, send_closing)
        except BodyTooSlow as exc:
            # Raised outside the app's exception handlers (e.g. by BodyLimitMiddleware
            # reading a JSON body): answer here.
            if started:
                raise
            await send_error(scope, send, exc.status, exc.code, exc.message, [_CLOSE])

    def _explain(self, declared: int | None, received: int, elapsed: float) -> str:
        rate = f"{self.min_rate} bytes/s"
        if declared is not None:
            limit = max(self.grace, declared / self.min_rate)
            return (
                f"the body ({declared} bytes) was not received within {math.ceil(limit)}"
                f" seconds (at least {rate}); {received} bytes came"
            )
        return f"the body arrived slower than {rate} ({received} bytes in {elapsed:.0f} s)"


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length" and value.isdigit():
            return int(value)
    return None
