"""The client of POST /v1/stream (`storage.shards.multiread`) over a lean HTTP/1.1 connection.

Each shard of the answer is received by the kernel's `recv_into` straight into one buffer
of the length its record head announces (`asyncio.BufferedProtocol`, as `fetch` does for
frames): no chunk objects, no joins, one copy per byte; the frames are then checked in
place (`whole_frames`) and handed on as views of that buffer. Connections are kept alive
and pooled per node (`connpool`); a reused one the node closed meanwhile is retried once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from storage.config import NodeSpec
from storage.errors import IntegrityError
from storage.shards import auth
from storage.shards.connpool import HEAD_BYTES, ConnPool, FetchError, NodeConn, parse_head
from storage.shards.format import (
    FRAME_HEAD,
    FRAME_HEAD_BYTES,
    HEADER_BYTES,
    ShardHeader,
    frame_checksum,
)
from storage.shards.multiread import RECORD_BYTES, STREAM_PATH, parse_record, request_body

MAX_RECORD_BYTES = 64 * 1024 * 1024  # one shard of the answer, at most (the node sends <= 8 MiB)


def whole_frames(data: bytes | bytearray | memoryview,
                 ) -> tuple[ShardHeader, list[tuple[int, memoryview]]]:
    """The header and every (segment, block view) of one whole shard file, each frame's
    length and checksum checked in place (no block copied). IntegrityError on a bad
    header, length, layout (only the last frame may be short) or checksum, or bytes past
    the last frame."""
    view = memoryview(data)
    h = ShardHeader.unpack(bytes(view[:HEADER_BYTES]))
    out: list[tuple[int, memoryview]] = []
    pos, seg, short = HEADER_BYTES, 0, False
    while pos < len(view):
        if short:
            raise IntegrityError(f"shard {h.index}: only the last frame may be short")
        if pos + FRAME_HEAD_BYTES > len(view):
            raise IntegrityError(f"shard {h.index}: truncated frame head")
        length, crc = FRAME_HEAD.unpack_from(view, pos)
        pos += FRAME_HEAD_BYTES
        if not 0 < length <= h.block_size or pos + length > len(view):
            raise IntegrityError(f"frame {seg} of shard {h.index} has bad length {length}")
        block = view[pos:pos + length]
        if frame_checksum(h, seg, block) != crc:
            raise IntegrityError(f"segment {seg} of shard {h.index}: checksum mismatch")
        out.append((seg, block))
        short = length < h.block_size
        pos += length
        seg += 1
    return h, out


class _Conn(NodeConn, asyncio.BufferedProtocol):
    """One keep-alive connection carrying one stream request and its answer at a time."""

    def __init__(self) -> None:
        self._head = bytearray(HEAD_BYTES)
        self._rec = bytearray(RECORD_BYTES)
        self._scratch = bytearray(4096)  # bytes nobody asked for land here (then: error)
        super().__init__()

    def _reset(self) -> None:
        super()._reset()
        self._head_len = 0
        self._in_body = False
        self._body_left = 0
        self._want = 0  # records still to come
        self._rec_len = 0
        self._data: bytearray | None = None
        self._data_len = 0
        self._segments = 0
        self.results: list[dict[str, Any]] = []
        self.progress = 0  # receives so far (the read timeout is for silence, not length)

    def start(self, request: bytes, records: int) -> None:
        self._reset()
        self._want = records
        assert self.transport is not None
        self.transport.write(request)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.finished:
            return memoryview(self._scratch)
        if not self._in_body:
            if self._head_len < HEAD_BYTES:
                return memoryview(self._head)[self._head_len:]
            return memoryview(self._scratch)
        return self._target()

    def _target(self) -> memoryview:
        if self._data is not None:
            return memoryview(self._data)[self._data_len:]
        return memoryview(self._rec)[self._rec_len:]

    def buffer_updated(self, nbytes: int) -> None:
        self.got_any = True
        self.progress += 1
        try:
            if self.finished:
                raise FetchError("?", "bytes nobody asked for")
            if self._in_body:
                self._advance(nbytes)
            else:
                self._head_len += nbytes
                self._parse_head()
        except (IntegrityError, FetchError) as exc:
            self._fail(exc)
            return
        if self.finished:
            self._wake()

    def _parse_head(self) -> None:
        end = self._head.find(b"\r\n\r\n", 0, self._head_len)
        if end < 0:
            if self._head_len >= HEAD_BYTES:
                raise FetchError("?", "response head too large")
            return
        head = parse_head(bytes(self._head[:end]))
        self.status, self.keep_alive = head.status, head.keep_alive and not head.chunked
        if self.status != 200:
            self.keep_alive = False
            self.finished = True
            return
        if head.length is None or head.chunked:
            raise FetchError("?", "stream answer without a Content-Length")
        self._in_body = True
        self._body_left = head.length
        rest = memoryview(self._head)[end + 4:self._head_len]
        while rest and not self.finished:
            target = self._target()
            n = min(len(target), len(rest))
            target[:n] = rest[:n]
            rest = rest[n:]
            self._advance(n)
        if rest:
            raise FetchError("?", "bytes after the last record")
        if not self.finished and self._body_left == 0:
            raise FetchError("?", "answer ends before its last record")

    def _advance(self, n: int) -> None:
        self._body_left -= n
        if self._body_left < 0:
            raise FetchError("?", "more bytes than the Content-Length")
        if self._data is not None:
            self._data_len += n
            if self._data_len == len(self._data):
                self._record({"status": 200, "segments": self._segments, "data": self._data})
                self._data = None
        else:
            self._rec_len += n
            if self._rec_len == RECORD_BYTES:
                self._rec_len = 0
                status, segments, length = parse_record(bytes(self._rec))
                if status != 200:
                    if length:
                        raise FetchError("?", "a failed record carries bytes")
                    self._record({"status": status})
                elif length > MAX_RECORD_BYTES or length < HEADER_BYTES:
                    raise FetchError("?", f"record of {length} bytes")
                else:
                    self._data, self._data_len, self._segments = bytearray(length), 0, segments
        if not self.finished and self._body_left == 0:
            raise FetchError("?", "answer ends before its last record")

    def _record(self, res: dict[str, Any]) -> None:
        self.results.append(res)
        self._want -= 1
        if self._want == 0:
            if self._body_left:
                raise FetchError("?", "bytes after the last record")
            self.finished = True
            self._in_body = False


class StreamReader:
    """Many whole shards from one node per request, over pooled lean connections."""

    def __init__(self, secret: bytes, read_timeout_s: float = 15.0,
                 connect_timeout_s: float = 3.0) -> None:
        self._secret = secret
        self._read_timeout = read_timeout_s
        self._pool: ConnPool[_Conn] = ConnPool(_Conn, connect_timeout_s)

    async def read(self, node: NodeSpec, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Per id {"status": 200, "data": file bytes, "segments": n} or {"status": code}
        (frames not checked here). FetchError when the node cannot be reached, answers
        with another status, goes silent for the read timeout, or breaks the framing."""
        body = request_body(ids)
        headers = auth.sign(self._secret, "POST", STREAM_PATH, node.id,
                            body_sha256=auth.body_digest(body))
        request = (f"POST {STREAM_PATH} HTTP/1.1\r\nHost: {node.address}\r\n"
                   f"Content-Type: application/msgpack\r\nContent-Length: {len(body)}\r\n"
                   + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                   + "\r\n").encode("latin-1") + body
        for attempt in range(2):
            conn, reused = await self._pool.acquire(node)
            conn.start(request, len(ids))
            try:
                while not conn.finished:
                    await self._wait(node, conn)
            except FetchError as exc:
                conn.close()
                if reused and exc.fresh and attempt == 0:
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            if conn.status != 200:
                conn.close()
                raise FetchError(node.id, f"stream {conn.status}", conn.status)
            results = conn.results
            self._pool.release(node, conn)
            return results
        raise AssertionError("unreachable")

    async def _wait(self, node: NodeSpec, conn: _Conn) -> None:
        if conn.error is None and not conn.finished:
            before = conn.progress
            try:
                await conn._sleep(self._read_timeout)
            except TimeoutError:
                if conn.progress == before:
                    raise FetchError(node.id, f"no data for {self._read_timeout:.0f}s") from None
        if conn.error is not None:
            err = conn.error
            if isinstance(err, FetchError):
                raise FetchError(node.id, err.reason, err.status, err.fresh) from None
            raise err

    def close(self) -> None:
        self._pool.close()


__all__ = ["StreamReader", "whole_frames"]
