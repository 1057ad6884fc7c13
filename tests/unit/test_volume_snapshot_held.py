"""A snapshot of a live journaled writer holds its journal instead of folding it.

The writer's snapshot used to fold the whole journal into extents before freezing (one
whole-extent rewrite per extent the journal touched) inside the daemon's setxattr, while the
kernel held the mount's inode lock: every write and fsync waited 13-50 s. Now it freezes the
extent map with the journal range it replays (storage/volume_held.py): no extent is written
for it, the writer folds on at the next generation, and the segments the snapshot needs are
kept until it is deleted.
"""

from __future__ import annotations

import asyncio
from typing import Any

from storage.keyspace import GC, kept_journal_prefix, pack, stripe_index_key
from storage.records import unpack
from storage.volume_overlay import JournaledVolume
from storage.volume_records import scan_prefix
from storage.volumes import VolumeService
from tests.unit.test_volume_journal import SIZE, crash, with_service

MiB = 1 << 20
PAGE = 4096


async def kept(svc: VolumeService, vid: str) -> list[dict[str, Any]]:
    """The kept journal segment records (VJK) of volume `vid`."""
    return [unpack(i.value) async for i in scan_prefix(svc.meta, kept_journal_prefix(vid))]


async def write_page(svc: VolumeService, name: str, tag: bytes, at: int = 0,
                     holder: str = "w") -> None:
    """One page of `tag` written at `at` of volume `name` of tenant "t", through an attach
    of its own (open, write, close)."""
    h = await svc.open("t", name, holder=holder)
    await h.write(at, tag * PAGE)
    await h.close()


async def read_page(svc: VolumeService, name: str, at: int = 0, holder: str = "r") -> bytes:
    """The page at `at` of volume `name` of tenant "t", read through an attach of its own."""
    h = await svc.open("t", name, holder=holder)
    try:
        return await h.read(at, PAGE)
    finally:
        await h.close()


async def read_snap(svc: VolumeService, name: str, snap: str) -> bytes:
    ro = await svc.open("t", name, holder="ro", snapshot=snap)
    return await ro.read(0, ro.vol.size)


def pages(tag: bytes) -> list[tuple[int, bytes]]:
    """Random-looking single pages on every extent: journaled, never written directly."""
    return [(i * 37 * PAGE % SIZE, tag * PAGE) for i in range(1, 24)]


async def new_writer(svc: VolumeService, **kw: Any) -> JournaledVolume:
    """Volume "v" of tenant "t", created and attached by a journaled writer "w" (given
    JournaledVolume's keyword arguments `kw`)."""
    await svc.create("t", "v", SIZE)
    return JournaledVolume(await svc.open("t", "v", holder="w"), **kw)


async def write_pages(w: JournaledVolume, tag: bytes) -> None:
    """`pages(tag)` written through `w` (journaled, not fsynced)."""
    for off, data in pages(tag):
        await w.write(off, data)


async def detach(w: JournaledVolume) -> None:
    """Stop `w`'s folder and close its volume."""
    await w.stop()
    await w.vol.close()


def test_a_snapshot_writes_no_extent_and_holds_the_journal() -> None:
    async def body(svc: VolumeService) -> None:
        w = await new_writer(svc)
        await write_pages(w, b"a")
        await w.flush()  # fsynced: in the journal only
        before = bytearray(SIZE)
        for off, data in pages(b"a"):
            before[off:off + len(data)] = data
        writes = []
        real_write, real_trim = w.vol.write_extent, w.vol.trim_extent

        async def no_write(idx: int, *a: Any, **k: Any) -> None:
            writes.append(idx)  # the snapshot (inside setxattr) must not rewrite extents
            raise AssertionError(f"the snapshot wrote extent {idx}")
        w.vol.write_extent = no_write  # type: ignore[method-assign]
        w.vol.trim_extent = no_write  # type: ignore[method-assign]
        try:
            g = await w.snapshot("s")
        finally:
            w.vol.write_extent = real_write  # type: ignore[method-assign]
            w.vol.trim_extent = real_trim  # type: ignore[method-assign]
        assert writes == []
        vol = await svc.get("t", "v")
        lo, hi = vol.held_journal(g)  # type: ignore[misc]
        assert lo <= hi == w.seq
        for off, _ in pages(b"a"):  # the writer goes on over the same pages, then folds
            await w.write(off, b"b" * PAGE)
        await w.checkpoint()  # every segment the snapshot needs retires: kept, not deleted
        held = await kept(svc, vol.id)
        assert held and all(lo <= s["seq"] <= hi for s in held)
        for s in held:  # repair and drain find the stripe where the record now is
            x = unpack((await svc.meta.get(stripe_index_key(s["stripe"]))).value)  # type: ignore[union-attr]
            assert bytes(x["vx"]).startswith(kept_journal_prefix(vol.id))
        assert await read_snap(svc, "v", "s") == bytes(before)
        await detach(w)
        assert await read_snap(svc, "v", "s") == bytes(before)
        h = await svc.open("t", "v", holder="next")  # the volume itself moved on
        assert await h.read(37 * PAGE, PAGE) == b"b" * PAGE
        await h.close()

    with_service(body)


def test_a_snapshot_does_not_wait_for_a_fold_in_flight() -> None:
    """A fold suspended before its commit (a slow extent write) lets the snapshot freeze;
    the fold then commits at the next generation and the snapshot keeps what it froze."""
    async def body(svc: VolumeService) -> None:
        w = await new_writer(svc)
        await w.write(0, b"a" * PAGE)
        await w.write(MiB, b"a" * PAGE)
        await w.flush()
        frozen = asyncio.Event()
        real_write, real_freeze = w.vol.write_extent, svc.freeze

        async def slow_write(idx: int, data: bytes, jseq: int = 0) -> None:
            await frozen.wait()  # the fold is in flight until the snapshot froze
            await real_write(idx, data, jseq)

        async def freeze(*a: Any, **k: Any) -> int | None:
            g = await real_freeze(*a, **k)
            frozen.set()
            return g
        w.vol.write_extent = slow_write  # type: ignore[method-assign]
        svc.freeze = freeze  # type: ignore[method-assign]
        fold = asyncio.ensure_future(w._fold_many([0]))
        while not w._folding:  # the fold holds its snapshot of extent 0's pages
            await asyncio.sleep(0)
        await w.write(0, b"b" * PAGE)  # written after the fold took its pages, fsynced
        await w.snapshot("s")
        await fold
        w.vol.write_extent = real_write  # type: ignore[method-assign]
        svc.freeze = real_freeze  # type: ignore[method-assign]
        await detach(w)
        got = await read_snap(svc, "v", "s")
        assert got[:PAGE] == b"b" * PAGE and got[MiB:MiB + PAGE] == b"a" * PAGE

    with_service(body)


def test_clones_of_a_held_snapshot_read_it_and_never_change_it() -> None:
    async def body(svc: VolumeService) -> None:
        w = await new_writer(svc)
        await w.write(0, b"e" * MiB)  # an extent written directly, then pages over it
        await w.flush()
        await write_pages(w, b"a")
        await w.snapshot("s")
        want = await read_snap(svc, "v", "s")
        assert want[37 * PAGE:38 * PAGE] == b"a" * PAGE and want[:PAGE] == b"e" * PAGE
        await svc.clone("t", "v", "s", "c")
        ro = await svc.open("t", "c", holder="ro-clone")  # attached, reading through them
        assert await ro.read(0, SIZE) == want and ro.own_extents() == []
        await ro.close()
        c = JournaledVolume(await svc.open("t", "c", holder="c"))
        await c.write(37 * PAGE, b"c" * PAGE)
        await c.snapshot("cs")  # a snapshot of the clone holds its own journal
        await c.write(37 * PAGE, b"d" * PAGE)
        await detach(c)
        await svc.clone("t", "c", "cs", "cc")  # a clone of a clone reads through both
        cc = await svc.open("t", "cc", holder="cc")
        assert await cc.read(37 * PAGE, PAGE) == b"c" * PAGE
        assert await cc.read(0, PAGE) == b"e" * PAGE
        await cc.close()
        await w.checkpoint()
        await w.write(0, b"z" * PAGE)
        await detach(w)
        assert await read_snap(svc, "v", "s") == want  # the clones changed nothing
        assert (await read_snap(svc, "c", "cs"))[37 * PAGE:38 * PAGE] == b"c" * PAGE

    with_service(body)


def test_deleting_the_snapshot_frees_the_segments_it_held() -> None:
    async def body(svc: VolumeService) -> None:
        w = await new_writer(svc)
        await write_pages(w, b"a")
        await w.snapshot("s1")
        await write_pages(w, b"b")
        await w.snapshot("s2")
        await w.checkpoint()
        vid = w.vol.vol.id
        held = await kept(svc, vid)
        assert held
        await svc.delete_snapshot("t", "v", "s1")
        vol = await svc.get("t", "v")
        assert all(vol.holds_segment(s["seq"]) for s in await kept(svc, vid))
        assert (await read_snap(svc, "v", "s2"))[37 * PAGE:38 * PAGE] == b"b" * PAGE
        await svc.delete_snapshot("t", "v", "s2")
        assert await kept(svc, vid) == []
        for s in held:  # no index entry left; its stripe is queued for collection
            assert await svc.meta.get(stripe_index_key(s["stripe"])) is None
        queued = {bytes(i.key) async for i in scan_prefix(svc.meta, pack(GC))}
        assert all(any(s["stripe"].hex().encode() in k for k in queued) for s in held)
        await detach(w)

    with_service(body)


def test_a_killed_writer_after_a_snapshot_keeps_what_it_holds() -> None:
    """kill -9 after the snapshot: the next attach replays the journal, retires the
    segments (kept: the snapshot holds them) and numbers new segments above them."""
    async def body(svc: VolumeService) -> None:
        w = await new_writer(svc)
        await write_pages(w, b"a")
        await w.snapshot("s")
        want = await read_snap(svc, "v", "s")
        await w.write(37 * PAGE, b"b" * PAGE)
        await w.flush()
        await crash(svc, w)
        h = await svc.open("t", "v", holder="next")
        held = await kept(svc, h.vol.id)
        assert held and h.journal_seq > max(s["seq"] for s in held)
        assert await h.read(37 * PAGE, PAGE) == b"b" * PAGE
        await h.close()
        assert await read_snap(svc, "v", "s") == want
        await svc.delete("t", "v")  # deleting the volume frees them too
        assert await kept(svc, h.vol.id) == []

    with_service(body)


def test_a_clone_writer_reads_through_the_held_journal_until_it_stores_extents() -> None:
    """A clone's writer keeps its origin snapshot's journal pages (no extent written at
    attach): a partial write, a hole, a sequential run and a fold all see them, a flatten
    copies them, and the snapshot can then go (its kept segments with it)."""
    async def body(svc: VolumeService) -> None:
        w = await new_writer(svc)
        await w.write(0, b"e" * MiB)  # written directly, then journaled pages over it
        await w.flush()
        await write_pages(w, b"a")
        await w.snapshot("s")
        await w.checkpoint()  # the segments the snapshot holds are kept now
        await detach(w)
        model = bytearray(await read_snap(svc, "v", "s"))
        await svc.clone("t", "v", "s", "c")
        h = await svc.open("t", "c", holder="c")
        assert h.own_extents() == [] and sorted(h.patches) == [0, 1, 2]
        c = JournaledVolume(h)
        c.start()
        await c.write(37 * PAGE + 10, b"x" * 100)  # a partial page: read through the patches
        model[37 * PAGE + 10:37 * PAGE + 110] = b"x" * 100
        await c.zero(MiB, MiB)  # extent 1 holds only journal pages: a hole now
        model[MiB:2 * MiB] = bytes(MiB)
        await c.write(2 * MiB, b"q" * (MiB // 4))  # a run, not every page: not direct
        model[2 * MiB:2 * MiB + MiB // 4] = b"q" * (MiB // 4)
        await c.flush()
        assert await c.read(0, SIZE) == bytes(model)
        await c.stop()  # folds: extents stored whole, their patches dropped
        assert h.patches == {}
        await h.close()
        again = await svc.open("t", "c", holder="c2")
        assert await again.read(0, SIZE) == bytes(model)
        await again.close()
        await svc.delete("t", "c")
        await svc.clone("t", "v", "s", "f")  # a flatten copies the journal pages too
        await svc.flatten("t", "f")
        await svc.delete_snapshot("t", "v", "s")
        assert await kept(svc, (await svc.get("t", "v")).id) == []
        f = await svc.open("t", "f", holder="f")
        assert await f.read(0, SIZE) == await read_snap_model(svc)
        await f.close()

    async def read_snap_model(svc: VolumeService) -> bytes:
        v = await svc.open("t", "v", holder="v")  # nothing written since the snapshot
        try:
            return await v.read(0, SIZE)
        finally:
            await v.close()

    with_service(body)
