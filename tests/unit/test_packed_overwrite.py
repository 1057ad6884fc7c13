"""A PUT that takes the file path (packing off again, or a size packing does not take) of an
id a pack holds follows the one whole-shard commit rule (`DiskShardStore`): no rewrite is
decided by the packed copy (same bytes: nothing written; other bytes: 409), a rewrite
tombstones the packed copy durably before its 201, so a restart serves the new bytes too.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from nodes.shardfile import UNCHANGED
from nodes.smallio import put_many_sync
from tests.contract.node_harness import make_shard
from tests.unit.test_packed_node import (
    BLOCK,
    PACK_MAX,
    Node,
    _put_replace,
    put,
    same_header_other_bytes,
)


async def _packed_then(data: Path, pack_max: int) -> tuple[Node, str, object, bytes]:
    """A shard packed by a node with packing on, and the node restarted at `pack_max`."""
    on = Node(data, PACK_MAX)
    await on.start()
    sid, h, _, body = make_shard(frames=2, block_size=BLOCK, last=None)
    try:
        assert (await put(on, body, sid))[0] == 201
    finally:
        await on.stop()
    n = Node(data, pack_max)
    await n.start()
    return n, sid, h, body


async def test_other_bytes_over_a_packed_shard_with_packing_off_are_refused(
        tmp_path: Path) -> None:
    n, sid, h, body = await _packed_then(tmp_path / "data", 0)
    try:
        status, _ = await put(n, same_header_other_bytes(h, 2), sid)  # type: ignore[arg-type]
        assert status == 409
        assert (await put(n, body, sid))[0] == 201  # the same bytes again: idempotent
        assert not Path(n.store.shard_path(sid)).exists()  # and nothing written for it
        [same] = await asyncio.to_thread(put_many_sync, n.store, [(sid, body, False)])
        assert same == UNCHANGED
        assert await n.call("GET", f"/v1/shards/{sid}?first=0&count=2") == (200, body)
    finally:
        await n.stop()


async def test_a_rewrite_over_a_packed_shard_survives_a_restart(tmp_path: Path) -> None:
    """The packed copy is tombstoned durably before the rewrite's 201: after a restart (which
    rebuilds the index from the packs) the file's new bytes are served, not the old record."""
    data = tmp_path / "data"
    small = 4096  # packing on, but the shard is over the limit: a file
    n, sid, h, _ = await _packed_then(data, small)
    repaired = same_header_other_bytes(h, 2)  # type: ignore[arg-type]
    try:
        assert (await _put_replace(n, sid, repaired))[0] == 201
        assert n.store.packs is not None and sid not in n.store.packs.index
    finally:
        await n.stop()
    for pack_max in (0, PACK_MAX):
        again = Node(data, pack_max)
        await again.start()
        try:
            assert await again.call("GET", f"/v1/shards/{sid}?first=0&count=2") == (
                200, repaired)
        finally:
            await again.stop()
