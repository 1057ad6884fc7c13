"""Snapshots of a volume whose writer left journal segments unfolded (killed, or paused past
its lease): the snapshot must still hold every write fsynced before it was taken.

A snapshot freezes extents only; a daemon killed with -9 (or stopped past its lease) cannot
be asked to fold its journal first, so the snapshot replays it as the next attach would. A
live writer the caller could not flush (another host, or SIGSTOP within its lease) is refused
while its journal holds segments, rather than frozen without them.
"""

from __future__ import annotations

import os

import pytest

from storage.keyspace import journal_prefix
from storage.volume_overlay import JournaledVolume
from storage.volume_records import Fenced, VolumeAttached, scan_prefix
from storage.volumes import VolumeService
from tests.unit.test_volume_journal import SIZE, crash, with_service

MiB = 1 << 20


def test_snapshot_after_a_crash_holds_the_fsynced_journal() -> None:
    async def body(svc: VolumeService) -> None:
        await svc.create("t", "v", SIZE)
        old = JournaledVolume(await svc.open("t", "v", holder="old"))
        await old.write(0, b"a" * 4096)
        await old.write(MiB + 8192, b"b" * 4096)
        await old.flush()  # fsync: durable in the journal, not yet in any extent
        await old.write(2 * MiB, b"c" * 4096)  # never fsynced: may be lost
        await crash(svc, old)  # kill -9, or SIGSTOP past the lease
        await svc.snapshot("t", "v", "s1")
        assert [i async for i in scan_prefix(svc.meta, journal_prefix(old.vol.vol.id))] == []
        ro = await svc.open("t", "v", holder="ro", snapshot="s1")
        assert await ro.read(0, 4096) == b"a" * 4096
        assert await ro.read(MiB + 8192, 4096) == b"b" * 4096
        await svc.clone("t", "v", "s1", "c")
        c = await svc.open("t", "c", holder="c")
        assert await c.read(0, 4096) == b"a" * 4096
        assert await c.read(MiB + 8192, 4096) == b"b" * 4096
        await c.close()
        with pytest.raises(Fenced):  # the paused writer resumes: it may not append
            await old.write(4096, b"d" * 4096)
            await old.flush()
        h = await svc.open("t", "v", holder="next")  # the snapshot left it detached
        assert await h.read(0, 4096) == b"a" * 4096
        assert await h.read(4096, 4096) == bytes(4096)
        await h.close()

    with_service(body)


def test_snapshot_of_a_live_writer_nobody_flushed_is_refused() -> None:
    async def body(svc: VolumeService) -> None:
        await svc.create("t", "v", SIZE)
        w = JournaledVolume(await svc.open("t", "v", holder="w"))  # this process
        await w.write(0, b"a" * 4096)
        await w.flush()  # fsynced, in the journal only
        for flushed in ([], [os.getppid()]):  # another host's writer, or a stopped one
            with pytest.raises(VolumeAttached, match="cannot be flushed"):
                await svc.snapshot("t", "v", "s1", flushed=flushed)
        assert (await svc.get("t", "v")).snapshots == {}  # nothing frozen
        await w.checkpoint()  # the writer folds its journal (quiesce on its host)
        await svc.snapshot("t", "v", "s1", flushed=[])
        await w.write(4096, b"b" * 4096)
        await w.flush()
        await svc.snapshot("t", "v", "s2", flushed=[os.getpid()])  # quiesced here
        await w.stop()
        await w.vol.close()
        ro = await svc.open("t", "v", holder="ro", snapshot="s1")
        assert await ro.read(0, 8192) == b"a" * 4096 + bytes(4096)

    with_service(body)
