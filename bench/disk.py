"""The disk's own limits, measured on the file system the server writes to.

Also the two helpers both sides share: the payload generator and the page-cache drop.
"""

from __future__ import annotations

import hashlib
import os
import random
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

MiB = 1024 * 1024
DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def chunks(size: int, chunk_size: int = MiB) -> Iterator[memoryview]:
    """`size` bytes in `chunk_size` pieces, cheap to make and never twice the same.

    One random buffer; its first 16 bytes (a random nonce and the offset) change for each
    piece, so no two chunks, objects or rounds deduplicate. Every piece is a view of the
    same buffer: consume it before asking for the next.
    """
    buf = bytearray(os.urandom(chunk_size))
    view = memoryview(buf)
    nonce = random.getrandbits(64)
    for offset in range(0, size, chunk_size):
        struct.pack_into("<QQ", buf, 0, nonce, offset)
        yield view[: min(chunk_size, size - offset)]


def settle_writeback() -> None:
    """Write every dirty page out before a timed phase of small writes. The gigabyte a
    1 GiB phase leaves in the page cache is otherwise written back during the next
    phase, whichever side of the comparison that is, and slows a side that fsyncs each
    batch (the service) more than one that does not (SeaweedFS by default)."""
    os.sync()


def drop_page_cache(files: list[Path]) -> bool:
    """Evict `files` from the page cache, then (when allowed) drop the whole cache.

    Returns whether the global drop (`echo 1 > /proc/sys/vm/drop_caches`) worked; the
    per-file `POSIX_FADV_DONTNEED` alone suffices for clean, fsynced pages.
    """
    for path in files:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # a pack compacted away since it was listed: nothing to evict
        try:
            os.fsync(fd)  # dirty pages cannot be dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    try:
        os.sync()
        DROP_CACHES.write_text("1\n")
    except OSError:
        return False
    return True


def can_drop_all_caches() -> bool:
    return os.access(DROP_CACHES, os.W_OK)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _read_all(path: Path, chunk_size: int = MiB) -> tuple[float, int]:
    """Seconds to read the whole file in `chunk_size` reads (into one buffer), and bytes."""
    buf = bytearray(chunk_size)
    total = 0
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        start = time.perf_counter()
        while n := os.readv(fd, [buf]):
            total += n
        return time.perf_counter() - start, total
    finally:
        os.close(fd)


def measure(directory: Path, size: int) -> dict[str, float]:
    """MB/s of write+fsync, cold read and warm read of one `size`-byte file, then deleted."""
    path = directory / "disk-baseline.bin"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            start = time.perf_counter()
            for chunk in chunks(size):
                _write_all(fd, chunk)
            os.fsync(fd)
            write_s = time.perf_counter() - start
        finally:
            os.close(fd)
        drop_page_cache([path])
        cold_s, cold_n = _read_all(path)
        warm_s, warm_n = _read_all(path)
        if cold_n != size or warm_n != size:
            raise RuntimeError(f"read back {cold_n}/{warm_n} bytes of {size}")
    finally:
        path.unlink(missing_ok=True)
    return {
        "disk_write": size / write_s / 1e6,
        "disk_cold_read": size / cold_s / 1e6,
        "disk_warm_read": size / warm_s / 1e6,
    }


def small_files(directory: Path, seconds: float, threads: int = 8) -> float:
    """Files/s of `threads` writers each creating 4 KiB files with write+fsync+close, plus
    an fsync of the directory: the disk's own pace for durable small objects."""
    scratch = directory / "disk-small"
    scratch.mkdir()
    counts = [0] * threads
    deadline = time.perf_counter() + seconds
    data = os.urandom(4096)

    def writer(t: int) -> None:
        while time.perf_counter() < deadline:
            fd = os.open(scratch / f"{t}-{counts[t]}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            dir_fd = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            counts[t] += 1

    start = time.perf_counter()
    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    for f in scratch.iterdir():
        f.unlink()
    scratch.rmdir()
    return sum(counts) / elapsed


def hashing(size: int) -> dict[str, float]:
    """MB/s of MD5 and of SHA-256 on one core each: what the write path computes."""
    out = {}
    for name in ("md5", "sha256"):
        digest = hashlib.new(name)
        start = time.perf_counter()
        for chunk in chunks(size):
            digest.update(chunk)
        out[f"cpu_{name}"] = size / (time.perf_counter() - start) / 1e6
    return out
