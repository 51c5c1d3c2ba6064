"""Several worker processes over one SQLite index and one blob directory."""

from __future__ import annotations

import os

import pytest

from tests.server.conftest import ServerFactory

pytestmark = pytest.mark.server


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
