"""Real servers: JSON logs on stderr (LOG_FORMAT=json), and Prometheus counters summed
over two worker processes (WORKERS=2)."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server.conftest import ADMIN_TOKEN, ServerFactory, ServerProcess

pytestmark = pytest.mark.server

PUT_ROUTE = "/api/v1/objects/{bucket}/{key:objkey}"


def json_lines(server: ServerProcess) -> list[dict[str, Any]]:
    """Every line the server wrote, each parsed as JSON (a line that is not fails)."""
    assert server.log_path is not None
    lines = [line for line in server.log_path.read_text().splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON log line: {line!r}\n{server.log_tail()}")
    return parsed


def access_lines(server: ServerProcess) -> list[dict[str, Any]]:
    return [r for r in json_lines(server) if r["logger"] == "tfstorage.access"]


def test_json_logs_one_line_per_request(make_server: ServerFactory) -> None:
    server = make_server({"LOG_FORMAT": "json"})
    with server.client() as client:
        put = client.put("/api/v1/objects/artifacts/logs/a.bin", content=b"z" * 1234)
        got = client.get("/api/v1/download/artifacts/logs/a.bin")
        missing = client.get("/api/v1/download/artifacts/logs/nothing.bin")
    with httpx.Client(base_url=server.base_url) as anonymous:
        denied = anonymous.get("/api/v1/list/artifacts")
    assert (put.status_code, got.status_code, missing.status_code) == (200, 200, 404)
    assert denied.status_code == 401
    server.stop()

    records = json_lines(server)
    assert {r["logger"] for r in records} >= {"tfstorage.access", "uvicorn.error"}
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    # Uvicorn's own access log would say the same again.
    assert not [r for r in records if r["logger"] == "uvicorn.access"]
    log_text = server.log_path.read_text() if server.log_path else ""
    assert ADMIN_TOKEN not in log_text  # the token's name is logged, never its secret

    by_id = {r["request_id"]: r for r in access_lines(server)}
    upload = by_id[put.headers["x-request-id"]]
    assert upload["method"] == "PUT" and upload["route"] == PUT_ROUTE
    assert upload["path"] == "/api/v1/objects/artifacts/logs/a.bin"
    assert upload["status"] == 200 and upload["bytes_in"] == 1234
    assert upload["bytes_out"] == len(put.content)
    assert upload["duration_ms"] > 0
    assert upload["token"] == "admin (ADMIN_TOKEN)" and upload["client"] == "127.0.0.1"
    download = by_id[got.headers["x-request-id"]]
    assert (download["status"], download["bytes_out"], download["bytes_in"]) == (200, 1234, 0)
    assert download["route"] == "/api/v1/download/{bucket}/{key:objkey}"
    assert by_id[missing.headers["x-request-id"]]["status"] == 404
    anonymous_line = by_id[denied.headers["x-request-id"]]
    assert anonymous_line["status"] == 401 and anonymous_line["token"] is None


def _counter(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def test_two_workers_sum_their_counters(make_server: ServerFactory) -> None:
    server = make_server({"WORKERS": "2", "LOG_FORMAT": "json"})
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def upload(i: int) -> None:
        # A new connection each time, so that either worker may accept it.
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as c:
            try:
                r = c.put(f"/api/v1/objects/artifacts/w/{i}.bin", content=os.urandom(100 + i))
            except httpx.TransportError as exc:  # show what the server said about it
                pytest.fail(f"upload {i}: {exc!r}\n{server.log_tail()}")
            assert r.status_code == 200, r.text + server.log_tail()

    uploaded = 0
    pids: set[int] = set()
    with ThreadPoolExecutor(8) as pool:
        # Until both workers have served uploads (they share one listening socket). A
        # worker still starting up (migrations, key files) takes none meanwhile: give it
        # time rather than a count of uploads.
        deadline = time.monotonic() + 60
        while len(pids) < 2:
            assert time.monotonic() < deadline, "every upload landed on one worker"
            list(pool.map(upload, range(uploaded, uploaded + 16)))
            uploaded += 16
            time.sleep(0.1)
            pids = {
                r["pid"]
                for r in access_lines(server)
                if r["method"] == "PUT" and r["status"] == 200
            }
    expected_bytes = sum(100 + i for i in range(uploaded))

    for _ in range(6):  # whichever worker answers the scrape sees the sum of both
        with httpx.Client(base_url=server.base_url, headers=headers) as c:
            text = c.get("/metrics").text
        assert _counter(text, "storage_uploads_total", bucket="artifacts") == uploaded
        assert _counter(text, "storage_bytes_received_total") == expected_bytes
        put = {"route": PUT_ROUTE, "method": "PUT", "status": "2xx"}
        assert _counter(text, "storage_http_request_duration_seconds_count", **put) == uploaded
        assert _counter(text, "storage_backend_up", backend="index") == 1
    server.stop()
    assert len({r["pid"] for r in access_lines(server)}) >= 2
