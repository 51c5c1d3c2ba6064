"""MD5 + SHA-256 and block checksums of a multipart blob's whole bytes, computed while
they are assembled."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable
from concurrent.futures import Future, ThreadPoolExecutor

import anyio.to_thread

from tfstorage.domain.blocks import DEFAULT_BLOCK_SIZE, BlockChecksums, BlockHasher

_INLINE_BELOW = 64 * 1024  # a thread hop costs more than hashing this little


class Digests:
    """MD5 and SHA-256 side by side: for large chunks the two run in parallel threads
    (hashlib releases the GIL), so the slower of them sets the pace, not their sum. The
    block checksums (CRC32C, ~12 GB/s) ride along with SHA-256, the faster of the two
    where the CPU has SHA extensions."""

    def __init__(self, block_size: int = DEFAULT_BLOCK_SIZE) -> None:
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha256 = hashlib.sha256()
        self._blocks = BlockHasher(block_size)
        self.size = 0

    @property
    def md5(self) -> str:
        return self._md5.hexdigest()

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    @property
    def block_size(self) -> int:
        return self._blocks.block_size

    @property
    def blocks(self) -> BlockChecksums:
        return self._blocks.result()

    def _sha256_and_blocks(self, chunk: bytes) -> None:
        self._sha256.update(chunk)
        self._blocks.update(chunk)

    def submit(self, chunk: bytes, pool: ThreadPoolExecutor) -> list[Future[None]]:
        """Hash `chunk` in `pool` (two workers: one digest each); wait on the futures
        before submitting the next chunk."""
        self.size += len(chunk)
        return [
            pool.submit(self._md5.update, chunk),
            pool.submit(self._sha256_and_blocks, chunk),
        ]

    def update(self, chunk: bytes, pool: ThreadPoolExecutor | None = None) -> None:
        """Hash `chunk` (blocking: call from a worker thread for large chunks)."""
        self.size += len(chunk)
        if pool is None or len(chunk) < _INLINE_BELOW:
            self._md5.update(chunk)
            self._sha256_and_blocks(chunk)
            return
        md5 = pool.submit(self._md5.update, chunk)
        self._sha256_and_blocks(chunk)
        md5.result()


async def digest_stream(
    chunks: AsyncIterable[bytes], block_size: int = DEFAULT_BLOCK_SIZE
) -> Digests:
    """Read a stream to its end, hashing it off the event loop."""
    digests = Digests(block_size)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="md5") as pool:
        async for chunk in chunks:
            if len(chunk) < _INLINE_BELOW:
                digests.update(chunk)
            else:
                await anyio.to_thread.run_sync(digests.update, chunk, pool)
    return digests
