"""The object routes that carry nearly every request, answered without FastAPI's routing.

A 4 KiB PUT, GET or HEAD spent a third of its time in the framework before its
endpoint ran (`bench/hotpath.py`, in-process cProfile): the router tries every route's
regex in order, each included router re-matches, and the dependency solver parses
each declared parameter. For `PUT /api/v1/objects/{bucket}/{key}` and `GET|HEAD
/api/v1/download/{bucket}/{key}` without a query string, this layer matches the one
route that can answer and calls its endpoint function directly. Those endpoints take
the request and path parameters only (they authenticate and authorize themselves), so
nothing is skipped but the search and the solver. The same route object lands in the
scope (the access log and the metrics label by its template), the answer is
serialized as FastAPI serializes it, and errors go up to the app's exception handlers
as they do from any route. Anything else, a query string included (`version_id`,
presigned links), takes the normal way.

It sits inside the app's middleware (request ids, deadlines, error handlers), as the
router does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fastapi.encoders import jsonable_encoder
from fastapi.routing import APIRoute, serialize_response
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Router
from starlette.types import Receive, Scope, Send


@dataclass(frozen=True)
class _Hot:
    prefix: str  # what the path starts with (a cheap test before the route's regex)
    route: APIRoute


class HotObjectRoutes:
    def __init__(
        self, router: Router, routes: Iterable[BaseRoute], endpoints: Iterable[Callable[..., Any]]
    ) -> None:
        self.app = router.middleware_stack
        self._router = router
        self._by_method: dict[str, _Hot] = {}
        hot = set(endpoints)
        for route in routes:
            if not isinstance(route, APIRoute) or route.endpoint not in hot:
                continue
            prefix = route.path.partition("{")[0]
            for method in route.methods or ():
                self._by_method[method] = _Hot(prefix, route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("query_string"):
            hot = self._by_method.get(scope["method"])
            if hot is not None and scope["path"].startswith(hot.prefix):
                match, child_scope = hot.route.matches(scope)
                if match is Match.FULL:
                    scope.setdefault("router", self._router)
                    scope["route"] = hot.route
                    scope.update(child_scope)
                    response = await _respond(hot.route, Request(scope, receive, send))
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


async def _respond(route: APIRoute, request: Request) -> Response:
    """The endpoint's answer, as FastAPI's request handler would make it."""
    raw: Any = await route.endpoint(request=request, **request.path_params)
    if isinstance(raw, Response):
        return raw
    if route.response_field is None:
        return JSONResponse(jsonable_encoder(raw), status_code=route.status_code or 200)
    content = await serialize_response(
        field=route.response_field, response_content=raw, dump_json=True
    )
    return Response(content, status_code=route.status_code or 200, media_type="application/json")
