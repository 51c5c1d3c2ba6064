"""A small HTTP reverse proxy for tests: a load balancer in front of several instances.

Round-robin over its upstreams, bodies streamed both ways, and what real ones do with
headers: the upstream's own Host (as nginx's `proxy_pass` does by default) plus
`X-Forwarded-For/-Proto/-Host` naming the client's view. Runs uvicorn in a thread, so
blocking clients and subprocesses can use it alike.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

import httpx
import uvicorn
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from tests.server.conftest import free_port

_HOP_BY_HOP = {
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"host",
}  # fmt: skip


class ReverseProxy:
    def __init__(self, upstreams: Sequence[str]) -> None:
        self.upstreams = list(upstreams)
        self.served: list[str] = []  # the upstream of each request, in order
        self._next = itertools.cycle(self.upstreams)
        self._lock = threading.Lock()
        self.port = free_port()
        self._client: httpx.AsyncClient | None = None
        config = uvicorn.Config(
            self._app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            interface="asgi3",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ReverseProxy:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline and self._thread.is_alive(), "proxy did not start"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # one upstream client, closed on the way out
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self._client = httpx.AsyncClient(timeout=httpx.Timeout(60.0))
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if self._client is not None:
                        await self._client.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert scope["type"] == "http"
        response = await self._forward(Request(scope, receive))
        await response(scope, receive, send)

    async def _forward(self, request: Request) -> Response:
        assert self._client is not None, "started without its lifespan"
        with self._lock:
            upstream = next(self._next)
            self.served.append(upstream)
        headers = [(k, v) for k, v in request.headers.raw if k.lower() not in _HOP_BY_HOP]
        headers += [
            (b"host", urlsplit(upstream).netloc.encode()),
            (b"x-forwarded-for", (request.client.host if request.client else "").encode()),
            (b"x-forwarded-proto", request.url.scheme.encode()),
            (b"x-forwarded-host", request.headers["host"].encode()),
        ]
        has_body = request.method not in ("GET", "HEAD")
        # The path and query exactly as the client sent them (a signed URL stays intact).
        query = request.scope["query_string"]
        raw_path = request.scope["raw_path"] + (b"?" + query if query else b"")
        outgoing = self._client.build_request(
            request.method,
            httpx.URL(upstream).copy_with(raw_path=raw_path),
            headers=headers,
            content=request.stream() if has_body else None,
        )
        answer = await self._client.send(outgoing, stream=True)
        kept = [(k, v) for k, v in answer.headers.raw if k.lower() not in _HOP_BY_HOP]
        return StreamingResponse(
            answer.aiter_raw(),
            status_code=answer.status_code,
            headers={k.decode("latin-1"): v.decode("latin-1") for k, v in kept},
            background=BackgroundTask(answer.aclose),
        )
