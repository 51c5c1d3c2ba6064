"""Several worker processes over one SQLite index and one blob directory."""

from __future__ import annotations

import os
import threading
import time

import pytest

from tests.server.conftest import ADMIN_TOKEN, ServerFactory
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
