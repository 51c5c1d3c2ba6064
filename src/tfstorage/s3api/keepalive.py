"""Answers that take long to compute (CompleteMultipartUpload): 200 at once, then a
space every few seconds until the XML document follows, as S3 does. A client's read
timeout then never fires while a large object is assembled; an error found late is an
`<Error>` document inside the 200, which S3's SDKs look for on these operations."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>'


class PatientResponse(Response):
    """Runs `work` when sent. Ready within `wait` seconds: its own response is sent (its
    status, its headers; an error through `on_error`). Later: a 200 carrying spaces every
    `wait` seconds (1 at least), then the document, or `on_error`'s body. The work runs
    to its end even if the client goes away meanwhile: a completion stopped halfway
    would only cost the client a retry and a second assembly."""

    def __init__(
        self,
        work: Callable[[], Awaitable[Response]],
        *,
        wait: float,
        on_error: Callable[[Exception], Response],
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=200, media_type="application/xml", headers=headers)
        del self.headers["content-length"]  # not known until the work is done
        self._work, self._wait, self._on_error = work, wait, on_error
        self._outcome: Response | None = None
        self._done = anyio.Event()

    async def _run(self) -> None:
        with anyio.CancelScope(shield=True):
            try:
                self._outcome = await self._work()
            except Exception as exc:
                self._outcome = self._on_error(exc)
            finally:
                self._done.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(self._run)
            with anyio.move_on_after(self._wait):
                await self._done.wait()
            if self._done.is_set():
                assert self._outcome is not None
                request_id = self.headers.get("x-amz-request-id")
                if request_id is not None:
                    self._outcome.headers["x-amz-request-id"] = request_id
                await self._outcome(scope, receive, send)
                return
            await self._keep_alive(send)

    async def _keep_alive(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": XML_DECLARATION, "more_body": True})
        while not self._done.is_set():
            with anyio.move_on_after(max(self._wait, 1.0)):
                await self._done.wait()
            if not self._done.is_set():
                await send({"type": "http.response.body", "body": b" ", "more_body": True})
        assert self._outcome is not None
        # The declaration went first; the document must not carry a second one.
        body = bytes(self._outcome.body).removeprefix(XML_DECLARATION)
        await send({"type": "http.response.body", "body": body, "more_body": False})
