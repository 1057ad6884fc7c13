"""The block volume journal against a model: random writes, sequential runs written directly
as extents, barriers, folds (some racing a barrier), then a crash.

The real volume service, journal and overlay run over simulated nodes (in-memory shard
files, real shard format) and SQLite. A crash abandons the writer without a detach; the
next attach replays the journal. Every byte then holds its value at the last barrier, or a
value written after it (a block device promises nothing more for unsynced writes).
"""

from __future__ import annotations

import asyncio
import logging
import random
import tempfile
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.cluster import Cluster
from storage.config import config_from_mapping
from storage.crypto.keys import FileRootKey
from storage.errors import InvalidInput
from storage.keyspace import journal_prefix, volume_lease_key
from storage.metadata.sqlite import SqliteStore
from storage.records import pack, unpack
from storage.tenants import TenantService
from storage.testing.simnodes import SimNodes
from storage.volume_journal import decode_entries, encode_entries, is_zero
from storage.volume_overlay import JournaledVolume
from storage.volume_records import Fenced, scan_prefix
from storage.volumes import VolumeService
from tests.unit.test_replay_check import check_replay

MiB = 1 << 20
SIZE = 3 * MiB  # three 1 MiB extents


def test_segment_format_is_pinned() -> None:
    raw = encode_entries([(4096, b"ab"), (1 << 33, b"")])
    assert raw.hex() == ("54564a3102000000" "0010000000000000" "02000000" "6162"
                         "0000000002000000" "00000000")
    assert decode_entries(raw) == [(4096, b"ab"), (1 << 33, b"")]
    for bad in (raw[:-1], raw + b"x", b"XXXX" + raw[4:], raw[:3]):
        with pytest.raises(InvalidInput):
            decode_entries(bad)


class Sim:
    """A volume service over simulated nodes and SQLite in a temporary directory."""

    def __init__(self, tmp: Path) -> None:
        nodes = [{"id": f"n{z * 3 + i + 1}", "zone": f"az{z + 1}",
                  "address": f"127.0.{z + 1}.{i + 1}:1"} for z in range(3) for i in range(3)]
        self.tmp = tmp
        self.cfg = config_from_mapping({
            "data_dir": str(tmp), "cluster": {"segment_size": 64 * 1024},
            "profiles": {"standard": {"k": 4, "m": 2}}, "nodes": nodes}, tmp)
        self.pool = ThreadPoolExecutor(2)

    async def open(self) -> VolumeService:
        self.meta = await SqliteStore.open(self.tmp / "meta.db")
        tenants = TenantService(self.meta, FileRootKey(self.tmp / "root.key"))
        await tenants.load()
        await tenants.create("t")
        self.cluster = Cluster.wire(self.cfg, self.meta, tenants, SimNodes(list(self.cfg.nodes)),
                                    self.pool, self.pool, gc_grace_s=0, stall_s=5)
        return self.cluster.volumes

    async def close(self) -> None:
        await self.meta.close()
        self.pool.shutdown()


def with_sim(body: Callable[[Sim, VolumeService], Awaitable[None]]) -> None:
    """Run `body` against a Sim (its nodes, cluster, pool) and its volume service in a
    temporary directory, closed after."""
    async def go(tmp: Path) -> None:
        sim = Sim(tmp)
        svc = await sim.open()
        try:
            await body(sim, svc)
        finally:
            await sim.close()

    with tempfile.TemporaryDirectory() as d:
        asyncio.run(go(Path(d)))


def with_service(body: Callable[[VolumeService], Awaitable[None]]) -> None:
    """Run `body` against a volume service over simulated nodes in a temporary directory."""
    with_sim(lambda _sim, svc: body(svc))


async def crash(svc: VolumeService, jv: JournaledVolume) -> None:
    """The writer dies: nothing is flushed or folded, the lease is left to expire (and
    its ttl made 1 ms: the next attach watches it unrenewed that long, not 30 s)."""
    if jv.vol._renewer:
        jv.vol._renewer.cancel()
    k = volume_lease_key(jv.vol.vol.id)
    rec = unpack((await svc.meta.get(k)).value)  # type: ignore[union-attr]
    rec["expires"], rec["ttl"] = 0.0, 0.001
    await svc.meta.put(k, pack(rec))


op = st.one_of(
    st.tuples(st.just("page"), st.integers(0, SIZE // 4096 - 1), st.integers(1, 3)),
    # a sequential run: long enough, its extents skip the journal at the next barrier
    st.tuples(st.just("page"), st.integers(0, SIZE // 4096 - 1), st.integers(64, 384)),
    st.tuples(st.just("race"), st.integers(0, 2), st.just(0)),
    st.tuples(st.just("page"), st.sampled_from([0, 256, 512]), st.just(256)),  # an extent
    st.tuples(st.just("bytes"), st.integers(0, SIZE - 1), st.integers(1, 9000)),
    st.tuples(st.just("fsync"), st.just(0), st.just(0)),
    st.tuples(st.just("append"), st.just(0), st.just(0)),
    st.tuples(st.just("fold"), st.integers(0, 2), st.just(0)),
    st.tuples(st.just("compact"), st.integers(0, 2), st.integers(0, 2)),  # racing a fold
    st.tuples(st.just("trim"), st.integers(0, 2), st.just(0)),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, min_size=1, max_size=25), st.lists(op, max_size=8), st.integers(0, 2**32))
def test_replay_matches_model_at_last_fsync(ops: list, after: list, seed: int) -> None:
    async def go(tmp: Path) -> None:
        sim = Sim(tmp)
        svc = await sim.open()
        try:
            await svc.create("t", "v", SIZE)
            rnd = random.Random(seed)
            synced = bytearray(SIZE)  # the model at the last barrier
            model = bytearray(SIZE)
            since: list[tuple[int, bytes]] = []  # writes after the last barrier
            for session in (ops, after):  # a crash, replay, more ops, another crash
                h = await svc.open("t", "v", holder=f"h{rnd.random()}")
                assert await h.read(0, SIZE) == bytes(model)
                jv = JournaledVolume(h, max_dirty=1 * MiB)
                for kind, a, b in session:
                    if kind in ("page", "bytes"):
                        off, n = (a * 4096, b * 4096) if kind == "page" else (a, b)
                        n = min(n, SIZE - off)
                        data = rnd.randbytes(n)
                        if jv.npages >= jv.max_pages:  # the folder's job (not running here)
                            await jv._fold_many(list(jv.pages))
                        if kind == "bytes" or jv.try_write(off, data) is None:
                            await jv.write(off, data)
                        model[off:off + n] = data
                        since.append((off, data))
                    elif kind == "trim":
                        await jv.zero(a * MiB, MiB)
                        model[a * MiB:(a + 1) * MiB] = bytes(MiB)
                        since.append((a * MiB, bytes(MiB)))
                    elif kind == "fsync":
                        await jv.flush()
                        synced[:] = model
                        since = []
                    elif kind == "append":
                        await jv.flush()  # a background append: durable, not promised
                    elif kind == "race":  # a fold snapshots, then a barrier runs meanwhile
                        await asyncio.gather(jv._fold_many([a]), jv.flush())
                    elif kind == "compact":  # re-journal extent a's pages while b folds
                        await asyncio.gather(jv._fold_many([b]), jv.flush((a,)))
                    else:
                        await jv._fold_many([a])
                    assert await jv.read(0, SIZE) == bytes(model)
                await crash(svc, jv)
                h2 = await svc.open("t", "v", holder="replay")
                got = await h2.read(0, SIZE)
                assert [i async for i in scan_prefix(svc.meta, journal_prefix(h.vol.id))] == []
                check_replay(got, synced, since)
                model[:] = got
                synced[:] = got
                since = []
                await h2.close()
        finally:
            await sim.close()

    with tempfile.TemporaryDirectory() as d:
        asyncio.run(go(Path(d)))


def test_fenced_writer_cannot_append() -> None:
    async def go(tmp: Path) -> None:
        sim = Sim(tmp)
        svc = await sim.open()
        try:
            await svc.create("t", "v", SIZE)
            old = JournaledVolume(await svc.open("t", "v", holder="old"))
            await old.write(0, b"a" * 4096)
            await old.flush()
            await old.write(4096, b"b" * 4096)
            await crash(svc, old)  # paused past its lease; a new writer takes over
            new = JournaledVolume(await svc.open("t", "v", holder="new"))
            with pytest.raises(Fenced):
                await old.flush()
            assert await new.read(0, 8192) == b"a" * 4096 + bytes(4096)
            await new.write(4096, b"c" * 4096)
            await new.stop()
            await new.vol.close()
            h = await svc.open("t", "v", holder="check")
            assert await h.read(0, 8192) == b"a" * 4096 + b"c" * 4096
            await h.close()
        finally:
            await sim.close()

    with tempfile.TemporaryDirectory() as d:
        asyncio.run(go(Path(d)))


def test_a_writer_paused_past_its_lease_serves_nothing_from_memory() -> None:
    """atkblock20: a writer stopped past its lease (here: its last renewal moved a ttl back)
    answered reads from its overlay and took writes into it after another writer took the
    volume over. Now it renews first: if the lease is still its own it serves; if not, Fenced
    (reads and writes), and its in-memory answers (`try_read`, `try_write`) are refused."""
    async def body(svc: VolumeService) -> None:
        await svc.create("t", "v", SIZE)
        old = JournaledVolume(await svc.open("t", "v", holder="old"))
        await old.write(0, b"a" * 4096)
        await old.flush()
        old.vol._renewed_at = getattr(old.vol, "_renewed_at", 0.0) - old.vol.ttl  # stopped for a ttl; nobody took the volume
        assert old.try_read(0, 4096) is None and old.try_write(4096, b"x" * 4096) is None
        assert await old.read(0, 4096) == b"a" * 4096  # renewed: still its own
        assert old.try_read(0, 4096) == b"a" * 4096
        await crash(svc, old)  # stopped past its lease again, and this time taken over
        old.vol._renewed_at = getattr(old.vol, "_renewed_at", 0.0) - old.vol.ttl
        new = JournaledVolume(await svc.open("t", "v", holder="new"))
        await new.write(0, b"b" * 4096)
        await new.flush()
        assert old.try_read(0, 4096) is None and old.try_write(0, b"x" * 4096) is None
        with pytest.raises(Fenced):
            await old.read(0, 4096)
        with pytest.raises(Fenced):
            await old.write(0, b"x" * 4096)
        assert await new.read(0, 4096) == b"b" * 4096
        await new.stop()
        await new.vol.close()

    with_service(body)


def test_a_no_journal_writer_paused_past_its_lease_serves_nothing_either() -> None:
    """The same for `mount --no-journal`'s extent cache: once taken over, its cached extent
    is not served, a write is refused, and its barrier fails."""
    from gateway.block.cache import ExtentCache

    async def body(svc: VolumeService) -> None:
        await svc.create("t", "v", SIZE)
        old = ExtentCache(await svc.open("t", "v", holder="old"))
        await old.write(0, b"a" * 4096)
        await old.flush()
        assert await old.read(0, 4096) == b"a" * 4096  # cached now
        await crash(svc, old)  # type: ignore[arg-type]
        old.vol._renewed_at = getattr(old.vol, "_renewed_at", 0.0) - old.vol.ttl
        new = await svc.open("t", "v", holder="new")
        await new.write(0, b"b" * 4096)
        for step in (old.read(0, 4096), old.write(0, b"x" * 4096), old.flush()):
            with pytest.raises(Fenced):
                await step
        await new.close()

    with_service(body)


def test_requests_after_a_pause_share_one_lease_renewal() -> None:
    """After a pause past the lease every request in flight (the driver lets 64 write-backs
    be) asks for a renewal at once: they wait on one, not one each (each a store
    transaction, all but one failing its compare and retrying)."""
    async def body(svc: VolumeService) -> None:
        await svc.create("t", "v", SIZE)
        jv = JournaledVolume(await svc.open("t", "v", holder="w"))
        renew = jv.vol.renew
        calls = []

        async def counted() -> None:
            calls.append(1)
            await renew()
        jv.vol.renew = counted  # type: ignore[method-assign]
        jv.vol._renewed_at -= jv.vol.ttl
        await asyncio.gather(*(jv.write(i * 4096, b"r" * 4096) for i in range(32)),
                             *(jv.read(i * 4096, 4096) for i in range(32)))
        assert len(calls) == 1
        await jv.stop()
        await jv.vol.close()

    with_service(body)


def test_a_fenced_build_never_commits_against_a_record_it_did_not_see() -> None:
    """block21: a commit built from the volume record while another commit of the same
    handle re-read it (a fold racing a writer-taken snapshot: its compare failed, it
    resynced) compared the revision read after the build, so it committed what it built
    from the record before the snapshot; a retire so decided dropped journal segments the
    snapshot replays. It compares the revision its build started from: built again."""
    async def body(svc: VolumeService) -> None:
        await svc.create("t", "v", SIZE)
        jv = JournaledVolume(await svc.open("t", "v", holder="w"))
        h = jv.vol
        await jv.write(0, b"a" * 4096)
        await jv.flush()
        seen: list[set[int]] = []

        async def build() -> tuple[dict[bytes, bytes], tuple[bytes, ...], dict[bytes, int]]:
            seen.append(set(h.vol.snapshots))  # what a retire decides by
            if len(seen) == 1:  # meanwhile: a snapshot, and another commit resyncs
                await jv.snapshot("s1")
                await h._resync()
            return {b"probe": b"x"}, (), {}
        await h.fenced_build(build)
        assert len(seen) == 2 and seen[-1] == set(h.vol.snapshots) != seen[0], seen
        await jv.stop()
        await h.close()

    with_service(body)


def test_a_shared_renewal_nobody_waits_for_any_more_fails_quietly(
        caplog: pytest.LogCaptureFixture) -> None:
    """block21 (review20f F6): every request waiting on the shared renewal was cancelled (an
    unmount, FUSE interrupts) and the renewal then failed (taken over: Fenced). asyncio's
    shield had dropped its callback with the last waiter, so nobody retrieved the error and
    the loop logged "Task exception was never retrieved" with a traceback. The next request
    still gets Fenced."""
    import gc

    async def body(svc: VolumeService) -> None:
        await svc.create("t", "v", SIZE)
        jv = JournaledVolume(await svc.open("t", "v", holder="old"))
        h = jv.vol
        await crash(svc, jv)
        new = await svc.open("t", "v", holder="new")  # taken over
        renew, started, go = h.renew, asyncio.Event(), asyncio.Event()

        async def observed() -> None:  # the renewal's store round trip, held open
            started.set()
            await go.wait()
            await renew()
        h.renew = observed  # type: ignore[method-assign]
        h._renewed_at -= h.ttl  # paused past its lease: the next request renews
        waiters = [asyncio.create_task(h.check_held()) for _ in range(3)]
        await started.wait()
        for w in waiters:
            w.cancel()
        await asyncio.wait(waiters)
        go.set()  # the store answers once nobody waits any more
        renewal = h._renewal
        assert renewal is not None
        await asyncio.wait([renewal])
        del renewal
        with pytest.raises(Fenced):
            await h.check_held()  # a new renewal; the failed one is dropped
        gc.collect()
        await new.close()

    caplog.set_level(logging.ERROR, logger="asyncio")
    with_service(body)
    assert "never retrieved" not in caplog.text


@pytest.mark.parametrize("journal", [True, False])
def test_a_short_last_extent_outgrown_while_attached_still_commits(journal: bool) -> None:
    """atkblock20: a volume of 1.5 extents, grown while attached. The writer's stored (and
    cached) last extent is half an extent long; every fold, direct write or commit of it
    built over those bytes was refused ("extent 1 must be 1048576 bytes"): each fsync of a
    sequential write there was EIO, folds failed, and the detach too, until a remount."""
    from gateway.block.cache import ExtentCache

    async def body(svc: VolumeService) -> None:
        await svc.create("t", "v", MiB + MiB // 2)
        h = await svc.open("t", "v", holder="w")
        w = JournaledVolume(h) if journal else ExtentCache(h)
        w.start()
        await w.write(MiB, b"A" * 4096)
        await w.checkpoint()  # extent 1 stored (and cached) 512 KiB long
        await svc.resize("t", "v", 3 * MiB)  # the admin API or CLI, the mount attached
        await w.write(MiB + 4096, b"B" * 4096)
        await w.flush()  # its commit sees the grown record
        assert h.vol.size == 3 * MiB
        await w.write(MiB + 8192, b"C" * (MiB // 2 - 8192))  # sequential: written direct
        await w.flush()
        await w.write(MiB + 8192, b"D" * 4096)
        await w.stop()  # folds everything
        await h.close()
        r = await svc.open("t", "v", holder="check")
        got = await r.read(MiB, MiB)
        assert got == (b"A" * 4096 + b"B" * 4096 + b"D" * 4096
                       + b"C" * (MiB // 2 - 12288) + bytes(MiB // 2))
        await r.close()

    with_service(body)


def test_a_whole_page_written_during_a_partial_pages_read_is_kept() -> None:
    """atkblock20: a partial-page write reads the page (from the nodes, when neither the
    overlay nor the clean cache has it), then put the read bytes with its own over them. A
    whole-page write put meanwhile by another libfuse thread (`try_write`, no hop to the
    loop; O_DIRECT sub-page and page writes in flight together) was overwritten with the
    older bytes: acknowledged, and fsynced if its fsync came first, yet gone. Here that
    thread's write lands right when the read returns."""
    async def body(svc: VolumeService) -> None:
        await svc.create("t", "v", SIZE)
        jv = JournaledVolume(await svc.open("t", "v", holder="w"))
        await jv.write(0, b"o" * 4096)
        await jv.checkpoint()  # stored in its extent...
        with jv._mutex:
            jv._clean.clear()  # ... and not cached: the partial write reads the nodes
        read = jv._extent_range

        async def racing_read(idx: int, lo: int, hi: int) -> bytes:
            got = await read(idx, lo, hi)
            assert jv.try_write(0, b"W" * 4096) == 4096  # another thread, right then
            return got
        jv._extent_range = racing_read  # type: ignore[method-assign]
        await jv.write(512, b"p" * 512)
        jv._extent_range = read  # type: ignore[method-assign]
        await jv.flush()
        want = b"W" * 512 + b"p" * 512 + b"W" * 3072  # the whole page, then the part
        assert await jv.read(0, 4096) == want
        await jv.stop()
        await jv.vol.close()
        h = await svc.open("t", "v", holder="check")
        assert await h.read(0, 4096) == want
        await h.close()

    with_service(body)


def test_sequential_extents_skip_the_journal() -> None:
    """Whole extents written in one run are stored once, as extents, at the barrier; small
    writes before and after them go through the journal and replay in the right order."""
    async def go(tmp: Path) -> None:
        sim = Sim(tmp)
        svc = await sim.open()
        try:
            await svc.create("t", "v", SIZE)
            jv = JournaledVolume(await svc.open("t", "v", holder="a"))
            await jv.write(4096, b"o" * 4096)  # journaled: older than the extent below
            await jv.write(2 * MiB, b"x" * 4096)  # the segment stays (extent 2 unfolded)
            await jv.flush()
            await jv.write(2 * MiB + 4096, b"y" * 4096)
            await jv.flush()
            assert (jv.appends, jv.directs) == (2, 0)
            seq_data = random.Random(1).randbytes(MiB + MiB // 2)
            assert jv.try_write(0, seq_data) == len(seq_data)
            await jv.flush()  # extent 0 whole, half of extent 1 (zeros below): both direct
            assert (jv.appends, jv.directs) == (2, 2)
            assert jv.npages == 2 and len(jv.live) == 2  # segment 1 still live
            assert jv.try_read(4096, 8192) == seq_data[4096:12288]  # the clean cache
            await jv.write(MiB + 4096, b"n" * 4096)  # journaled: newer than extent 1
            await jv.flush()
            assert (jv.appends, jv.directs) == (3, 2)
            assert jv.try_read(MiB + 4096, 4096) == b"n" * 4096  # the overlay
            await crash(svc, jv)
            h = await svc.open("t", "v", holder="replay")
            want = bytearray(SIZE)
            want[:len(seq_data)] = seq_data
            want[MiB + 4096:MiB + 8192] = b"n" * 4096
            want[2 * MiB:2 * MiB + 8192] = b"x" * 4096 + b"y" * 4096
            assert await h.read(0, SIZE) == bytes(want)
            await h.close()
        finally:
            await sim.close()

    with tempfile.TemporaryDirectory() as d:
        asyncio.run(go(Path(d)))


def test_sequential_extents_at_the_bound_are_written_whole_not_folded() -> None:
    """A sequential writer that fills the overlay to its bound makes room through the append,
    which writes its extents whole (stored once), not through folds, which would journal
    them first and then write them whole again (fio's 1 MiB writes ran at a third of
    `--no-journal`'s speed that way)."""
    async def go(tmp: Path) -> None:
        sim = Sim(tmp)
        svc = await sim.open()
        try:
            await svc.create("t", "v", SIZE)
            jv = JournaledVolume(await svc.open("t", "v", holder="a"), max_dirty=MiB)
            jv.start()
            seq_data = random.Random(2).randbytes(MiB)
            assert jv.try_write(0, seq_data) == MiB  # the overlay is now at its bound
            assert jv.try_write(MiB, b"z" * 4096) is None
            await jv.write(MiB, b"z" * 4096)  # waits for room
            assert (jv.directs, jv.folds, jv.appended_bytes) == (1, 0, 0)
            await jv.flush()
            await crash(svc, jv)
            h = await svc.open("t", "v", holder="replay")
            assert await h.read(0, MiB + 4096) == seq_data + b"z" * 4096
            await h.close()
        finally:
            await sim.close()

    with tempfile.TemporaryDirectory() as d:
        asyncio.run(go(Path(d)))


def test_writes_past_a_threshold_hand_the_loop_one_wake() -> None:
    """Writes from the driver's threads past the fold threshold, while the loop is busy,
    schedule one wake on the loop, not one callback (and self-pipe write) per write; the
    wake still reaches the folder."""
    async def go(tmp: Path) -> None:
        sim = Sim(tmp)
        svc = await sim.open()
        try:
            await svc.create("t", "v", SIZE)
            jv = JournaledVolume(await svc.open("t", "v", holder="a"), max_dirty=MiB)
            jv.start()
            loop = asyncio.get_running_loop()
            calls: list[object] = []
            real = loop.call_soon_threadsafe

            def counting(cb, *args, **kw):  # type: ignore[no-untyped-def]
                if cb == jv._wake:  # the volume's wakes only (not an executor job's end)
                    calls.append(cb)
                return real(cb, *args, **kw)
            loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
            page = b"w" * 4096
            n = jv.max_pages * 3 // 4 + 40  # 40 writes past the folder's threshold

            def writer() -> None:
                for i in range(n):
                    assert jv.try_write(i * 4096, page) == 4096

            t = threading.Thread(target=writer)
            t.start()
            t.join()  # the loop runs nothing meanwhile: no wake can have been delivered
            assert len(calls) == 1
            deadline = loop.time() + 30
            while jv.npages >= n:  # the folder woke and made room
                assert loop.time() < deadline, "the folder never ran"
                await asyncio.sleep(0.01)
            loop.call_soon_threadsafe = real  # type: ignore[method-assign]
            await jv.stop()
            assert await jv.vol.read(0, n * 4096) == page * n
            await jv.vol.close()
        finally:
            await sim.close()

    with tempfile.TemporaryDirectory() as d:
        asyncio.run(go(Path(d)))


def test_zero_check_matches_counting_zero_bytes() -> None:
    """`is_zero` (a compare that stops early) decides exactly as counting zero bytes did."""
    rnd = random.Random(3)
    for n in (0, 1, 4096, MiB):
        z = bytes(n)
        assert is_zero(z) == (z.count(0) == n)
        for _ in range(4):
            if n:
                b = bytearray(n)
                b[rnd.randrange(n)] = rnd.randrange(1, 256)
                assert not is_zero(bytes(b))


def test_a_large_journal_of_few_pages_is_compacted_not_folded() -> None:
    """Pages overwritten again and again grow the journal past twice the overlay bound
    while the overlay stays small: the folder re-journals the extents' pages (a few KiB
    each) and retires the older segments instead of rewriting every extent whole (fio's
    random writes touch every extent in each segment, so folding the oldest segment's
    extents rewrote the whole volume). Replay after a crash still gives the synced bytes."""
    async def go(tmp: Path) -> None:
        sim = Sim(tmp)
        svc = await sim.open()
        try:
            size = 8 * MiB
            await svc.create("t", "v", size)
            jv = JournaledVolume(await svc.open("t", "v", holder="a"), max_dirty=MiB)
            rnd = random.Random(5)
            model = bytearray(size)
            hot = [e * MiB + p * 4096 for e in range(8) for p in range(0, 64, 8)]  # 64 pages
            for _ in range(12):  # 12 x 64 pages = 3 MiB of journal: past twice the 1 MiB bound
                for off in hot:
                    data = rnd.randbytes(4096)
                    assert jv.try_write(off, data) == 4096
                    model[off:off + 4096] = data
                await jv.flush()
                if jv.journal_bytes > 2 * MiB:
                    await jv._fold_round()
            assert jv.folds == 0 and jv.compactions >= 1
            assert jv.journal_bytes <= 2 * MiB + 64 * 4096 + 4096
            segs = [i async for i in scan_prefix(svc.meta, journal_prefix(jv.vol.vol.id))]
            assert len(segs) == len(jv.live) < 12
            await crash(svc, jv)
            h = await svc.open("t", "v", holder="replay")
            assert await h.read(0, size) == bytes(model)
            await h.close()
        finally:
            await sim.close()

    with tempfile.TemporaryDirectory() as d:
        asyncio.run(go(Path(d)))


def test_folds_at_the_bound_free_pages_down_to_fold_low() -> None:
    """Past 3/4 of the bound the folder picks the fullest extents until the overlay would be
    at FOLD_LOW % of it (not half): the fuller it stays, the more pages each fold takes."""
    async def go(tmp: Path) -> None:
        sim = Sim(tmp)
        svc = await sim.open()
        try:
            await svc.create("t", "v", 8 * MiB)
            jv = JournaledVolume(await svc.open("t", "v", holder="a"), max_dirty=MiB)
            for e in range(8):  # 8 extents with 24 pages each: 192 of 256 pages, at 3/4
                for p in range(24):
                    assert jv.try_write(e * MiB + p * 8192, b"x" * 4096) == 4096
            folds, compact = jv._fold_targets()
            assert compact == [] and len(folds) == 1  # 192 - 24 = 168 <= 70% of 256 (179)
        finally:
            await sim.close()

    with tempfile.TemporaryDirectory() as d:
        asyncio.run(go(Path(d)))


def test_folds_keep_the_extents_the_clean_cache_holds() -> None:
    """A random writer over more extents than the clean-extent cache holds folds each extent
    in turn, so through an LRU every fold missed (the extent folded next is the one folded
    longest ago, the one just dropped) and read its extent from the nodes. A fold adds an
    extent only where there is room: the extents cached stay, and their folds read nothing."""
    async def go(tmp: Path) -> None:
        sim = Sim(tmp)
        svc = await sim.open()
        try:
            await svc.create("t", "v", SIZE)
            h = await svc.open("t", "v", holder="a")
            jv = JournaledVolume(h, max_dirty=MiB, max_clean=2 * MiB)  # 2 of 3 extents
            reads = []
            read_extent = h.read_extent

            async def counting(idx: int) -> bytes | None:
                reads.append(idx)
                return await read_extent(idx)
            h.read_extent = counting  # type: ignore[method-assign]
            rnd = random.Random(7)
            model = bytearray(SIZE)
            for _ in range(4):
                for e in range(3):
                    off = e * MiB + rnd.randrange(256) * 4096
                    data = rnd.randbytes(4096)
                    assert jv.try_write(off, data) == 4096
                    model[off:off + 4096] = data
                await jv.flush()
                for e in range(3):
                    await jv._fold_many([e])
            assert reads == [0, 1, 2, 2, 2, 2]  # first round: nothing stored yet
            assert await jv.read(0, SIZE) == bytes(model)
            await crash(svc, jv)
            h2 = await svc.open("t", "v", holder="replay")
            assert await h2.read(0, SIZE) == bytes(model)
            await h2.close()
        finally:
            await sim.close()

    with tempfile.TemporaryDirectory() as d:
        asyncio.run(go(Path(d)))


def test_writers_blocked_at_the_bound_wait_for_folds_not_for_compactions() -> None:
    """Overlay at its bound (a writer waits for room) and journal past twice it: a folder
    round has extents to fold and extents to compact. Only folds free overlay pages, so
    they run first; a compaction first made the waiting writer sit through its appends."""
    async def go(tmp: Path) -> None:
        sim = Sim(tmp)
        svc = await sim.open()
        try:
            size = 8 * MiB
            await svc.create("t", "v", size)
            h = await svc.open("t", "v", holder="a")
            jv = JournaledVolume(h, max_dirty=MiB)  # 256 pages
            rnd = random.Random(9)
            model = bytearray(size)

            def put(off: int) -> None:
                data = rnd.randbytes(4096)
                assert jv.try_write(off, data) == 4096
                model[off:off + 4096] = data
            hot = [e * MiB + p * 4096 for e in range(8) for p in range(0, 64, 8)]  # 64 pages
            for _ in range(12):  # 3 MiB of journal, past twice the bound; nothing folded
                for off in hot:
                    put(off)
                await jv.flush()
            for e in range(4):  # 48 more pages in extents 0-3 (no runs): 256, at the bound
                for j in range(48):
                    put(e * MiB + (2 * j + 1) * 4096)
            assert jv.npages == jv.max_pages and jv.journal_bytes > 2 * MiB
            targets, compact = jv._fold_targets()
            assert targets and compact

            events: list[str] = []
            write_extent, flush = h.write_extent, jv.flush

            async def folding(idx: int, data: bytes, jseq: int) -> None:
                events.append("fold")
                await write_extent(idx, data, jseq=jseq)

            async def compacting(compact: tuple[int, ...] = ()) -> None:
                if compact:
                    events.append("compact")
                await flush(compact)
            h.write_extent = folding  # type: ignore[method-assign]
            jv.flush = compacting  # type: ignore[method-assign]
            late = rnd.randbytes(4096)
            writer = asyncio.create_task(jv.write(7 * MiB + 5 * 4096, late))
            await asyncio.sleep(0)
            assert not writer.done()  # waiting for room
            await jv._fold_round()
            await writer
            model[7 * MiB + 5 * 4096:7 * MiB + 6 * 4096] = late
            assert events[:len(targets)] == ["fold"] * len(targets)
            assert "compact" in events[len(targets):]
            await flush()
            await crash(svc, jv)
            h2 = await svc.open("t", "v", holder="replay")
            assert await h2.read(0, size) == bytes(model)
            await h2.close()
        finally:
            await sim.close()

    with tempfile.TemporaryDirectory() as d:
        asyncio.run(go(Path(d)))


@pytest.mark.parametrize("journal", [True, False])
def test_a_write_past_the_old_end_of_an_outgrown_short_extent_lands_where_written(
        journal: bool) -> None:
    """review20f: after an online grow, the writer's clean copy of its last extent is still
    the old (short) length; an extent built over it put each page with a bytearray slice,
    which past the end of a shorter buffer appends instead: a page written beyond the old
    end but not right after it moved down to the old end (then zero-padded): a fsynced
    write read back at the wrong offset, the right one zeros."""
    from gateway.block.cache import ExtentCache

    async def body(svc: VolumeService) -> None:
        await svc.create("t", "v", MiB + MiB // 2)
        h = await svc.open("t", "v", holder="w")
        w = JournaledVolume(h) if journal else ExtentCache(h)
        w.start()
        await w.write(MiB, b"A" * 4096)
        await w.checkpoint()  # extent 1 stored (and cached) 512 KiB long
        await svc.resize("t", "v", 3 * MiB)
        await w.write(MiB + 4096, b"B" * 4096)
        await w.flush()  # its commit sees the grown record
        assert h.vol.size == 3 * MiB
        far = MiB + 3 * MiB // 4  # past the old end (MiB + 512 KiB), not right after it
        await w.write(far, b"F" * 4096)
        await w.flush()
        await w.stop()  # folds everything
        await h.close()
        r = await svc.open("t", "v", holder="check")
        assert await r.read(far, 4096) == b"F" * 4096
        assert await r.read(MiB + MiB // 2, 4096) == bytes(4096)
        await r.close()

    with_service(body)


def test_a_whole_page_written_and_folded_during_a_partial_pages_read_is_kept() -> None:
    """review20f: as above, but the other thread's whole page is also folded into its
    extent (and dropped from the overlay) before the read returns: the merge under the
    overlay lock finds no page there and puts the bytes read before it over it again."""
    async def body(svc: VolumeService) -> None:
        await svc.create("t", "v", SIZE)
        jv = JournaledVolume(await svc.open("t", "v", holder="w"))
        await jv.write(0, b"o" * 4096)
        await jv.checkpoint()
        with jv._mutex:
            jv._clean.clear()
        read = jv._extent_range

        raced: list[bool] = []

        async def racing_read(idx: int, lo: int, hi: int) -> bytes:
            got = await read(idx, lo, hi)
            if not raced:  # once
                raced.append(True)
                assert jv.try_write(0, b"W" * 4096) == 4096  # another thread, right then
                await jv.flush()  # its fsync
                await jv._fold(0)  # and the folder takes it into the extent
            return got
        jv._extent_range = racing_read  # type: ignore[method-assign]
        await jv.write(512, b"p" * 512)
        jv._extent_range = read  # type: ignore[method-assign]
        await jv.flush()
        want = b"W" * 512 + b"p" * 512 + b"W" * 3072
        assert await jv.read(0, 4096) == want
        await jv.stop()
        await jv.vol.close()

    with_service(body)
