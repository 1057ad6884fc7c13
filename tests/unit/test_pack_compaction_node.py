"""Compaction seen from a node (issue 17 step 8): a reader that located a shard before its
pack was compacted away still reads it (no false 404: forced interleaving, not timing), and
the node's compactor reclaims packs while every live shard keeps answering."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from aiohttp import web

from nodes.app import create_app
from nodes.disk import DiskShardStore
from nodes.handlers import NODE
from nodes.leanput import LeanListener
from nodes.packcompact import COMPACTOR
from nodes.shardfile import stat_file, verify_file
from storage.config import PackSettings
from tests.contract.node_harness import make_shard
from tests.unit.test_node_get_abort import SECRET
from tests.unit.test_packed_node import BLOCK, PACK_MAX, Node, put
from tests.unit.test_shard_location import streamed

SHARD_BYTES = len(make_shard(frames=2, block_size=BLOCK, last=None)[3])
SEAL = 3 * (SHARD_BYTES + 52)  # three shards a pack


@pytest.mark.parametrize("reader", ["stream", "stat", "verify"])
async def test_a_shard_located_before_its_pack_went_is_read_where_it_moved(
        tmp_path: Path, reader: str) -> None:
    store = DiskShardStore(tmp_path, packs=PackSettings(max_shard_bytes=PACK_MAX,
                                                        seal_bytes=SEAL, reserve_bytes=0))
    await store.start()
    try:
        assert store.packs is not None
        shards = [make_shard(frames=2, block_size=BLOCK, last=None) for _ in range(4)]
        for sid, _, _, body in shards:
            await store.packs.put(sid, [body])
        sid, _, _, body = shards[2]
        where = store.locate(sid)  # the reader locates: pack 1 ...
        for other, *_ in shards[:2]:
            await store.delete(other)
        assert await store.packs.compact() > 0  # ... compaction moves it, unlinks pack 1 ...
        assert not Path(where.path).exists() and store.locate(sid).path != where.path
        if reader == "stream":  # ... and only then does the reader open it
            assert await streamed(sid, where, 0, None) == body
        elif reader == "stat":
            assert stat_file(where, sid)["size"] == len(body)
        else:
            assert verify_file(where, sid).bad == []
    finally:
        await store.close()


class SmallPackNode(Node):
    """A node whose packs seal after three shards, its compactor run by the test."""

    async def start(self) -> None:
        app = create_app("n1", "az1", self.data, SECRET, 60, packs=PackSettings(
            max_shard_bytes=self.pack_max, seal_bytes=SEAL, compact_interval_s=3600,
            reserve_bytes=0))
        self.app = app
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        self.listener = LeanListener(app[NODE], self.runner)
        self.host, self.port = await self.listener.start("127.0.0.1", 0)
        self.store: DiskShardStore = app[NODE].store


async def test_the_nodes_compactor_reclaims_packs_and_every_shard_still_answers(
        tmp_path: Path) -> None:
    n = SmallPackNode(tmp_path / "data", PACK_MAX)
    await n.start()
    shards = [make_shard(frames=2, block_size=BLOCK, last=None) for _ in range(9)]
    try:
        for sid, _, _, body in shards:
            assert (await put(n, body, sid))[0] == 201
        gone = [s for i, s in enumerate(shards) if i % 3 != 1]
        for sid, *_ in gone:
            assert (await n.call("DELETE", f"/v1/shards/{sid}"))[0] == 204
        before = sorted(p.name for p in (n.data / "packs").glob("*.pack"))
        copied = await n.app[COMPACTOR].run_once()
        after = sorted(p.name for p in (n.data / "packs").glob("*.pack"))
        assert copied == 3 * (SHARD_BYTES + 52) and not set(before[:3]) & set(after)
        await n.stop()
        await n.start()
        for i, (sid, _, _, body) in enumerate(shards):
            status, got = await n.call("GET", f"/v1/shards/{sid}")
            assert (status, got) == ((200, body) if i % 3 == 1 else (404, got)), sid
    finally:
        await n.stop()


async def test_reads_deletes_and_compaction_of_the_same_packs_at_once(tmp_path: Path) -> None:
    """Readers GET shards of the packs being compacted while their neighbours are deleted
    and the compactor runs again and again: a kept shard always answers 200 with its bytes,
    a deleted one its bytes or 404 (never other bytes, a 500 or a short body), and after a
    restart the node holds exactly the kept shards."""
    n = SmallPackNode(tmp_path / "data", PACK_MAX)
    await n.start()
    shards = {sid: body for sid, _, _, body in
              (make_shard(frames=2, block_size=BLOCK, last=None) for _ in range(30))}
    ids = sorted(shards)
    doomed = [sid for i, sid in enumerate(ids) if i % 3]
    kept = [sid for i, sid in enumerate(ids) if not i % 3]
    reads = [0]
    done = asyncio.Event()

    async def reader(seed: int) -> None:
        rng = random.Random(seed)
        while not done.is_set():
            sid = rng.choice(ids)
            status, got = await n.call("GET", f"/v1/shards/{sid}")
            if sid in kept or status != 404:
                assert (status, got == shards[sid]) == (200, True), (sid, status)
            reads[0] += 1

    async def deleter() -> None:
        for sid in doomed:
            assert (await n.call("DELETE", f"/v1/shards/{sid}"))[0] == 204

    async def compactor(deleting: asyncio.Task[None]) -> int:
        copied = 0
        packs = n.store.packs
        assert packs is not None
        while not deleting.done() or packs.candidates():
            copied += await n.app[COMPACTOR].run_once()
            await asyncio.sleep(0)
        return copied

    try:
        for sid in ids:
            assert (await put(n, shards[sid], sid))[0] == 201
        readers = [asyncio.create_task(reader(i)) for i in range(3)]
        deleting = asyncio.create_task(deleter())
        try:
            copied = await compactor(deleting)
            await deleting
        finally:
            done.set()
            await asyncio.gather(*readers)
        assert copied > 0 and reads[0] > len(ids)
        await n.stop()
        await n.start()
        for sid in ids:
            status, got = await n.call("GET", f"/v1/shards/{sid}")
            assert (status, got) == ((200, shards[sid]) if sid in kept else (404, got)), sid
    finally:
        await n.stop()
