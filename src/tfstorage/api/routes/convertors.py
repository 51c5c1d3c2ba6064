"""A path convertor for object keys that also matches CR, LF and other controls.

Starlette's `path` convertor is `.*`, which stops at a newline: a key with a CR/LF
would fall through to a generic 404 instead of the 400 `InvalidObjectName` that key
validation gives. Registering a convertor is Starlette's own extension point; it
must happen before the routes are declared, hence at import of this package.
"""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor


class ObjectKeyConvertor(Convertor[str]):
    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("objkey", ObjectKeyConvertor())
