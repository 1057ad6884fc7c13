"""A snapshot of a live journaled writer is point-in-time: the writer freezes it itself, and
a snapshot of a writer elsewhere sees an append that lands before its freeze.

The snapshot used to be quiesce (fold the journal) then, separately, freeze the extent map.
A writer that fsynced a random page (journal only) and then a sequential extent (written
directly, or folded) in that window left a snapshot holding the later write without the
earlier one: a state the disk never had (ext4 metadata pointing at data it lacks).
"""

from __future__ import annotations

import pytest

from storage.keyspace import journal_prefix
from storage.volume_overlay import JournaledVolume
from storage.volume_records import Fenced, VolumeAttached
from storage.volumes import VolumeService
from tests.unit.test_volume_journal import SIZE, crash, with_service

MiB = 1 << 20


def test_writes_between_quiesce_and_freeze_leave_a_prefix() -> None:
    async def body(svc: VolumeService) -> None:
        await svc.create("t", "v", SIZE)
        w = JournaledVolume(await svc.open("t", "v", holder="w"))
        await w.write(0, b"0" * 4096)
        await w.checkpoint()  # quiesce: every fsynced write in an extent
        await w.write(0, b"A" * 4096)  # a random page: journaled
        await w.flush()
        await w.write(2 * MiB, b"B" * MiB)  # a whole extent: written directly
        await w.flush()
        await w.snapshot("s")  # the writer freezes with nothing landing in between
        await w.stop()
        await w.vol.close()
        ro = await svc.open("t", "v", holder="ro", snapshot="s")
        assert await ro.read(2 * MiB, 4096) == b"B" * 4096
        assert await ro.read(0, 4096) == b"A" * 4096  # fsynced before B: held too

    with_service(body)


def test_an_append_landing_before_the_freeze_is_seen() -> None:
    """A writer on another host (nobody here can flush it): the snapshot found its journal
    empty, then the writer journaled a page and wrote a later extent directly before the
    freeze. The freeze compares the journal head, so it retries and refuses (journal not
    empty) instead of freezing the later write without the earlier one."""
    async def body(svc: VolumeService) -> None:
        await svc.create("t", "v", SIZE)
        w = JournaledVolume(await svc.open("t", "v", holder="elsewhere"))
        await w.write(0, b"0" * 4096)
        await w.checkpoint()
        vid = w.vol.vol.id
        meta_range = svc.meta.range
        raced = False

        async def racing_range(start: bytes, end: bytes, limit: int = 0):  # type: ignore[no-untyped-def]
            nonlocal raced
            out = await meta_range(start, end, limit=limit)
            if start == journal_prefix(vid) and not raced:  # between the check and the freeze
                raced = True
                await w.write(0, b"A" * 4096)
                await w.flush()
                await w.write(2 * MiB, b"B" * MiB)
                await w.flush()
            return out
        svc.meta.range = racing_range  # type: ignore[method-assign]
        try:
            with pytest.raises(VolumeAttached, match="cannot be flushed"):
                await svc.snapshot("t", "v", "s", flushed=[])
        finally:
            svc.meta.range = meta_range  # type: ignore[method-assign]
        assert raced and (await svc.get("t", "v")).snapshots == {}
        await w.stop()
        await w.vol.close()

    with_service(body)


def test_a_fenced_writer_freezes_nothing() -> None:
    """A writer paused past its lease and resumed is asked for a snapshot: its successor's
    fsynced writes are in the successor's journal, not in extents, so the old writer's freeze
    (which compares its own lease now) is refused instead of freezing without them."""
    async def body(svc: VolumeService) -> None:
        await svc.create("t", "v", SIZE)
        old = JournaledVolume(await svc.open("t", "v", holder="old"))
        await crash(svc, old)  # SIGSTOP past the lease
        new = JournaledVolume(await svc.open("t", "v", holder="new"))
        await new.write(0, b"N" * 4096)
        await new.flush()  # fsynced: in the new writer's journal only
        with pytest.raises(Fenced):
            await old.snapshot("s")
        assert (await svc.get("t", "v")).snapshots == {}
        await new.snapshot("s")
        ro = await svc.open("t", "v", holder="ro", snapshot="s")
        assert await ro.read(0, 4096) == b"N" * 4096
        await new.stop()
        await new.vol.close()

    with_service(body)


def test_writes_landing_after_the_writers_own_flush_are_in_its_snapshot() -> None:
    """The writer's snapshot freezes under its append lock with the journal range it replays:
    a page fsynced after the snapshot's own flush (journal only) and then a later extent
    written directly both land in it (a freeze of extents alone held B without A)."""
    async def body(svc: VolumeService) -> None:
        await svc.create("t", "v", SIZE)
        w = JournaledVolume(await svc.open("t", "v", holder="w"))
        await w.write(0, b"0" * 4096)
        first = w.flush
        raced = False

        async def racing_flush(compact: tuple[int, ...] = ()) -> None:
            nonlocal raced
            await first(compact)
            if not raced:  # writes land between the snapshot's flush and its freeze
                raced = True
                await w.write(0, b"A" * 4096)  # a random page: journaled
                await first()
                await w.write(2 * MiB, b"B" * MiB)  # a whole extent: written directly
                await first()
        w.flush = racing_flush  # type: ignore[method-assign]
        await w.snapshot("s")
        assert raced
        await w.stop()
        await w.vol.close()
        ro = await svc.open("t", "v", holder="ro", snapshot="s")
        assert await ro.read(2 * MiB, 4096) == b"B" * 4096
        assert await ro.read(0, 4096) == b"A" * 4096

    with_service(body)
