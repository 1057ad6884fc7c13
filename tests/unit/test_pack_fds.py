"""A pack store holds a few fds, not one per pack for its whole life (review18f finding 4):
with the usual soft RLIMIT_NOFILE of 1024 and 256 MiB packs, ~250 GB of packs hit EMFILE at
start or under load. The committer keeps the active pack's fd and a small LRU of others."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from nodes.packstore import FD_CACHE, PackStore
from tests.contract.node_harness import make_shard

PACKS = 3 * FD_CACHE + 5


def pack_fds() -> int:
    """The fds this process holds open on pack files."""
    n = 0
    for f in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{f}").endswith(".pack"):
                n += 1
        except OSError:
            pass
    return n


def test_many_packs_hold_a_bounded_number_of_fds(tmp_path: Path) -> None:
    before = pack_fds()
    store = PackStore(tmp_path, seal_bytes=1)  # every shard seals its pack: a pack each
    store.open()
    shards = [make_shard(frames=1, block_size=4096, last=None) for _ in range(PACKS)]

    async def fill() -> None:
        for sid, _, _, body in shards:
            await store.put(sid, [body])
        for sid, _, _, body in shards:  # same bytes again: each read through the committer
            assert await store.put(sid, [body]) != -1
    try:
        asyncio.run(fill())
        assert len(list((tmp_path / "packs").glob("*.pack"))) >= PACKS
        assert pack_fds() - before <= FD_CACHE + 1
    finally:
        store.close()
    assert pack_fds() == before
    again = PackStore(tmp_path, seal_bytes=1)
    again.open()  # a restart indexes every pack and keeps at most the active one open

    async def drain() -> int:
        for sid, _, _, body in shards:
            loc = again.locate(sid)
            assert loc is not None and again.read(loc) == body
        for sid, *_ in shards[::2]:
            assert await again.delete(sid)
        return await again.compact()
    try:
        assert pack_fds() - before <= 1
        asyncio.run(drain())  # compaction opens the packs it needs on demand
        assert again.compacted >= PACKS // 2
        for sid, _, _, body in shards[1::2]:
            loc = again.locate(sid)
            assert loc is not None and again.read(loc) == body
        assert pack_fds() - before <= FD_CACHE + 1
    finally:
        again.close()
    assert pack_fds() == before
