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
from tfstorage.api.worker_balance import join_from_environment
from tfstorage.collector import tune_collector
from tfstorage.config import Settings
from tfstorage.malloc import tune_allocator
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
    tune_allocator()  # in every worker process, before any transfer (malloc.py)
    rest = create_app(settings)

    def storage() -> Storage:
        opened: Storage = rest.state.storage
        return opened

    doors = FrontDoors(rest, S3App(settings, storage), settings)
    tune_collector()  # what exists now lives as long as the process (collector.py)
    return doors


def app_from_environment() -> FrontDoors:
    """For `uvicorn --factory` with several worker processes: settings from the env."""
    from tfstorage.config import load_settings

    doors = create_server_app(load_settings())
    join_from_environment()  # a worker's connections count from here (not the parent's)
    return doors


def bind(host: str, port: int, *, per_worker: bool = False) -> socket.socket:
    """A listening socket as uvicorn binds one.

    With `per_worker`, each worker process gets a listening socket of its own on the same
    address (SO_REUSEPORT) instead of sharing this one: the kernel then spreads new
    connections over the workers by their addresses. On one shared socket, whichever
    worker wakes first accepts everything queued, so a client that opens its pool of
    keep-alive connections at once (boto3, the SDK, a load balancer) lands it all on one
    worker while the others idle (bench/workers.py: 8 connections, WORKERS=2, one process
    at 100% CPU and the other at 0).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))  # fails as before if anything else listens there
    if per_worker:
        # SO_REUSEPORT would let a second server on the same port share it silently: the
        # plain bind above checked the port is free (and picked it, for port 0).
        address = sock.getsockname()
        sock.close()
        sock = _WorkerSocket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        # Bound, never listening: it holds the port (only sockets of this user with the
        # same option may join) but takes no connections; the workers' sockets do.
        sock.bind(address)
    sock.set_inheritable(True)
    return sock


class _WorkerSocket(socket.socket):
    """Handed to a worker process (uvicorn pickles the sockets it serves), it arrives
    as a new socket bound to the same address with SO_REUSEPORT, that worker's own."""

    def __reduce__(self) -> tuple[object, tuple[int, object]]:
        return _bind_reuseport, (int(self.family), self.getsockname())


def _bind_reuseport(family: int, address: tuple[str, int]) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock
