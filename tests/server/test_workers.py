"""Several worker processes over one SQLite index and one blob directory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from http.client import HTTPConnection
from pathlib import Path

import pytest

from tests.server.conftest import _SERVICE_VARS, ADMIN_TOKEN, SERVE_ARGS, ServerFactory
from tests.server.helpers import list_all

pytestmark = pytest.mark.server
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def test_two_workers_serve_one_store(make_server: ServerFactory) -> None:
    server = make_server({"WORKERS": "2"})
    assert server.proc is not None
    # uvicorn's supervisor, then the two workers (plus its resource tracker, if any).
    assert len(_children(server.proc.pid)) >= 2
    with server.client() as client:
        payloads = {f"w/{i}.bin": os.urandom(10_000 + i) for i in range(20)}
        for key, data in payloads.items():
            assert client.put(f"/api/v1/objects/artifacts/{key}", content=data).status_code == 200
        # Each request may land on either process: all of them see every object.
        for key, data in payloads.items():
            assert client.get(f"/api/v1/download/artifacts/{key}").content == data
        listed = client.get("/api/v1/list/artifacts", params={"prefix": "w/"}).json()["objects"]
        assert len(listed) == 20


def _written_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/io") as f:
        fields = dict(line.split(": ") for line in f.read().splitlines())
    return int(fields["wchar"])


def _grew(before: dict[int, int]) -> list[int]:
    return [pid for pid, n in before.items() if _written_bytes(pid) - n > 50_000]


def test_two_workers_take_concurrent_puts_on_one_sqlite_index(
    make_server: ServerFactory,
) -> None:
    """Both processes commit to one SQLite file at once (each COMMIT no longer holds the
    write lock through an fsync; index/wal_sync.py): every acknowledged PUT is there,
    whole, and the usage counters agree with a recomputation."""
    server = make_server({"WORKERS": "2"})
    assert server.proc is not None
    workers = _children(server.proc.pid)
    before = {pid: _written_bytes(pid) for pid in workers}
    shared = [f"c/shared/{i}.bin" for i in range(3)]
    acked: dict[str, list[bytes]] = {key: [] for key in shared}
    lock = threading.Lock()

    def client_thread(n: int) -> None:
        # A new connection per request: the kernel hands each to one of the two
        # processes, so both take a share of the PUTs.
        with server.client(headers={"Connection": "close", **AUTH}) as client:
            # At least 20 each; more while only one process has taken any: the kernel
            # picks the process that accepts and may favour one for a while, and on a
            # busy machine the second may still be starting when the first answers the
            # fixture's health check. So go on for up to a minute, not a fixed count.
            deadline = time.monotonic() + 60
            i = 0
            while i < 20 or (len(_grew(before)) < 2 and time.monotonic() < deadline):
                key = shared[i % 3] if i % 4 == 0 else f"c/{n}/{i}.bin"
                data = os.urandom(3000 + 97 * n + i)
                response = client.put(f"/api/v1/objects/artifacts/{key}", content=data)
                assert response.status_code == 200, response.text
                with lock:
                    acked.setdefault(key, []).append(data)
                i += 1

    threads = [threading.Thread(target=client_thread, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not any(t.is_alive() for t in threads)
    assert sum(len(v) for v in acked.values()) >= 160
    # Both processes wrote blobs (wchar counts every write(2) of the process).
    grew = _grew(before)
    assert len(grew) >= 2, f"only {grew} of {workers} took PUTs"
    with server.client() as client:
        for key, payloads in acked.items():
            got = client.get(f"/api/v1/download/artifacts/{key}")
            assert got.status_code == 200, key
            # The shared keys: the latest is one of the bodies sent to that key.
            assert got.content in payloads, key
        listed = list_all(client, "artifacts")
        assert set(listed) == set(acked)
        counters = client.get("/api/v1/storage/counters").json()
        assert counters["differences"] == [], counters


def _socket_inodes(pid: int) -> set[int]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


def _tcp_sockets() -> dict[int, tuple[int, int, str]]:
    """inode -> (local port, remote port, state) of every IPv4 TCP socket."""
    table = {}
    with open("/proc/net/tcp") as f:
        for line in f.read().splitlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
            table[inode] = (int(local.split(":")[1], 16), int(remote.split(":")[1], 16), state)
    return table


LISTEN, ESTABLISHED = "0A", "01"


def _listening(supervisor: int, port: int) -> dict[int, set[int]]:
    """worker pid -> the inodes of its sockets listening on `port`."""
    table = _tcp_sockets()
    found = {
        pid: {i for i in _socket_inodes(pid) if table.get(i) == (port, 0, LISTEN)}
        for pid in _children(supervisor)
    }
    return {pid: inodes for pid, inodes in found.items() if inodes}


def test_each_worker_listens_on_its_own_socket_and_takes_a_share_of_a_pool(
    make_server: ServerFactory,
) -> None:
    """With one listening socket shared by the workers, a pool of keep-alive connections
    opened at once went to whichever process woke first (the other idled); each worker
    now listens on its own (SO_REUSEPORT) and the kernel spreads the connections."""
    server = make_server({"WORKERS": "2"})
    assert server.proc is not None
    # /health answered once one worker listens; on a busy machine the other may still
    # be starting.
    deadline = time.monotonic() + 60
    while True:
        listening = _listening(server.proc.pid, server.port)
        if len(listening) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(listening) == 2, listening
    first, second = listening.values()
    assert len(first) == len(second) == 1 and not first & second, listening

    # 16 connections at once, as a client's pool: the chance that the kernel's hash puts
    # every one on the same worker is 2 in 65,536.
    pool = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(16)]
    try:
        # Where the kernel placed them, before any request: a worker over its share
        # then closes one after answering it (test_a_worker_with_more_than_its_share...).
        ours = {conn.getsockname()[1] for conn in pool}
        deadline = time.monotonic() + 30
        while len(owners := _owners(list(listening), server.port, ours)) < 16:
            assert time.monotonic() < deadline, owners
            time.sleep(0.05)
        served = {pid: list(owners.values()).count(pid) for pid in listening}
        request = (
            f"GET /health HTTP/1.1\r\nHost: t\r\nAuthorization: {AUTH['Authorization']}\r\n\r\n"
        )
        for conn in pool:
            conn.sendall(request.encode())
        for conn in pool:
            assert conn.recv(64).startswith(b"HTTP/1.1 200")
    finally:
        for conn in pool:
            conn.close()
    assert all(n > 0 for n in served.values()), served


def test_a_second_server_on_a_workers_port_is_refused(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """SO_REUSEPORT would let a second server join the port and take part of its
    traffic without a word: it must fail to start, as on a port held any other way."""
    server = make_server({"WORKERS": "2"})
    env = {k: v for k, v in os.environ.items() if k.upper() not in _SERVICE_VARS} | {
        "HOST": "127.0.0.1",
        "PORT": str(server.port),
        "S3_PORT": "0",
        "WORKERS": "2",
        "DATA_DIR": str(tmp_path / "second"),
        "ADMIN_TOKEN": ADMIN_TOKEN,
    }
    second = subprocess.run(
        [sys.executable, *SERVE_ARGS], env=env, capture_output=True, text=True, timeout=60
    )
    assert second.returncode == 1, second.stderr[-2000:]
    assert "cannot listen" in second.stderr
    with server.client() as client:  # the first one serves on
        assert client.get("/health").status_code == 200


def _owners(workers: list[int], port: int, client_ports: set[int]) -> dict[int, int]:
    """client port -> the worker holding the server side of that connection."""
    table = _tcp_sockets()
    owners = {}
    for pid in workers:
        for inode in _socket_inodes(pid):
            entry = table.get(inode)
            if entry and entry[0] == port and entry[1] in client_ports and entry[2] == ESTABLISHED:
                owners[entry[1]] = pid
    return owners


def _uneven_pool(port: int, workers: list[int], heavy: int, light: int) -> list[HTTPConnection]:
    """Keep-alive connections placed `heavy` on one worker and `light` on the other: the
    kernel places each by a hash, so open them one by one and keep those that fit."""
    kept: list[HTTPConnection] = []
    want: dict[int, int] = {}
    for _ in range(400):
        if len(kept) == heavy + light:
            return kept
        conn = HTTPConnection("127.0.0.1", port, timeout=30)
        conn.connect()
        local = conn.sock.getsockname()[1]
        owner = None
        for _ in range(100):  # the worker's accept may lag the client's connect a moment
            owner = _owners(workers, port, {local}).get(local)
            if owner is not None:
                break
            time.sleep(0.01)
        if owner is not None:
            if not want:  # the first connection's worker is the heavy one
                want = {owner: heavy} | {pid: light for pid in workers if pid != owner}
            if want.get(owner, 0) > 0:
                want[owner] -= 1
                kept.append(conn)
                continue
        conn.close()
    raise AssertionError(f"could not place {heavy}/{light} connections: {want}")


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_a_worker_with_more_than_its_share_of_a_pool_hands_connections_back(
    make_server: ServerFactory, http: str
) -> None:
    """The kernel's hash can leave one worker with most of a client's pool (6 of 8 here,
    set up on purpose) while the other idles. The busy one answers a request with
    `Connection: close` until neither holds more than its share; the client's next
    request opens a new connection, placed afresh. Once even, no connection is closed."""
    server = make_server({"WORKERS": "2", "HTTP_IMPLEMENTATION": http})
    assert server.proc is not None
    deadline = time.monotonic() + 60
    while len(listening := _listening(server.proc.pid, server.port)) < 2:
        assert time.monotonic() < deadline, listening
        time.sleep(0.1)
    workers = list(listening)
    pool = _uneven_pool(server.port, workers, heavy=6, light=2)
    opened = len(pool)

    def sweep() -> None:
        nonlocal opened
        for conn in pool:
            if conn.sock is None:
                opened += 1  # closed after its last answer: this request reconnects
            conn.request("GET", "/health", headers=AUTH)
            response = conn.getresponse()
            response.read()
            assert response.status == 200

    def spread() -> list[int]:
        ports = {conn.sock.getsockname()[1] for conn in pool if conn.sock is not None}
        owners = _owners(workers, server.port, ports)
        return sorted(list(owners.values()).count(pid) for pid in workers)

    try:
        assert spread() == [2, 6]
        deadline = time.monotonic() + 30
        while spread() != [4, 4]:
            assert time.monotonic() < deadline, (spread(), opened)
            sweep()
            time.sleep(0.02)
        settled = opened
        for _ in range(40):  # 1-2 s of requests: longer than a few check intervals
            sweep()
            time.sleep(0.03)
        assert opened == settled and spread() == [4, 4], (spread(), opened - settled)
    finally:
        for conn in pool:
            conn.close()
