"""One httpx.AsyncClient with the token, error mapping and retries with backoff."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any
from urllib.parse import quote

import anyio
import httpx

from tfstorage.client.errors import TFStorageError, TransportError, error_from_response

# Statuses worth another try: the engine or the service is briefly unavailable.
RETRY_STATUSES = frozenset({500, 502, 503, 504})
_NO_RETRY_CODES = frozenset({"ObjectCorrupted", "InsufficientStorage"})


def object_path(route: str, bucket: str, key: str) -> str:
    """`/api/v1/{route}/{bucket}/{key}` with the key percent-encoded: a key is opaque
    text, and '#', '?' or '%' left bare would name another object."""
    return f"/api/v1/{route}/{bucket}/{quote(key, safe='/')}"


class Http:
    """Requests against one server. `retries` applies to idempotent calls only."""

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        timeout: float,
        retries: int,
        transport: httpx.AsyncBaseTransport | None = None,
        connections: int = 16,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url
        self.retries = retries
        self.client = httpx.AsyncClient(
            base_url=url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def backoff(self, attempt: int, retry_after: str | None = None) -> None:
        delay = min(5.0, 0.2 * 2**attempt) * (0.5 + random.random())
        if retry_after and retry_after.isdigit():
            delay = max(delay, min(float(retry_after), 10.0))
        await anyio.sleep(delay)

    def retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, TransportError):
            return True
        return (
            isinstance(exc, TFStorageError)
            and exc.status in RETRY_STATUSES
            and exc.code not in _NO_RETRY_CODES
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool | None = None,
        body: Callable[[], Any] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send, raise the mapped error for a 4xx/5xx answer, retry what may be retried.

        `body()` builds the request content afresh for each attempt (a stream cannot be
        sent twice)."""
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "PUT", "DELETE")
        attempt = 0
        while True:
            try:
                if body is not None:
                    kwargs["content"] = body()
                response = await self.client.request(method, path, **kwargs)
                if response.status_code >= 400:
                    raise error_from_response(response)
                if response.status_code >= 300:
                    raise _redirected(response)
                return response
            except (httpx.TransportError, TFStorageError) as exc:
                err = _as_error(exc, self.url)
                if not idempotent or attempt >= self.retries or not self.retryable(err):
                    raise err from exc
                await self.backoff(attempt, err.retry_after)
                attempt += 1

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.request(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return {}
        return response.json()

    @asynccontextmanager
    async def stream(self, method: str, path: str, **kwargs: Any) -> AsyncIterator[httpx.Response]:
        """A streamed response; an error answer is read and raised as its exception."""
        try:
            async with self.client.stream(method, path, **kwargs) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise error_from_response(response)
                if response.status_code >= 300:
                    raise _redirected(response)
                yield response
        except httpx.TransportError as exc:
            raise _as_error(exc, self.url) from exc


def _redirected(response: httpx.Response) -> TFStorageError:
    """Redirects are not followed (the token would go along to another address), so a
    3xx answer means nothing was done: an error, naming where the server points."""
    where = response.headers.get("location", "elsewhere")
    return TFStorageError(
        f"the server answered with a redirect to {where}; use that address as the URL",
        status=response.status_code,
        code="Redirect",
    )


def _as_error(exc: BaseException, url: str) -> TFStorageError:
    if isinstance(exc, TFStorageError):
        return exc
    return TransportError(f"{type(exc).__name__} talking to {url}: {exc}".rstrip(": "))


@contextmanager
def first_error() -> Iterator[None]:
    """Around a task group: raise the first error of its group itself, so that callers
    catch `NoSuchKey` or `ChecksumMismatch`, not an ExceptionGroup."""
    try:
        yield
    except BaseExceptionGroup as group:
        error: BaseException = group
        while isinstance(error, BaseExceptionGroup):
            error = error.exceptions[0]
        raise error from None
