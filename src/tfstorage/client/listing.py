"""Listing keys page by page (`next_marker`), as records."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from tfstorage.client._http import Http
from tfstorage.client.models import Listing, ObjectInfo


async def iter_pages(
    http: Http, bucket: str, prefix: str = "", delimiter: str = ""
) -> AsyncIterator[dict[str, Any]]:
    marker = ""
    while True:
        params = {"prefix": prefix, "delimiter": delimiter, "marker": marker, "limit": 1000}
        page: dict[str, Any] = await http.json("GET", f"/api/v1/list/{bucket}", params=params)
        yield page
        if not page.get("truncated") or not page.get("next_marker"):
            return
        marker = page["next_marker"]


async def iter_objects(http: Http, bucket: str, prefix: str = "") -> AsyncIterator[ObjectInfo]:
    async for page in iter_pages(http, bucket, prefix):
        for obj in page["objects"]:
            yield ObjectInfo.from_json(obj, bucket)


async def list_objects(http: Http, bucket: str, prefix: str = "", delimiter: str = "") -> Listing:
    objects: list[ObjectInfo] = []
    prefixes: list[str] = []
    async for page in iter_pages(http, bucket, prefix, delimiter):
        objects.extend(ObjectInfo.from_json(o, bucket) for o in page["objects"])
        prefixes.extend(page.get("common_prefixes", []))
    return Listing(bucket=bucket, prefix=prefix, objects=objects, common_prefixes=prefixes)
