"""A request body kept as it is read, so that the request can run again from its start.

A PutObject decided on a cached bucket record (`BucketService.cached`) runs again on a fresh
read when its commit finds the record changed, or when it fails and the record changed
(`S3Server._run`). The raw bytes (aws-chunked framing and all) are kept while the first run
reads them; the second run reads the kept bytes first, then the rest of the stream. Only
bodies of a bounded, announced length are kept (`REPLAY_MAX_BYTES`).
"""

from __future__ import annotations

from aiohttp import StreamReader

REPLAY_MAX_BYTES = 64 * 1024  # larger bodies are not kept: their requests read the bucket


class BodyReplay:
    """The request's content stream as `RequestBody` reads it, recorded and rewindable."""

    def __init__(self, content: StreamReader) -> None:
        self._content = content
        self._kept: list[bytes] = []
        self._pos = 0

    def rewind(self) -> None:
        """The next read starts again at the body's first byte."""
        self._pos = 0

    def _next_kept(self) -> bytes:
        if self._pos < len(self._kept):
            self._pos += 1
            return self._kept[self._pos - 1]
        return b""

    def _keep(self, chunk: bytes) -> bytes:
        if chunk:
            self._kept.append(chunk)
            self._pos += 1
        return chunk

    def read_nowait(self) -> bytes:
        return self._next_kept() or self._keep(self._content.read_nowait())

    def is_eof(self) -> bool:
        return self._pos >= len(self._kept) and self._content.is_eof()

    async def readany(self) -> bytes:
        return self._next_kept() or self._keep(await self._content.readany())
