"""The S3 endpoint as an ASGI app: address, authenticate, route, answer (errors as S3 XML).

It serves the storage opened by the REST app's lifespan (`storage()`), so the two
front doors share one index, one blob store and one set of metrics in a process.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tfstorage.config import Settings
from tfstorage.domain.caller import Caller
from tfstorage.domain.records import Token
from tfstorage.errors import InternalError, StorageError
from tfstorage.s3api import cors, router, sigv4
from tfstorage.s3api.canonical import SignedRequest, parse_query
from tfstorage.s3api.errors import render_error
from tfstorage.s3api.request import S3Request
from tfstorage.service.access import caller_of
from tfstorage.service.storage import Storage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OperationRoute:
    """What the access log and the HTTP metrics call a request's route: `s3:put_object`."""

    operation: str

    @property
    def path(self) -> str:
        return f"s3:{self.operation}"


class S3App:
    def __init__(self, settings: Settings, storage: Callable[[], Storage]) -> None:
        self._settings = settings
        self._storage = storage

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # the REST app owns the lifespan; nothing else is spoken here
        state = scope.setdefault("state", {})
        request_id = state.get("request_id") or secrets.token_hex(8)
        http = Request(scope, receive)
        try:
            response = await self._handle(http, request_id)
        except StorageError as exc:
            response = self._error(exc, http, request_id)
        except Exception:
            log.exception("S3 request %s failed", request_id)
            response = self._error(InternalError(), http, request_id)
        if "origin" in http.headers:
            await cors.add_cors_headers(self._storage(), self._address(http)[0], http, response)
        response.headers["x-amz-request-id"] = request_id
        await response(scope, receive, send)

    @staticmethod
    def _error(exc: StorageError, http: Request, request_id: str) -> Response:
        rendered = render_error(exc, resource=http.scope["path"], request_id=request_id)
        response = Response(rendered.body, status_code=rendered.status, headers=rendered.headers)
        headers = http.headers
        has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
        if has_body and not getattr(http, "_stream_consumed", False):
            # Refused before its body was read (a client waiting on `Expect: 100-continue`
            # never sends it): the connection cannot carry another request.
            response.headers["Connection"] = "close"
        return response

    async def _handle(self, http: Request, request_id: str) -> Response:
        storage = self._storage()
        bucket, key = self._address(http)
        if http.method == "OPTIONS":  # a browser's preflight: never signed
            http.scope["route"] = OperationRoute("cors_preflight")
            return await cors.preflight(storage, bucket, http)
        signed = SignedRequest.from_asgi(http.scope)
        if storage.ctx.reads_inline:  # a cached or one-statement key lookup: no thread hop
            auth, caller = self._authenticate(storage, signed)
        else:
            auth, caller = await anyio.to_thread.run_sync(self._authenticate, storage, signed)
        query: dict[str, str] = {}
        for name, value in parse_query(http.scope.get("query_string", b"").decode("latin-1")):
            query.setdefault(name, value)
        # For the access log: the token's name, never its secret or key id.
        http.scope["state"]["caller_name"] = None if caller.anonymous else caller.name
        req = S3Request(http, storage, caller, auth, bucket, key, request_id, query)
        operation = router.route(req)
        http.scope["route"] = OperationRoute(operation.__name__)
        return await operation(req)

    def _address(self, http: Request) -> tuple[str, str]:
        """(bucket, key): virtual-host style under S3_DOMAIN, else path style."""
        path: str = http.scope["path"]
        domain = self._settings.s3_domain
        host = (http.headers.get("host") or "").rsplit(":", 1)[0].lower()
        if domain and host.endswith("." + domain):
            return host[: -len(domain) - 1], path[1:]
        bucket, _, key = path[1:].partition("/")
        return bucket, key

    def _authenticate(
        self, storage: Storage, signed: SignedRequest
    ) -> tuple[sigv4.Authenticated | None, Caller]:
        """Blocking (key lookups hit the index): runs in a worker thread but on SQLite,
        whose lookup costs less than the hop (StorageContext.read_now)."""
        tokens: dict[str, Token] = {}

        def lookup(access_key: str) -> str | None:
            found = storage.access.s3.lookup(access_key)
            if found is None:
                return None
            tokens[access_key] = found[0]
            return found[1]

        auth = sigv4.verify(signed, lookup, region=self._settings.s3_region)
        if not storage.access.enabled:
            return auth, Caller.unrestricted()
        if auth is None:
            return None, Caller.nobody()
        return auth, caller_of(tokens[auth.access_key])
