"""The process's HTTP surface: the REST app on PORT and the S3 endpoint on S3_PORT.

One ASGI app answers both listening sockets and dispatches on the port a connection
came in on, so both front doors share one lifespan (one index, one blob store, one set
of background tasks) and `WORKERS` worker processes each serve both ports.
"""

from __future__ import annotations

import socket

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from tfstorage.api.app import create_app
from tfstorage.api.body_deadline import BodyDeadlineMiddleware
from tfstorage.api.forwarded import ForwardedHeadersMiddleware
from tfstorage.api.middleware import RequestIdMiddleware
from tfstorage.config import Settings
from tfstorage.malloc import keep_big_buffers_out_of_the_heap
from tfstorage.s3api.app import S3App
from tfstorage.service.storage import Storage


class FrontDoors:
    """REST for every port but S3_PORT; S3 for connections to S3_PORT."""

    def __init__(self, rest: FastAPI, s3: S3App, settings: Settings) -> None:
        self.rest = rest
        # The same request id, access log line and HTTP metrics as every REST request,
        # and the same deadlines for slow bodies (the S3 app answers them in XML).
        # Outermost, as in the REST app: behind a trusted proxy the access and audit logs
        # name the client, and the Host a client signed is the one it sent the proxy.
        self.s3 = ForwardedHeadersMiddleware(
            RequestIdMiddleware(
                BodyDeadlineMiddleware(
                    s3,
                    idle_seconds=settings.body_timeout_seconds,
                    min_rate=settings.body_min_rate,
                    grace_seconds=settings.body_grace_seconds,
                )
            ),
            trusted=settings.forwarded_allow_ips,
            family=settings.forwarded_headers,
        )
        self.s3_port = settings.s3_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        if self.s3_port and scope["type"] == "http" and server and server[1] == self.s3_port:
            # `app`: where the request metrics find the storage's collectors.
            await self.s3({**scope, "app": self.rest}, receive, send)
            return
        await self.rest(scope, receive, send)


def create_server_app(settings: Settings) -> FrontDoors:
    keep_big_buffers_out_of_the_heap()  # in every worker process, before any transfer
    rest = create_app(settings)

    def storage() -> Storage:
        opened: Storage = rest.state.storage
        return opened

    return FrontDoors(rest, S3App(settings, storage), settings)


def app_from_environment() -> FrontDoors:
    """For `uvicorn --factory` with several worker processes: settings from the env."""
    from tfstorage.config import load_settings

    return create_server_app(load_settings())


def bind(host: str, port: int) -> socket.socket:
    """A listening socket as uvicorn binds one, inheritable by worker processes."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock
