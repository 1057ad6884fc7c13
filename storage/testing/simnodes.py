"""Simulated storage nodes for deterministic in-process tests of the real object service.

`SimNodes` speaks the `NodeClient` interface (put/read/stat/delete/list shards, health,
quarantine) over in-memory shard files, with faults a seeded schedule can inject: a node
down, a shard lost, bits flipped in a shard. Frames are parsed and verified with the real
shard format code, so corruption is detected exactly as a real node would detect it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from storage.config import NodeSpec
from storage.errors import IntegrityError, ShardCorrupt
from storage.shards.client import NodeError
from storage.shards.format import FrameReader, ShardHeader
from storage.shards.ids import parse_shard_id
from storage.shards.slot import ShardSlot


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    """A whole shard body as the one chunk of a stream."""
    yield body


class SimNodes:
    """Every node's shard files in memory; a drop-in for `NodeClient`."""

    def __init__(self, nodes: list[NodeSpec]) -> None:
        self.files: dict[str, dict[str, bytearray]] = {n.id: {} for n in nodes}
        self.mtime: dict[tuple[str, str], float] = {}  # on the node's clock
        self.clock_offset: dict[str, float] = {}  # a node's clock minus the true time
        self.down: set[str] = set()
        self.quarantine: dict[str, list[dict[str, Any]]] = {n.id: [] for n in nodes}
        self.started = {n.id: 1.0 for n in nodes}  # each node's start (a restart: change it)
        self.requests = 0

    # faults ------------------------------------------------------------------------------

    def lose(self, node_id: str, sid: str) -> bool:
        return self.files[node_id].pop(sid, None) is not None

    def flip(self, node_id: str, sid: str, offset: int, bit: int = 0) -> None:
        f = self.files[node_id][sid]
        f[offset % len(f)] ^= 1 << (bit % 8)

    def wipe(self, node_id: str) -> None:
        self.files[node_id].clear()

    def now(self, node_id: str) -> float:
        """The time on a node's clock (off by `clock_offset`, as a host's can be)."""
        return time.time() + self.clock_offset.get(node_id, 0.0)

    def where(self, sid: str) -> list[str]:
        return [n for n, fs in self.files.items() if sid in fs]

    def scrub(self, node_id: str) -> list[str]:
        """Verify every shard of a node, quarantining the corrupt ones (as the scrubber)."""
        bad = []
        for sid, data in list(self.files[node_id].items()):
            try:
                r = FrameReader()
                r.feed(bytes(data))
                if r.pending:
                    raise IntegrityError("trailing bytes")
            except IntegrityError as exc:
                bad.append(sid)
                del self.files[node_id][sid]
                self.quarantine[node_id].append({"shard_id": sid, "reason": str(exc),
                                                 "time": time.time()})
        return bad

    # the NodeClient interface ------------------------------------------------------------

    def _check(self, node: NodeSpec) -> None:
        self.requests += 1
        if node.id in self.down:
            raise NodeError(node.id, "ClientConnectorError: Connect call failed (simulated)")

    async def put_shard(self, node: NodeSpec, sid: str,
                        body: AsyncIterator[bytes | memoryview] | bytes | ShardSlot,
                        segments: int, length: int | None = None, *,
                        replace: bool = False) -> None:
        self._check(node)
        buf = bytearray()
        reader = FrameReader()
        count = 0
        if isinstance(body, ShardSlot):
            body = bytes(body.body)
        if isinstance(body, bytes):
            body = _chunks(body)
        async for chunk in body:
            buf += chunk
            try:
                count += len(reader.feed(chunk))
            except IntegrityError as exc:
                raise NodeError(node.id, f"PUT 409 {exc}", 409) from None
            await asyncio.sleep(0)
        self._check(node)  # went down mid-write
        if segments >= 0 and count != segments:
            raise NodeError(node.id, f"PUT 400 {count} frames, {segments} announced", 400)
        if length is not None and len(buf) != length:
            raise NodeError(node.id, f"PUT 400 {len(buf)} bytes, {length} announced", 400)
        old = self.files[node.id].get(sid)
        if old is not None and old != buf and not replace:  # as a real node: no clobbering
            raise NodeError(node.id, f"PUT 409 shard {sid} exists with other content", 409)
        self.files[node.id][sid] = buf
        self.mtime[(node.id, sid)] = self.now(node.id)

    async def delete_shard(self, node: NodeSpec, sid: str) -> None:
        self._check(node)
        self.files[node.id].pop(sid, None)

    async def stat_shard(self, node: NodeSpec, sid: str) -> dict[str, Any] | None:
        self._check(node)
        data = self.files[node.id].get(sid)
        if data is None:
            return None
        try:
            h = ShardHeader.unpack(bytes(data[:44]))
        except IntegrityError:
            raise NodeError(node.id, "GET 409 corrupt header", 409) from None
        frame = 8 + h.block_size
        segments = -(-(len(data) - 44) // frame)
        mtime = self.mtime.get((node.id, sid), 0.0)
        return {"size": len(data), "segments": segments, "index": h.index, "k": h.k,
                "m": h.m, "mtime": mtime, "age_s": self.now(node.id) - mtime}

    async def list_shards(self, node: NodeSpec, after: str = "", limit: int = 1000) -> list[str]:
        self._check(node)
        return sorted(s for s in self.files[node.id] if s > after)[:limit]

    async def health(self, node: NodeSpec, timeout_s: float = 2.0) -> dict[str, Any]:
        self._check(node)
        fs = self.files[node.id]
        return {"used_bytes": sum(len(b) for b in fs.values()), "free_bytes": 1 << 40,
                "shards": len(fs), "started": self.started[node.id],
                "now": self.now(node.id)}

    async def quarantined(self, node: NodeSpec, since: float = 0.0) -> list[dict[str, Any]]:
        self._check(node)
        return [e for e in self.quarantine[node.id] if e["time"] > since]

    async def quarantine_shard(self, node: NodeSpec, sid: str, reason: str,
                               segment: int | None = None) -> bool:
        self._check(node)
        if self.files[node.id].pop(sid, None) is None:
            return False
        self.quarantine[node.id].append({"shard_id": sid, "reason": f"gateway: {reason}",
                                         "time": time.time()})
        return True

    async def scrub_status(self, node: NodeSpec) -> dict[str, Any]:
        self._check(node)
        return {}

    async def ack_lost_packs(self, node: NodeSpec, packs: list[int]) -> list[int]:
        self._check(node)
        return []  # simulated nodes keep no packs

    async def read_frames(self, node: NodeSpec, sid: str, expect: ShardHeader, first: int,
                          count: int) -> AsyncIterator[tuple[int, bytes]]:
        self._check(node)
        data = self.files[node.id].get(sid)
        if data is None:
            raise NodeError(node.id, "GET 404", 404)
        parse_shard_id(sid)
        reader = FrameReader()
        try:
            frames = reader.feed(bytes(data))
        except IntegrityError as exc:
            raise ShardCorrupt(sid, f"on {node.id}: {exc}") from None
        h = reader.header
        if h is None or h.stripe_id != expect.stripe_id or h.index != expect.index:
            raise ShardCorrupt(sid, f"on {node.id}: header names another shard")
        got = 0
        for seg, block in frames[first:first + count]:
            await asyncio.sleep(0)
            self._check(node)
            got += 1
            yield seg, block
        if got != count:
            raise NodeError(node.id, f"short read: {got} of {count} frames")

    async def put_small(self, node: NodeSpec, sid: str, data: bytes, segments: int, *,
                        replace: bool = False, bulk: bool = False) -> None:
        async def body() -> AsyncIterator[bytes]:
            yield data

        await self.put_shard(node, sid, body(), segments, len(data), replace=replace)

    async def read_small(self, node: NodeSpec, sid: str, expect: ShardHeader, first: int,
                         count: int, *, bulk: int = 0) -> list[tuple[int, bytes]]:
        return [f async for f in self.read_frames(node, sid, expect, first, count)]
