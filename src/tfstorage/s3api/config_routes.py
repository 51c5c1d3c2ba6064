"""Which bucket-configuration or object-lock operation a request is (router.py asks
here first, so its own table stays about objects, listings and uploads)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.responses import Response

from tfstorage.s3api import bucket_config, object_lock
from tfstorage.s3api.errors import MethodNotAllowed
from tfstorage.s3api.request import S3Request

Operation = Callable[[S3Request], Awaitable[Response]]

_BUCKET: dict[str, dict[str, Operation]] = {
    "tagging": {
        "GET": bucket_config.get_bucket_tagging,
        "PUT": bucket_config.put_bucket_tagging,
        "DELETE": bucket_config.delete_bucket_tagging,
    },
    "cors": {
        "GET": bucket_config.get_bucket_cors,
        "PUT": bucket_config.put_bucket_cors,
        "DELETE": bucket_config.delete_bucket_cors,
    },
    "object-lock": {
        "GET": bucket_config.get_object_lock_configuration,
        "PUT": bucket_config.put_object_lock_configuration,
    },
}
_OBJECT: dict[str, dict[str, Operation]] = {
    "retention": {"GET": object_lock.get_object_retention, "PUT": object_lock.put_object_retention},
    "legal-hold": {
        "GET": object_lock.get_object_legal_hold,
        "PUT": object_lock.put_object_legal_hold,
    },
}


def config_operation(req: S3Request) -> Operation | None:
    """The operation of a ?tagging / ?cors / ?object-lock bucket request or a
    ?retention / ?legal-hold object request; None for any other request."""
    table = _OBJECT if req.key else _BUCKET
    for subresource, by_method in table.items():
        if subresource in req.query:
            if req.method not in by_method:
                raise MethodNotAllowed()
            return by_method[req.method]
    return None
