"""A deadline on request headers, added to uvicorn's two HTTP/1.1 protocols (which also
send each response in one piece: api/coalesced_writes.py).

uvicorn bounds the idle time between requests (`timeout_keep_alive`, which stops counting
at the next request's first byte) and, with h11, the header size
(`h11_max_incomplete_event_size`, 16 KiB), but not how long the headers take: a client
sending one byte a second holds its connection for ever. These subclasses start a
timer at a request's first byte; headers not complete within HEADER_TIMEOUT_SECONDS get
a 408 with `Connection: close` and the connection is closed. They are passed to uvicorn
as import strings (`http=`), so every worker process of WORKERS>1 loads them too; there
they also keep the workers' connections even (api/worker_balance.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from tfstorage.api.coalesced_writes import CoalescingTransport
from tfstorage.api.worker_balance import BalancedConnections
from tfstorage.domain.ids import random_hex

log = logging.getLogger(__name__)


def protocol_for(implementation: str) -> str:
    """The import string of the protocol class for HTTP_IMPLEMENTATION (auto|h11|httptools)."""
    if implementation == "auto":
        try:
            import httptools  # noqa: F401 - uvicorn's own choice when it is installed
        except ImportError:  # pragma: no cover - uvicorn[standard] installs it
            implementation = "h11"
        else:
            implementation = "httptools"
    names = {"h11": "H11WithHeaderDeadline", "httptools": "HttpToolsWithHeaderDeadline"}
    return f"{__name__}:{names[implementation]}"


def _configured_timeout() -> float:
    # Read once per process from the environment, like the app of every worker.
    from tfstorage.config import load_settings

    return load_settings().header_timeout_seconds


def _timeout_response(seconds: float) -> bytes:
    request_id = random_hex(8)
    body = json.dumps(
        {
            "error": f"the request headers were not received within {seconds:g} seconds",
            "code": "RequestTimeout",
            "request_id": request_id,
        }
    ).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n"
        f"x-request-id: {request_id}\r\n\r\n"
    )
    return head.encode() + body


class _HeaderDeadline:
    timeout: ClassVar[float | None] = None  # None: HEADER_TIMEOUT_SECONDS, read once
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    cycle: Any
    _header_timer: asyncio.TimerHandle | None = None

    def _start_header_deadline(self) -> None:
        cls = type(self)
        if cls.timeout is None:
            cls.timeout = _configured_timeout()
        if self._header_timer is None and cls.timeout > 0:
            self._header_timer = self.loop.call_later(cls.timeout, self._headers_too_slow)

    def _stop_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        client = self.transport.get_extra_info("peername")
        log.info("request headers not complete in time; closing the connection of %s", client)
        # A pipelined request trickling in while a response is being sent: just close.
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_timeout_response(type(self).timeout or 0))
        self.transport.close()


class H11WithHeaderDeadline(_HeaderDeadline, BalancedConnections, H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Flow control (set up above) keeps the real transport; writes go through this.
        self.transport = CoalescingTransport(transport, self.loop)  # type: ignore[assignment]
        self._connections_changed()

    def data_received(self, data: bytes) -> None:
        # IDLE: between requests, so these are the first bytes of the next one.
        if data and self.conn.their_state is h11.IDLE:
            self._start_header_deadline()
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._stop_header_deadline()  # the headers are complete (or refused)
        self._balance()  # a request's cycle starts its response on a later loop turn

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_deadline()
        super().connection_lost(exc)
        self._connections_changed()


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - uvicorn[standard] installs httptools
    pass
else:

    class HttpToolsWithHeaderDeadline(_HeaderDeadline, BalancedConnections, HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            # Flow control (set up above) keeps the real transport; writes go through this.
            self.transport = CoalescingTransport(transport, self.loop)  # type: ignore[assignment]
            self._connections_changed()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._start_header_deadline()

        def on_headers_complete(self) -> None:
            self._stop_header_deadline()
            super().on_headers_complete()
            self._balance()  # the cycle just made starts its response on a later loop turn

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_header_deadline()
            super().connection_lost(exc)
            self._connections_changed()
