"""Attacks on the block volume model from outside: malformed names and sizes, attach races,
a fenced writer's fold, detach while writes are in flight.

The real volume service, journal and overlay over simulated nodes and SQLite (see
tests/unit/test_volume_journal.py). Every refusal must leave nothing behind.
"""

from __future__ import annotations

import asyncio

import pytest

from storage.errors import InvalidInput, NotFound
from storage.keyspace import volume_lease_key
from storage.records import unpack
from storage.volume_overlay import JournaledVolume
from storage.volume_records import Fenced, VolumeAttached
from storage.volumes import VolumeService
from tests.unit.test_volume_journal import SIZE, crash, with_service

MiB = 1 << 20


BAD_NAMES = ["", ".", "..", "../x", "a/b", "a\x00b", "a\n", "-a", "a" * 64, "é", "a b"]
BAD_SIZES = [0, -4096, 4097, 1 << 61, (1 << 64) + 4096, 1 << 200]


def test_malformed_names_and_sizes_are_refused_and_leave_nothing() -> None:
    async def body(svc: VolumeService) -> None:
        for name in BAD_NAMES:
            with pytest.raises(InvalidInput, match="letters"):
                await svc.create("t", name, MiB)
        for size in BAD_SIZES:
            with pytest.raises(InvalidInput, match="4 KiB"):
                await svc.create("t", "v", size)
        for es in (0, -MiB, MiB + 4096, 8 * MiB):
            with pytest.raises(InvalidInput, match="extent size"):
                await svc.create("t", "v", MiB, extent_size=es)
        assert await svc.list("t") == []
        await svc.create("t", "v", 2 * MiB)
        for size in (MiB, 0, -1, 2 * MiB + 1, 1 << 61):
            with pytest.raises(InvalidInput, match="only grow"):
                await svc.resize("t", "v", size)
        for name in BAD_NAMES:
            with pytest.raises(InvalidInput, match="letters"):
                await svc.snapshot("t", "v", name)
        assert (await svc.get("t", "v")).snapshots == {}
        await svc.snapshot("t", "v", "s")
        for name in BAD_NAMES:
            with pytest.raises(InvalidInput, match="letters"):
                await svc.clone("t", "v", "s", name)
        with pytest.raises(NotFound):
            await svc.clone("t", "v", "../s", "c")
        assert [v.name for v in await svc.list("t")] == ["v"]
        v = await svc.get("t", "v")
        assert (v.size, v.clones, v.gen) == (2 * MiB, [], 2)
    with_service(body)


def test_concurrent_attaches_admit_exactly_one_writer() -> None:
    async def body(svc: VolumeService) -> None:
        await svc.create("t", "v", SIZE)
        tokens = []
        for rnd in range(5):
            got = await asyncio.gather(*(svc.open("t", "v", holder=f"w{rnd}.{i}")
                                         for i in range(6)), return_exceptions=True)
            won = [h for h in got if not isinstance(h, BaseException)]
            assert len(won) == 1, got
            assert all(isinstance(e, VolumeAttached) for e in got if e not in won)
            tokens.append(won[0].token)
            await won[0].close()
        assert tokens == sorted(set(tokens)), tokens  # never repeated, always growing
    with_service(body)


def test_a_fenced_writer_cannot_fold_or_retire() -> None:
    async def body(svc: VolumeService) -> None:
        await svc.create("t", "v", SIZE)
        old = JournaledVolume(await svc.open("t", "v", holder="old"))
        await old.write(0, b"a" * 4096)
        await old.flush()
        await old.write(4096, b"b" * 4096)  # in the overlay only
        await crash(svc, old)  # paused past its lease
        new = JournaledVolume(await svc.open("t", "v", holder="new"))  # replays "a"
        await new.write(0, b"n" * 4096)
        await new.flush()
        with pytest.raises(Fenced):  # the old writer resumes mid-fold: nothing commits
            await old._fold_many([0])
        with pytest.raises(Fenced):
            await old.vol.renew()
        assert await new.read(0, 8192) == b"n" * 4096 + bytes(4096)
        await new.stop()
        await new.vol.close()
        h = await svc.open("t", "v", holder="check")
        assert await h.read(0, 8192) == b"n" * 4096 + bytes(4096)
        await h.close()
    with_service(body)


def test_detach_with_writes_in_flight_loses_no_acknowledged_write() -> None:
    async def body(svc: VolumeService) -> None:
        await svc.create("t", "v", SIZE)
        jv = JournaledVolume(await svc.open("t", "v", holder="w"))
        await jv.write(0, b"a" * 4096)
        await jv.flush()
        await jv.write(MiB, b"b" * 4096)
        flushes = [jv.flush() for _ in range(3)]
        got = await asyncio.gather(*flushes, jv.vol.close(), return_exceptions=True)
        acked = all(r is None for r in got[:3])  # a barrier acknowledged, or it said no
        assert all(r is None or isinstance(r, Fenced) for r in got), got
        rec = unpack((await svc.meta.get(volume_lease_key(jv.vol.vol.id))).value)  # type: ignore[union-attr]
        assert rec.get("released"), rec  # detach gave the lease up even with commits racing
        h = await svc.open("t", "v", holder="next")  # no wait for a lease to expire
        assert await h.read(0, 4096) == b"a" * 4096
        if acked:
            assert await h.read(MiB, 4096) == b"b" * 4096
        await h.close()
    with_service(body)


def test_detach_racing_a_renewal_still_releases_the_lease() -> None:
    async def body(svc: VolumeService) -> None:
        await svc.create("t", "v", SIZE)
        h = await svc.open("t", "v", holder="w")
        key = volume_lease_key(h.vol.id)
        real_get = svc.meta.get
        raced = False

        async def get(k: bytes):  # type: ignore[no-untyped-def]
            nonlocal raced
            item = await real_get(k)
            if k == key and not raced:  # close read the lease; a renewal commits first
                raced = True
                await h.renew()
            return item
        svc.meta.get = get  # type: ignore[method-assign]
        await h.close()
        svc.meta.get = real_get  # type: ignore[method-assign]
        assert raced
        rec = unpack((await svc.meta.get(key)).value)  # type: ignore[union-attr]
        assert rec.get("released") and rec["token"] == h.token, rec
        h2 = await svc.open("t", "v", holder="next")  # attaches at once, token above
        assert h2.token == h.token + 1
        await h2.close()
    with_service(body)


def test_show_reports_a_lease_only_a_watch_could_settle_without_waiting() -> None:
    """A writer that died on another host (or whose clock disagrees) leaves a lease that only
    a ttl's watch can settle. A mount or delete waits that watch (`attached_by`); `show`
    must not: it reports the holder marked unconfirmed at once (it blocked a whole ttl, past
    the admin client's 30 s timeout, before)."""
    import time

    from storage.records import pack

    async def body(svc: VolumeService) -> None:
        await svc.create("t", "v", SIZE)
        h = await svc.open("t", "v", holder="w")
        key = volume_lease_key(h.vol.id)
        rec = unpack((await svc.meta.get(key)).value)  # type: ignore[union-attr]
        stale = {**rec, "expires": time.time() - 5.0, "ttl": 3600.0,
                 "proc": {"pid": 1, "host": "another-host"}}
        await svc.meta.put(key, pack(stale))
        gets = 0
        real_get = svc.meta.get

        async def counting_get(k: bytes):  # type: ignore[no-untyped-def]
            nonlocal gets
            gets += k == key
            return await real_get(k)
        svc.meta.get = counting_get  # type: ignore[method-assign]
        seen = await asyncio.wait_for(svc.attached_at_a_glance(h.vol.id), 600)
        svc.meta.get = real_get  # type: ignore[method-assign]
        assert seen is not None and seen["holder"] == "w" and seen["unconfirmed"] is True
        assert gets == 1  # one read, no watch
        await svc.meta.put(key, pack({**rec, "released": True}))
        assert await svc.attached_at_a_glance(h.vol.id) is None
    with_service(body)


def test_delete_of_an_attached_volume_says_to_unmount_it_first() -> None:
    """newuser22: `tessera volume delete` of a mounted volume said only who held it; the
    refusal now says what to do next. Nothing is deleted."""
    async def body(svc: VolumeService) -> None:
        await svc.create("t", "v", SIZE)
        h = await svc.open("t", "v", holder="host:42")
        try:
            with pytest.raises(VolumeAttached) as e:
                await svc.delete("t", "v")
            assert "is attached by host:42" in str(e.value), e.value
            assert "unmount it there first (`tessera volume unmount DIR`)" in str(e.value)
            assert [v.name for v in await svc.list("t")] == ["v"]
        finally:
            await h.close()
    with_service(body)


def test_a_missing_volume_names_its_tenant_and_the_listing() -> None:
    """newuser22: "volume 'x' does not exist" did not say in which tenant it was looked for
    (`tessera volume` defaults to one) nor how to see what exists."""
    async def body(svc: VolumeService) -> None:
        with pytest.raises(NotFound) as e:
            await svc.get("t", "x")
        assert str(e.value) == ("volume 'x' does not exist in tenant 't'; see "
                                "`tessera volume list [--tenant T]`")
    with_service(body)
