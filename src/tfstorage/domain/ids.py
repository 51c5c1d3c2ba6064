"""Random ids for the request path, drawn from a buffer of the OS's random bytes.

A blob id, a version's file id and a request id each took a `getrandom(2)` call of its
own. On the event loop such a call lets go of the GIL, a thread waiting for it (a pack's
sync, the WAL's) takes it, and the loop then waits to get it back: the three ids of a
4 KiB upload cost 3% of the S3 endpoint's PUTs per second (interleaved A/B, one worker,
8 clients). Here one call fills a buffer that serves many ids.

The bytes are the ones `secrets` hands out (the OS's CSPRNG), each used once. Secrets
that guard access (tokens, keys, the server's own) keep `secrets`, which leaves no
unused random bytes in the process's memory. A forked child starts with an empty
buffer: parent and child never hand out the same bytes.
"""

from __future__ import annotations

import os
import threading
import uuid
from typing import Final

_REFILL: Final = 4096
_lock = threading.Lock()
_buffer = b""
_used = 0


def random_bytes(count: int) -> bytes:
    """`count` bytes (at most 4096) of the OS's randomness, never handed out twice."""
    global _buffer, _used
    if not 0 < count <= _REFILL:
        raise ValueError(f"between 1 and {_REFILL} random bytes at a time")
    with _lock:
        if _used + count > len(_buffer):
            _buffer, _used = os.urandom(_REFILL), 0
        start = _used
        _used += count
        return _buffer[start:_used]


def random_hex(count: int) -> str:
    """`count` random bytes as 2 * `count` lowercase hex characters."""
    return random_bytes(count).hex()


def uuid4_hex() -> str:
    """A version 4 UUID's 32 hex characters, as `uuid.uuid4().hex`."""
    return uuid.UUID(bytes=random_bytes(16), version=4).hex


def _forget_after_fork() -> None:
    global _lock, _buffer, _used
    # The lock too: a thread of the parent may have held it at the fork.
    _lock, _buffer, _used = threading.Lock(), b"", 0


os.register_at_fork(after_in_child=_forget_after_fork)
