"""OpenAPI descriptions of the bodies FastAPI cannot see: they are read as streams."""

from __future__ import annotations

from typing import Any

RAW_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The object's bytes, streamed. Optional headers: Content-Type,"
        " Content-MD5 (base64), X-Checksum-SHA256 (hex or base64), X-Metadata (a JSON"
        " object), X-Tags (k=v,k2=v2).",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def multipart_body(*, many: bool) -> dict[str, Any]:
    file_schema: dict[str, Any] = {"type": "string", "format": "binary"}
    return {
        "requestBody": {
            "required": True,
            "description": "A multipart form parsed as a stream: files go to storage as"
            " they arrive. Fields may also be given as query parameters.",
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "array", "items": file_schema}
                            if many
                            else file_schema,
                            "bucket": {"type": "string"},
                            "key": {
                                "type": "string",
                                "description": "key, or prefix if it ends in /",
                            },
                            "prefix": {"type": "string"},
                            "metadata": {"type": "string", "description": "a JSON object"},
                            "tags": {"type": "string", "description": "k=v,k2=v2"},
                            "content_type": {"type": "string"},
                            "sha256": {"type": "string"},
                            "md5": {"type": "string"},
                        },
                    }
                }
            },
        }
    }


def binary_response(description: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {"description": description, "content": {"application/octet-stream": {}}},
        206: {"description": "A single byte range (Range header)."},
        304: {"description": "Not modified (If-None-Match / If-Modified-Since)."},
        416: {"description": "Range not satisfiable."},
    }
