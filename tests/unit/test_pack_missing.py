"""packs21: a pack gone though compaction never dropped it (deleted by hand, lost with a
directory entry) while later packs exist is damage: the restart reports it (`damage`,
`missing`; a node's health and metrics), its shards are absent (repair's stat gets 404 and
rebuilds them), and a pack compaction dropped is never taken for a lost one."""

from __future__ import annotations

import asyncio
import errno
import json
from pathlib import Path

import pytest
from aiohttp import web

from nodes import packformat as pf
from nodes.app import create_app
from nodes.handlers import NODE
from nodes.leanput import LeanListener
from nodes.packdrops import Drops
from nodes.packrecovery import pack_name
from nodes.packstore import PackStore
from storage.config import PackSettings
from tests.contract.node_harness import make_shard
from tests.unit.test_node_get_abort import SECRET
from tests.unit.test_packed_node import BLOCK, PACK_MAX, Node

SIDS = [f"{i:032x}.1" for i in range(1, 9)]


def _packs(root: Path) -> list[int]:
    return sorted(int(p.stem, 16) for p in (root / "packs").glob("*.pack"))


def test_a_lost_pack_is_reported_and_a_compacted_one_is_not(tmp_path: Path) -> None:
    s = PackStore(tmp_path, seal_bytes=2 * (200 + pf.OVERHEAD), reserve_bytes=0)
    s.open()
    try:
        for sid in SIDS:  # two a pack
            asyncio.run(s.put(sid, [sid.encode() * 6]))
        where = {sid: s.locate(sid).seq for sid in SIDS}  # type: ignore[union-attr]
        assert len(set(where.values())) >= 4
        first = where[SIDS[0]]
        for sid in SIDS[:2]:  # the first pack emptied and compacted away
            asyncio.run(s.delete(sid))
        asyncio.run(s.compact())
        assert first not in _packs(tmp_path)
    finally:
        s.close()
    lost = where[SIDS[4]]
    assert lost not in (first, max(_packs(tmp_path)))
    (tmp_path / "packs" / pack_name(lost)).unlink()  # a later pack is still there
    again = PackStore(tmp_path, seal_bytes=s.seal_bytes, reserve_bytes=0)
    again.open()
    try:
        print("damage:", [(d.seq, getattr(d, "missing", None)) for d in again.damage])
        assert [d.seq for d in again.damage] == [lost]
        assert again.missing == [lost]
        assert [d.seq for d in again.damage if d.missing] == [lost]
        assert all(again.locate(sid) is None for sid in SIDS if where[sid] == lost)
        assert all(again.locate(sid) is not None for sid in SIDS[2:] if where[sid] != lost)
    finally:
        again.close()
    third = PackStore(tmp_path, seal_bytes=s.seal_bytes, reserve_bytes=0)
    third.open()  # still gone: still said
    try:
        assert third.missing == [lost]
    finally:
        third.close()


async def test_a_node_says_a_lost_pack_in_health_and_metrics(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shards = [make_shard(frames=1, block_size=BLOCK, last=None) for _ in range(3)]
    s = PackStore(data, seal_bytes=BLOCK, reserve_bytes=0)  # one shard a pack
    s.open()
    try:
        for sid, _, _, body in shards:
            await s.put(sid, [body])
        seqs = [s.locate(sid).seq for sid, *_ in shards]  # type: ignore[union-attr]
    finally:
        s.close()
    assert len(set(seqs)) == 3
    (data / "packs" / pack_name(seqs[1])).unlink()
    node = Node(data, PACK_MAX)
    app = create_app("n1", "az1", data, SECRET, 60,
                     packs=PackSettings(max_shard_bytes=PACK_MAX, seal_bytes=BLOCK,
                                        reserve_bytes=0))
    node.runner = web.AppRunner(app)
    await node.runner.setup()
    node.listener = LeanListener(app[NODE], node.runner)
    node.host, node.port = await node.listener.start("127.0.0.1", 0)
    try:
        status, raw = await node.call("GET", "/v1/health")
        health = json.loads(raw)
        _, metrics = await node.call("GET", "/metrics")
        print("health:", {k: health[k] for k in ("pack_damage", "packs_missing")})
        assert status == 200 and health["packs_missing"] == 1 and health["pack_damage"] == 1
        assert b"tessera_node_packs_missing 1.0" in metrics
        lost = shards[1][0]
        assert (await node.call("GET", f"/v1/shards/{lost}/stat"))[0] == 404  # repair's view
        assert (await node.call("GET", f"/v1/shards/{shards[2][0]}/stat"))[0] == 200
    finally:
        await node.stop()


def test_a_drop_that_cannot_be_recorded_empties_the_pack_and_drops_it_later(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a disk too full even for the drop record, the pack's blocks still go back (it is
    emptied, its name kept: never taken for a lost pack), and a later run drops it."""
    s = PackStore(tmp_path, seal_bytes=2 * (200 + pf.OVERHEAD), reserve_bytes=0)
    s.open()
    try:
        for sid in SIDS[:4]:
            asyncio.run(s.put(sid, [sid.encode() * 6]))
        first = s.locate(SIDS[0]).seq  # type: ignore[union-attr]
        for sid in SIDS[:2]:
            asyncio.run(s.delete(sid))

        def full(seq: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(s.drops, "add", full)
        asyncio.run(s.compact())
        path = tmp_path / "packs" / pack_name(first)
        assert path.exists() and path.stat().st_size == 0
        monkeypatch.undo()
        asyncio.run(s.compact())
        assert not path.exists()
    finally:
        s.close()
    again = PackStore(tmp_path, seal_bytes=s.seal_bytes, reserve_bytes=0)
    again.open()
    try:
        assert again.missing == [] and again.damage == []
        assert all(again.locate(sid) is not None for sid in SIDS[2:4])
    finally:
        again.close()


def test_a_record_left_by_packs_all_gone_never_hides_the_new_packs_loss(
        tmp_path: Path) -> None:
    """Every pack file removed but `dropped` kept: numbering starts at 1 again, and a later
    loss of one of the new packs is still reported."""
    drops = Drops(tmp_path)
    assert drops.open([]) == []
    for seq in range(1, 6):
        drops.add(seq)
    assert Drops(tmp_path).open([]) == []  # all gone: the record starts over
    assert Drops(tmp_path).open([1, 3]) == [2]


def test_a_full_disk_at_open_never_keeps_a_store_from_opening(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store from before the record, opened on a full disk: it opens (the record is
    written at the next drop)."""
    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    drops = Drops(tmp_path)  # packs 2 and 5 there, no record yet
    monkeypatch.setattr(drops, "_save", full)
    assert drops.open([2, 5]) == [] and drops.ranges == [(1, 1), (3, 4)]


def test_the_newest_packs_lost_are_reported_and_their_numbers_never_taken_again(
        tmp_path: Path) -> None:
    """packs22: a crash that lost the tail files, or an operator deleting the newest packs,
    left no gap below the packs there are, so nothing was reported and their shards were
    silently gone (stat 200 nowhere, but no damage either). `packs/highest` keeps the
    highest number made: the lost ones are reported, and new packs go above them."""
    s = PackStore(tmp_path, seal_bytes=2 * (200 + pf.OVERHEAD), reserve_bytes=0)
    s.open()
    try:
        for sid in SIDS:  # two a pack
            asyncio.run(s.put(sid, [sid.encode() * 6]))
        where = {sid: s.locate(sid).seq for sid in SIDS}  # type: ignore[union-attr]
    finally:
        s.close()
    newest = _packs(tmp_path)[-2:]  # the two newest gone: no gap left below the rest
    for seq in newest:
        (tmp_path / "packs" / pack_name(seq)).unlink()
    for _ in range(2):  # and on the next restart too
        again = PackStore(tmp_path, seal_bytes=s.seal_bytes, reserve_bytes=0)
        again.open()
        try:
            print("lost:", newest, "missing:", again.missing)
            assert again.missing == newest
            assert [d.seq for d in again.damage if d.missing] == newest
            assert all(again.locate(sid) is None for sid in SIDS if where[sid] in newest)
            asyncio.run(again.put(f"{99:032x}.1", [b"x" * 300]))
            assert again.locate(f"{99:032x}.1").seq > max(newest)  # type: ignore[union-attr]
            asyncio.run(again.delete(f"{99:032x}.1"))
        finally:
            again.close()


async def test_a_lost_pack_acknowledged_is_no_longer_reported_even_after_a_restart(
        tmp_path: Path) -> None:
    """packs22: a lost pack was reported for ever. The node stops reporting it once told it
    is dealt with (`POST /v1/packs/lost/ack`: the repair sweep, once every shard is whole
    again, or `tessera node lost-packs ID --ack`), durably: a restart does not bring it back."""
    data = tmp_path / "data"
    s = PackStore(data, seal_bytes=BLOCK, reserve_bytes=0)  # one shard a pack
    s.open()
    try:
        for sid, _, _, body in [make_shard(frames=1, block_size=BLOCK, last=None)
                                for _ in range(3)]:
            await s.put(sid, [body])
        second = sorted(s.sizes)[1]
    finally:
        s.close()
    (data / "packs" / pack_name(second)).unlink()
    node = Node(data, PACK_MAX)
    await node.start()
    try:
        health = json.loads((await node.call("GET", "/v1/health"))[1])
        assert health["packs_lost"] == [second] and health["packs_missing"] == 1
        assert (await node.call("POST", "/v1/packs/lost/ack?packs=x"))[0] == 400
        status, raw = await node.call("POST", f"/v1/packs/lost/ack?packs={second + 50}")
        assert status == 200 and json.loads(raw)["acknowledged"] == []  # not one it reports
        status, raw = await node.call("POST", f"/v1/packs/lost/ack?packs={second}")
        print("ack:", status, raw)
        assert status == 200 and json.loads(raw)["acknowledged"] == [second]
        health = json.loads((await node.call("GET", "/v1/health"))[1])
        assert health["packs_lost"] == [] and health["packs_missing"] == 0
        assert health["pack_damage"] == 0
    finally:
        await node.stop()
    again = PackStore(data, seal_bytes=BLOCK, reserve_bytes=0)
    again.open()
    try:
        assert again.missing == [] and again.damage == []
    finally:
        again.close()
