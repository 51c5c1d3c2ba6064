"""Deadlines on request bodies: an idle timeout and a minimum rate, one timer per read.

A body that sends nothing for BODY_TIMEOUT_SECONDS is cut off; so is one trickled just
fast enough never to be idle that long: after BODY_GRACE_SECONDS it must have arrived at
BODY_MIN_RATE bytes per second on average, and one with a declared Content-Length L must
be complete within max(grace, L / rate). Only time spent waiting for the client counts:
a blob store slow to take the bytes (which stops uvicorn reading) is not the client's
fault. Either is answered
408 `RequestTimeout` with `Connection: close`. The timeout is raised from the app's
`receive`, so a streaming upload discards what it staged (nothing stored); a JSON body
read whole by BodyLimitMiddleware is answered here.
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
    def __init__(
        self, app: ASGIApp, *, idle_seconds: float, min_rate: int, grace_seconds: float
    ) -> None:
        self.app = app
        self.idle = idle_seconds if idle_seconds > 0 else math.inf
        self.min_rate = min_rate
        self.grace = grace_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        has_body = (declared or 0) > 0 or _chunked(scope)
        waited = 0.0  # seconds spent in receive, waiting for the client
        received = 0
        complete = False
        too_slow: BodyTooSlow | None = None
        started = False

        def rate_budget() -> float:
            # Declared: the whole body within this much waiting. Chunked: the average rate
            # so far, which fails at received / rate (never within the grace period).
            if self.min_rate <= 0:
                return math.inf
            expected = declared if declared is not None else received
            return max(self.grace, expected / self.min_rate) - waited

        async def timed_receive() -> Message:
            nonlocal received, complete, too_slow, waited
            if complete:
                return await receive()  # after the body: the disconnect, whenever it comes
            message: Message | None = None
            rate_left = rate_budget()
            began = time.monotonic()
            try:
                with anyio.move_on_after(max(0.0, min(self.idle, rate_left))):
                    message = await receive()
            finally:
                waited += time.monotonic() - began
            if message is None:
                if self.idle < rate_left:
                    explanation = f"no body bytes received for {self.idle:g} seconds"
                else:
                    explanation = self._explain(declared, received, waited)
                too_slow = BodyTooSlow(explanation)
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
                # Whatever answers before the body was read (a timeout, or an early
                # refusal such as a 401: a client waiting on `Expect: 100-continue` then
                # never sends it), the connection cannot carry another request: the next
                # one would be read as the rest of this body.
                unread = too_slow is not None or (has_body and not complete)
                if unread and _CLOSE not in headers:
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


def _chunked(scope: Scope) -> bool:
    return any(
        name == b"transfer-encoding" and b"chunked" in value.lower()
        for name, value in scope.get("headers", [])
    )


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length" and value.isdigit():
            return int(value)
    return None
