"""packs21: hole punching gives the blocks of dead packed shards back in place (no copy):
only whole blocks inside dead PUT bodies, never a live record, a head or a trailer, so a
restart's scan and a footer still see complete records and report no damage."""

from __future__ import annotations

import asyncio
import errno
import os
import random
from pathlib import Path

import pytest

from nodes import packformat as pf
from nodes import packpunch
from nodes.packstore import PackStore

BODY = 64 * 1024 + 100  # each dead body holds whole blocks to punch


def _body(sid: str, gen: int) -> bytes:
    return random.Random(f"{sid}/{gen}").randbytes(BODY)


def _blocks(s: PackStore) -> int:
    return sum(os.stat(s.path_of(seq)).st_blocks * 512 for seq in s.sizes)


def test_punching_frees_dead_bodies_in_place_and_never_a_live_record(tmp_path: Path) -> None:
    s = PackStore(tmp_path, seal_bytes=6 * (BODY + pf.OVERHEAD), compact_ratio=0.1,
                  reserve_bytes=0)
    s.open()
    rng = random.Random(21)
    want: dict[str, bytes] = {}
    gen = 0
    try:
        sids = [f"{i:032x}.{i % 6}" for i in range(1, 13)]
        for sid in sids:
            asyncio.run(s.put(sid, [_body(sid, 0)]))
            want[sid] = _body(sid, 0)
        for _ in range(20):  # replaces and deletes leave dead records in sealed packs
            sid, gen = rng.choice(sids), gen + 1
            if rng.random() < 0.5 and sid in want:
                asyncio.run(s.delete(sid))
                del want[sid]
            else:
                asyncio.run(s.put(sid, [_body(sid, gen)], replace=True))
                want[sid] = _body(sid, gen)
        dead = sum(s.sizes[q] - s.live.get(q, 0) for q in s.sizes if q != s._active)
        before = _blocks(s)
        freed = asyncio.run(s.punch(min_dead=0))
        after = _blocks(s)
        print("dead bytes in sealed packs:", dead, "freed:", freed, "blocks before/after:",
              before, after, "disk_bytes:", s.disk_bytes())
        assert freed > 0 and before - after == freed
        assert freed >= dead - (pf.OVERHEAD + 2 * 4096) * 20 - 4096 * 12
        assert not s.candidates()  # nothing compaction would have copied
        for sid, body in want.items():  # every live shard whole
            assert s.read(s.locate(sid)) == body  # type: ignore[arg-type]
        assert asyncio.run(s.punch(min_dead=0)) == 0  # nothing more to give
    finally:
        s.close()
    again = PackStore(tmp_path, seal_bytes=s.seal_bytes, compact_ratio=0.1, reserve_bytes=0)
    again.open()  # the punched zeros are inside complete records: no damage, same index
    try:
        assert again.damage == []
        assert sorted(sid for sid in want) == sorted(
            sid for sid in (f"{i:032x}.{i % 6}" for i in range(1, 13))
            if again.locate(sid) is not None)
        for sid, body in want.items():
            assert again.read(again.locate(sid)) == body  # type: ignore[arg-type]
    finally:
        again.close()


def test_a_file_system_that_cannot_punch_turns_punching_off(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unsupported(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(packpunch, "punch_hole", unsupported)
    s = PackStore(tmp_path, seal_bytes=2 * (BODY + pf.OVERHEAD), reserve_bytes=0)
    s.open()
    try:
        sids = [f"{i:032x}.1" for i in range(1, 6)]
        for sid in sids:
            asyncio.run(s.put(sid, [_body(sid, 0)]))
        for sid in sids[:2]:
            asyncio.run(s.delete(sid))
        assert asyncio.run(s.punch(min_dead=0)) == 0 and s.punch_off
        assert asyncio.run(s.compact()) >= 0  # compaction alone still reclaims
        for sid in sids[2:]:
            assert s.read(s.locate(sid)) == _body(sid, 0)  # type: ignore[arg-type]
    finally:
        s.close()


def test_inner_blocks_stay_inside_the_body() -> None:
    assert packpunch.inner_blocks(48, 4096 + 48, 4096) is None
    assert packpunch.inner_blocks(48, 3 * 4096 + 1, 4096) == (4096, 3 * 4096)
    assert packpunch.inner_blocks(4096, 8192, 4096) == (4096, 8192)


async def test_the_nodes_compactor_punches_what_compaction_leaves(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pack two thirds live is no compaction candidate: the compactor's run punches its
    dead shard in place; the disk bytes the node reports drop, every live shard answers."""
    from nodes.packcompact import COMPACTOR
    from tests.contract.node_harness import make_shard
    from tests.unit.test_pack_compaction_node import SmallPackNode
    from tests.unit.test_packed_node import BLOCK, PACK_MAX, put

    monkeypatch.setattr(packpunch, "PUNCH_MIN", 0)
    n = SmallPackNode(tmp_path / "data", PACK_MAX)
    await n.start()
    shards = [make_shard(frames=2, block_size=BLOCK, last=None) for _ in range(7)]
    try:
        for sid, _, _, body in shards:
            assert (await put(n, body, sid))[0] == 201
        for sid, *_ in shards[:6:3]:  # one of three in each sealed pack
            assert (await n.call("DELETE", f"/v1/shards/{sid}"))[0] == 204
        before = (await n.store.usage())["disk_bytes"]
        assert await n.app[COMPACTOR].run_once() == 0  # nothing worth copying
        packs = n.store.packs
        assert packs is not None and packs.punched >= 2 * (2 * BLOCK - 8192)  # whole blocks
        after = (await n.store.usage())["disk_bytes"]
        print("disk bytes before/after:", before, after, "punched:", packs.punched)
        assert before - after >= 2 * (2 * BLOCK - 8192)
        for i, (sid, _, _, body) in enumerate(shards):
            status, got = await n.call("GET", f"/v1/shards/{sid}")
            assert (status, got) == ((404, got) if i in (0, 3) else (200, body)), sid
    finally:
        await n.stop()


def test_the_active_pack_is_punched_too(tmp_path: Path) -> None:
    """newuser21: a node that never writes `seal_bytes` keeps one active pack; deleting most
    of its shards gives their blocks back (before, only sealed packs were punched, so the
    disk of a small cluster never shrank after deletes). Live shards read back, appends go
    on after the holes, and a restart's scan of the unsealed pack finds no damage."""
    s = PackStore(tmp_path, seal_bytes=1 << 30, reserve_bytes=0)
    s.open()
    want: dict[str, bytes] = {}
    try:
        sids = [f"{i:032x}.{i % 6}" for i in range(1, 11)]
        for sid in sids:
            asyncio.run(s.put(sid, [_body(sid, 0)]))
            want[sid] = _body(sid, 0)
        for sid in sids[:8]:
            asyncio.run(s.delete(sid))
            del want[sid]
        assert list(s.sizes) == [s._active]  # one pack, never sealed
        before = _blocks(s)
        freed = asyncio.run(s.punch(min_dead=0))
        after = _blocks(s)
        print("active pack: freed", freed, "blocks before/after:", before, after)
        assert freed >= 8 * (BODY - 2 * 4096) and before - after == freed
        assert s.disk_bytes() == after  # what node health and `tessera status` report
        late = f"{99:032x}.3"
        asyncio.run(s.put(late, [_body(late, 0)]))  # appends go on after the holes
        want[late] = _body(late, 0)
        for sid, body in want.items():
            assert s.read(s.locate(sid)) == body  # type: ignore[arg-type]
    finally:
        s.close()
    again = PackStore(tmp_path, seal_bytes=1 << 30, reserve_bytes=0)
    again.open()
    try:
        assert again.damage == []
        assert again.disk_bytes() == _blocks(again)  # the holes counted from the start on
        for sid in sids[:8]:
            assert again.locate(sid) is None
        for sid, body in want.items():
            assert again.read(again.locate(sid)) == body  # type: ignore[arg-type]
    finally:
        again.close()
