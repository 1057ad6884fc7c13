"""The node transport: what the storage library asks of the storage nodes.

`NodeClient` (signed HTTP to real nodes) and `storage.testing.simnodes.SimNodes` (in-memory
nodes of the simulation tests) both implement it; `Cluster.wire` takes either, so the tests
run the real wiring.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from storage.config import NodeSpec
from storage.shards.format import ShardHeader
from storage.shards.slot import ShardSlot


class NodeTransport(Protocol):
    """Shard I/O, listing, health and scrub/quarantine calls to one node at a time."""

    async def put_shard(self, node: NodeSpec, sid: str,
                        body: AsyncIterator[bytes | memoryview] | bytes | ShardSlot,
                        segments: int, length: int | None = None, *,
                        replace: bool = False) -> None: ...

    async def put_small(self, node: NodeSpec, sid: str, data: bytes, segments: int, *,
                        replace: bool = False, bulk: bool = False) -> None: ...

    def read_frames(self, node: NodeSpec, sid: str, expect: ShardHeader, first: int,
                    count: int) -> AsyncIterator[tuple[int, bytes]]: ...

    async def read_small(self, node: NodeSpec, sid: str, expect: ShardHeader, first: int,
                         count: int, *, bulk: int = 0) -> list[tuple[int, bytes]]: ...

    async def delete_shard(self, node: NodeSpec, sid: str) -> None: ...

    async def stat_shard(self, node: NodeSpec, sid: str) -> dict[str, Any] | None: ...

    async def list_shards(self, node: NodeSpec, after: str = "",
                          limit: int = 1000) -> list[str]: ...

    async def health(self, node: NodeSpec, timeout_s: float = 2.0) -> dict[str, Any]: ...

    async def quarantined(self, node: NodeSpec, since: float = 0.0) -> list[dict[str, Any]]: ...

    async def quarantine_shard(self, node: NodeSpec, sid: str, reason: str,
                               segment: int | None = None) -> bool: ...

    async def scrub_status(self, node: NodeSpec) -> dict[str, Any]: ...

    async def ack_lost_packs(self, node: NodeSpec, packs: list[int]) -> list[int]: ...


__all__ = ["NodeTransport"]
