"""Review 18f: failing tests for packed-shard bugs found in pack18c (issue 17).

1. A write that takes the file path (a batch PUT, a streamed or over-limit PUT, any PUT with
   packing switched off while packs remain) of an id a pack already holds: `locate` answers
   from the pack first, so a repair's rewrite never takes effect and a PUT of other bytes is
   acknowledged without ShardExists.
2. Packed quarantine checks `locate(sid) == loc` and then appends an unconditional
   tombstone: a repair PUT queued before that tombstone (acknowledged) is deleted by it.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from nodes.smallio import put_many_sync
from tests.contract.node_harness import make_shard
from tests.unit.test_packed_node import (
    BLOCK,
    PACK_MAX,
    Node,
    _put_replace,
    flip_packed,
    put,
    same_header_other_bytes,
)


async def test_a_batch_rewrite_of_a_packed_shard_is_what_reads_return(tmp_path: Path) -> None:
    """rebuild.py sends small shards as batch puts with replace=True ("the target may hold
    a bad copy"); the batch path writes a shard file and leaves the packed copy winning."""
    n = Node(tmp_path / "data", PACK_MAX)
    await n.start()
    try:
        sid, h, _, body = make_shard(frames=2, block_size=BLOCK, last=None)
        assert (await put(n, body, sid))[0] == 201
        assert n.store.packs is not None and sid in n.store.packs.index
        repaired = same_header_other_bytes(h, 2)
        [res] = await asyncio.to_thread(put_many_sync, n.store, [(sid, repaired, True)])
        assert isinstance(res, int), res  # acknowledged (201 in the batch answer)
        assert await n.call("GET", f"/v1/shards/{sid}?first=0&count=2") == (200, repaired)
    finally:
        await n.stop()


async def test_a_batch_put_of_other_bytes_over_a_packed_shard_is_refused(
        tmp_path: Path) -> None:
    n = Node(tmp_path / "data", PACK_MAX)
    await n.start()
    try:
        sid, h, _, body = make_shard(frames=2, block_size=BLOCK, last=None)
        assert (await put(n, body, sid))[0] == 201
        other = same_header_other_bytes(h, 2)
        [res] = await asyncio.to_thread(put_many_sync, n.store, [(sid, other, False)])
        assert not isinstance(res, int), "other bytes under a held id acknowledged"
    finally:
        await n.stop()


async def test_a_rewrite_with_packing_off_again_is_what_reads_return(tmp_path: Path) -> None:
    """Packs from a life with packing on stay readable with it off (the default); a repair
    rewrite of such a shard goes to a file and the old packed copy keeps being served."""
    data = tmp_path / "data"
    on = Node(data, PACK_MAX)
    await on.start()
    sid, h, _, body = make_shard(frames=2, block_size=BLOCK, last=None)
    try:
        assert (await put(on, body, sid))[0] == 201
    finally:
        await on.stop()
    off = Node(data, 0)
    await off.start()
    try:
        repaired = same_header_other_bytes(h, 2)
        assert (await _put_replace(off, sid, repaired))[0] == 201
        assert await off.call("GET", f"/v1/shards/{sid}?first=0&count=2") == (200, repaired)
    finally:
        await off.stop()


async def test_quarantine_does_not_delete_a_repair_queued_before_its_tombstone(
        tmp_path: Path) -> None:
    """A read found a packed shard bad. Its repair's PUT (replace) is queued in the committer
    (behind a group in its fdatasync) when quarantine checks the index: the index still
    names the bad record, so quarantine queues its tombstone behind the repair. The repair
    is acknowledged, then the tombstone deletes it."""
    n = Node(tmp_path / "data", PACK_MAX)
    await n.start()
    try:
        packs = n.store.packs
        assert packs is not None
        sid, h, _, body = make_shard(frames=2, block_size=BLOCK, last=None)
        assert (await put(n, body, sid))[0] == 201
        flip_packed(n, sid, h.frame_offset(1) + 9)
        check = await n.store.verify(sid)
        assert check.bad == [1]
        hold, held = threading.Event(), threading.Event()

        def hook(point: str, seq: int) -> None:  # the committer, inside a group's write
            if point == "written" and not held.is_set():
                held.set()
                hold.wait(30)
        packs.hook = hook
        other, _, _, other_body = make_shard(frames=1, block_size=BLOCK, last=None)
        busy = asyncio.create_task(put(n, other_body, other))
        await asyncio.to_thread(held.wait, 30)  # a group is in its write: the rest queue
        repaired = same_header_other_bytes(h, 2)
        repair = asyncio.create_task(_put_replace(n, sid, repaired))
        while not packs._pending:  # the repair's record is queued, not yet indexed
            await asyncio.sleep(0.01)
        quarantine = asyncio.create_task(n.store.quarantine(sid, "frame 1", check.file))
        while len(packs._pending) < 2:  # and quarantine's tombstone behind it
            await asyncio.sleep(0.01)
        hold.set()
        assert (await busy)[0] == 201
        assert (await repair)[0] == 201  # the repair is acknowledged ...
        await quarantine
        # ... so its bytes must be what the node serves
        assert await n.call("GET", f"/v1/shards/{sid}?first=0&count=2") == (200, repaired)
    finally:
        await n.stop()


def test_a_live_shard_moved_by_compaction_is_never_absent_to_a_reader(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The committer's `_apply` popped a shard's old location, then set its new one: a
    reader thread between the two found no location (a false 404; a DELETE then found
    nothing to tombstone). When the pop triggers an index merge the gap lasts the whole
    merge (~0.7 s at 1M shards). Forced: another thread locates at the pop itself."""
    from nodes import packindex
    from nodes.packstore import PackStore

    seen: list[object] = []
    watch: set[str] = set()
    real = packindex.PackIndex.__delitem__

    def spying(self: packindex.PackIndex, sid: str) -> None:
        real(self, sid)
        if sid in watch:
            t = threading.Thread(target=lambda: seen.append(store.locate(sid)))
            t.start()
            t.join()
    monkeypatch.setattr(packindex.PackIndex, "__delitem__", spying)
    store = PackStore(tmp_path, seal_bytes=3 * 4300)
    store.open()
    try:
        shards = [make_shard(frames=1, block_size=4096, last=None) for _ in range(4)]

        async def go() -> None:
            for sid, _, _, body in shards:
                await store.put(sid, [body])
            for sid, *_ in shards[:2]:
                await store.delete(sid)
            watch.update(sid for sid, *_ in shards[2:])  # live: moved, never deleted
            await store.compact()
        asyncio.run(go())
        assert store.compacted >= 1
        assert None not in seen
    finally:
        store.close()
