"""Must-show 6: `/metrics` parsed by prometheus_client's own parser; the series move."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from tests.api.test_service_routes import api_routes

pytestmark = pytest.mark.anyio

PUT_ROUTE = "/api/v1/objects/{bucket}/{key:objkey}"
DOWNLOAD_ROUTE = "/api/v1/download/{bucket}/{key:objkey}"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: httpx.AsyncClient) -> Samples:
    r = await client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_named_series_exist_and_move(client: httpx.AsyncClient) -> None:
    before = await scrape(client)
    assert value(before, "storage_backend_up", backend="index") == 1
    assert value(before, "storage_backend_up", backend="blob_store") == 1

    for i in range(3):
        r = await client.put(f"/api/v1/objects/models/m{i}.pt", content=b"x" * (1000 + i))
        assert r.status_code == 200
    for _ in range(2):
        assert (await client.get("/api/v1/download/models/m1.pt")).status_code == 200
    assert (await client.get("/api/v1/download/models/missing.pt")).status_code == 404
    assert (await client.get("/api/v1/no/such/route")).status_code == 404
    after = await scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # The original service's names.
    assert moved("storage_uploads_total", bucket="models") == 3
    assert moved("storage_downloads_total", bucket="models") == 2
    assert value(after, "storage_usage_bytes", bucket="models") == 1000 + 1001 + 1002
    assert value(after, "storage_objects", bucket="models") == 3
    assert moved("storage_operation_seconds_count", operation="put_object") == 3
    # Bytes in and out, errors by code.
    assert moved("storage_bytes_received_total") == 1000 + 1001 + 1002
    assert moved("storage_bytes_sent_total") == 2 * 1001
    assert moved("storage_errors_total", code="NoSuchKey") == 1
    assert moved("storage_errors_total", code="NotFound") == 1
    # Request latency by route template, method and status class.
    put = {"route": PUT_ROUTE, "method": "PUT", "status": "2xx"}
    assert moved("storage_http_request_duration_seconds_count", **put) == 3
    assert moved("storage_http_request_duration_seconds_sum", **put) > 0
    assert value(after, "storage_http_request_duration_seconds_bucket", **put, le="+Inf") >= 3
    get_ok = {"route": DOWNLOAD_ROUTE, "method": "GET", "status": "2xx"}
    assert moved("storage_http_request_duration_seconds_count", **get_ok) == 2
    get_missing = {"route": DOWNLOAD_ROUTE, "method": "GET", "status": "4xx"}
    assert moved("storage_http_request_duration_seconds_count", **get_missing) == 1
    unmatched = {"route": "unmatched", "method": "GET", "status": "4xx"}
    assert moved("storage_http_request_duration_seconds_count", **unmatched) == 1
    assert moved("storage_http_request_bytes_total", route=PUT_ROUTE) == 3003
    assert moved("storage_http_response_bytes_total", route=DOWNLOAD_ROUTE) >= 2 * 1001
    # A byte series appears with its first bytes: downloads send none in.
    assert ("storage_http_request_bytes_total", frozenset({("route", DOWNLOAD_ROUTE)})) not in after


async def test_route_labels_never_carry_raw_paths(client: httpx.AsyncClient, app: FastAPI) -> None:
    await client.put("/api/v1/objects/artifacts/secret-project/plan.bin", content=b"1")
    await client.get("/api/v1/download/artifacts/secret-project/plan.bin")
    await client.get("/api/v1/secret-project/nothing")
    text = (await client.get("/metrics")).text
    assert "secret-project" not in text
    routes = {
        sample.labels["route"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if "route" in sample.labels
    }
    templates = {route.path for route in api_routes(list(app.routes))} | {"unmatched"}
    assert DOWNLOAD_ROUTE in routes and "unmatched" in routes
    assert routes <= templates


async def test_json_metrics_read_the_same_collectors(client: httpx.AsyncClient) -> None:
    await client.put("/api/v1/objects/models/j.pt", content=b"abc")
    metrics = (await client.get("/api/v1/storage/metrics")).json()["metrics"]
    assert metrics["storage_uploads_total"]["bucket=models"] == 1
    assert metrics["storage_backend_up"]["backend=index"] == 1
    put = f"method=PUT,route={PUT_ROUTE},status=2xx"
    assert metrics["storage_http_request_duration_seconds_count"][put] == 1


async def test_method_labels_are_bounded(client: httpx.AsyncClient) -> None:
    # Any token is a valid HTTP method on the wire: a client making them up must not
    # make a new series per request.
    for i in range(3):
        await client.request(f"MADEUP{i}", "/api/v1/no/such/route")
    text = (await client.get("/metrics")).text
    methods = {
        sample.labels["method"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if "method" in sample.labels
    }
    assert not any(m.startswith("MADEUP") for m in methods)
    assert "other" in methods


async def test_a_deleted_buckets_usage_leaves_the_gauges(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/buckets", json={"name": "short-lived"})
    assert r.status_code == 201, r.text
    r = await client.put("/api/v1/objects/short-lived/a.bin", content=b"a" * 700)
    assert r.status_code == 200, r.text
    before = await scrape(client)
    assert value(before, "storage_usage_bytes", bucket="short-lived") == 700
    assert value(before, "storage_objects", bucket="short-lived") == 1
    r = await client.delete("/api/v1/buckets/short-lived?force=true")
    assert r.status_code in (200, 204), r.text
    after = await scrape(client)
    # Gone, or (several workers: values kept in files) zero; never the old figures.
    assert value(after, "storage_usage_bytes", bucket="short-lived") == 0
    assert value(after, "storage_objects", bucket="short-lived") == 0
