"""review21f: hole punching takes "the index does not name this PUT" for "a later durable
record of its id supersedes it". A group whose fdatasync and cut-back both failed leaves its
records in a retired pack, never indexed (never acknowledged) but complete: punched, they
are still the newest record of their id at the next restart, which then indexes zeros in
place of the acknowledged copy."""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import pytest

from nodes.packstore import PackStore

BODY = 64 * 1024 + 100


def _body(tag: str) -> bytes:
    return random.Random(tag).randbytes(BODY)


def test_a_failed_groups_records_are_never_punched_into_the_newest_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sid = f"{7:032x}.1"
    s = PackStore(tmp_path, seal_bytes=1 << 24, reserve_bytes=0)
    s.open()
    try:
        asyncio.run(s.put(sid, [_body("v1")]))  # acknowledged
        real = os.fdatasync
        fails = [1]
        real_trunc = os.ftruncate

        def no_trunc(fd: int, n: int) -> None:
            raise OSError(5, "EIO")
        monkeypatch.setattr(os, "ftruncate", no_trunc)

        def flaky(fd: int) -> None:
            if fails[0]:
                fails[0] -= 1
                raise OSError(5, "EIO")
            real(fd)
        monkeypatch.setattr(os, "fdatasync", flaky)
        with pytest.raises(OSError):  # the replace fails; so does its cut-back
            asyncio.run(s.put(sid, [_body("v2")], replace=True))
        monkeypatch.setattr(os, "fdatasync", real)
        monkeypatch.setattr(os, "ftruncate", real_trunc)
        assert s.read(s.locate(sid)) == _body("v1")  # type: ignore[arg-type]
        asyncio.run(s.punch(min_dead=0))
    finally:
        s.close()
    again = PackStore(tmp_path, seal_bytes=1 << 24, reserve_bytes=0)
    again.open()
    try:
        got = again.read(again.locate(sid))  # type: ignore[arg-type]
        print("after restart: v1", got == _body("v1"), "v2", got == _body("v2"),
              "zeros from", next((i for i, b in enumerate(got) if b == 0 and
                                  got[i:i + 4096] == bytes(4096)), None))
        assert got in (_body("v1"), _body("v2"))  # either copy, never a punched body
    finally:
        again.close()


async def test_stopping_the_compactor_does_not_wait_out_a_paced_compaction(
        tmp_path: Path) -> None:
    """A node's stop cancels its compactor mid-run (`Compactor.stop`). The compaction job
    goes on in the committer (a started job is not cancelled; `close` abandons it safely),
    but run_once's `finally: await packs.punch()` queues a punch job BEHIND it and waits:
    the stop then waits for the rest of a compaction paced at compact_rate_bytes_s."""
    from nodes.disk import DiskShardStore
    from nodes.packcompact import Compactor
    from storage.config import PackSettings
    from tests.contract.node_harness import make_shard
    from tests.unit.test_packed_node import BLOCK, PACK_MAX

    shard_bytes = len(make_shard(frames=2, block_size=BLOCK, last=None)[3])
    settings = PackSettings(max_shard_bytes=PACK_MAX, seal_bytes=3 * (shard_bytes + 52),
                            reserve_bytes=0, compact_rate_bytes_s=max(1, shard_bytes // 60))
    store = DiskShardStore(tmp_path, packs=settings)  # each step then waits ~60 s
    await store.start()
    try:
        packs = store.packs
        assert packs is not None
        shards = [make_shard(frames=2, block_size=BLOCK, last=None) for _ in range(10)]
        for sid, _, _, body in shards:
            await packs.put(sid, [body])
        for sid, *_ in shards[:9]:
            if shards.index((sid, *_)) % 3:  # one live shard left in each of 3 packs
                await store.delete(sid)
        assert len(packs.candidates()) >= 2
        compactor = Compactor(store, settings, None)  # type: ignore[arg-type]
        task = asyncio.create_task(compactor.run_once())
        while not (packs._jobs and packs._jobs[0].started
                   and packs._jobs[0].not_before > time.monotonic()):
            await asyncio.sleep(0.01)  # a step copied; the job now waits out its pace
        task.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(task), 5)
        except asyncio.CancelledError:
            pass  # stopped at once, as before packs21
        except TimeoutError:
            task.cancel()
            pytest.fail("the compactor's stop waits for the paced compaction to finish")
    finally:
        await store.close()


def test_a_reused_pack_number_lost_later_is_still_reported(tmp_path: Path) -> None:
    """`packs/dropped` keeps numbers above the newest pack a restart finds. When the newest
    packs were lost, a dropped mark left on a number taken again would hide the later loss
    of the NEW pack under it, though later packs exist (the case packdrops is for).
    packs22: the newest packs' loss is seen (`packs/highest`) and no number is taken
    again: new packs go above the highest made, and their later loss is reported."""
    from nodes import packformat as pf
    from nodes.packrecovery import pack_name

    seal = 2 * (200 + pf.OVERHEAD)
    sids = [f"{i:032x}.1" for i in range(1, 40)]

    def packs() -> list[int]:
        return sorted(int(p.stem, 16) for p in (tmp_path / "packs").glob("*.pack"))

    s = PackStore(tmp_path, seal_bytes=seal, reserve_bytes=0)
    s.open()
    try:
        for sid in sids[:8]:  # two a pack: packs 1-4 sealed, 5 active
            asyncio.run(s.put(sid, [sid.encode() * 6]))
        last_sealed = s.locate(sids[7]).seq  # type: ignore[union-attr]
        for sid in sids[6:8]:  # the newest sealed pack emptied and dropped (recorded)
            asyncio.run(s.delete(sid))
        asyncio.run(s.compact())
        assert last_sealed not in packs()
    finally:
        s.close()
    lost_newest = [seq for seq in packs() if seq > last_sealed]
    for seq in lost_newest:  # the packs above the dropped one lost
        (tmp_path / "packs" / pack_name(seq)).unlink()
    s = PackStore(tmp_path, seal_bytes=seal, reserve_bytes=0)
    s.open()
    try:
        assert s.missing == lost_newest
        for sid in sids[8:16]:  # new packs, above every number made before
            asyncio.run(s.put(sid, [sid.encode() * 6]))
        assert last_sealed not in packs() and min(packs()) < max(lost_newest) < max(packs())
        first_new = min(seq for seq in packs() if seq > max(lost_newest))
    finally:
        s.close()
    (tmp_path / "packs" / pack_name(first_new)).unlink()  # now lost, later packs there
    again = PackStore(tmp_path, seal_bytes=seal, reserve_bytes=0)
    again.open()
    try:
        print("lost:", first_new, "packs:", packs(), "missing:", again.missing)
        assert again.missing == [*lost_newest, first_new]
    finally:
        again.close()


def test_a_failed_groups_new_id_is_not_punched_before_a_restart_revives_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mend21f (F1's other half): a failed group's PUT of an id the index does not hold
    at all looks like a record a later tombstone killed; a restart's scan still applies
    it, so it must not be punched first (its bytes come back whole, as before punching)."""
    sid, other = f"{8:032x}.1", f"{9:032x}.1"
    s = PackStore(tmp_path, seal_bytes=1 << 24, reserve_bytes=0)
    s.open()
    try:
        asyncio.run(s.put(other, [_body("other")]))
        real = os.fdatasync

        def no_trunc(fd: int, n: int) -> None:
            raise OSError(5, "EIO")

        def no_sync(fd: int) -> None:
            raise OSError(5, "EIO")
        with monkeypatch.context() as m:
            m.setattr(os, "ftruncate", no_trunc)
            m.setattr(os, "fdatasync", no_sync)
            with pytest.raises(OSError):  # the PUT fails; so does its cut-back
                asyncio.run(s.put(sid, [_body("new")]))
        assert os.fdatasync is real and s.locate(sid) is None
        asyncio.run(s.punch(min_dead=0))
    finally:
        s.close()
    again = PackStore(tmp_path, seal_bytes=1 << 24, reserve_bytes=0)
    again.open()
    try:
        loc = again.locate(sid)
        assert loc is None or again.read(loc) == _body("new")  # never a punched body
    finally:
        again.close()
