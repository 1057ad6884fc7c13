"""A lease only a ttl's watch can settle (its writer died on another host, or the clocks
disagree): delete and the mount pre-check say what they watch and how long is left
(`watching`), and the mount's daemon does not watch the same record a second time
(`open(watched=...)`): before, a mount waited two silent ttls (lows18).

The real volume service over simulated nodes and SQLite (tests/unit/test_volume_journal.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from storage.keyspace import volume_lease_key
from storage.metadata import Item, MetadataStore
from storage.records import pack, unpack
from storage.volumes import VolumeService
from tests.unit.test_volume_journal import SIZE, with_service


async def lease_dead_elsewhere(meta: MetadataStore, vid: str, ttl: float) -> bytes:
    """Volume `vid`'s (released) attach lease rewritten to name a writer on another host
    that stopped renewing it (expired by this clock; its record's ttl `ttl`): only a watch
    that long can tell it is gone. Returns the lease key."""
    key = volume_lease_key(vid)
    rec = unpack((await meta.get(key)).value)  # type: ignore[union-attr]
    await meta.put(key, pack({**rec, "released": False, "expires": time.time() - 5.0,
                              "ttl": ttl, "proc": {"pid": 1, "host": "another-host"}}))
    return key


async def _dead_elsewhere(svc: VolumeService, name: str, ttl: float) -> tuple[bytes, Item]:
    """Volume `name` whose attach lease is `lease_dead_elsewhere`. Returns the lease key and
    record."""
    await svc.create("t", name, SIZE)
    h = await svc.open("t", name, holder="w")
    await h.close()
    key = await lease_dead_elsewhere(svc.meta, h.vol.id, ttl)
    item = await svc.meta.get(key)
    assert item is not None
    return key, item


def test_delete_says_what_it_watches_and_how_long_is_left() -> None:
    async def body(svc: VolumeService) -> None:
        _, item = await _dead_elsewhere(svc, "v", 0.6)
        told: list[tuple[int, float]] = []

        def watching(seen: Any, left: float) -> None:
            told.append((seen.revision, left))
        await svc.delete("t", "v", watching)
        assert told and all(rev == item.revision for rev, _ in told)
        lefts = [left for _, left in told]
        assert lefts == sorted(lefts, reverse=True) and 0 < lefts[-1] <= lefts[0] <= 0.6
        assert await svc.list("t") == []
    with_service(body)


def test_the_mount_pre_check_is_told_too() -> None:
    async def body(svc: VolumeService) -> None:
        _, item = await _dead_elsewhere(svc, "v", 0.6)
        told: list[int] = []
        vid = (await svc.get("t", "v")).id
        assert await svc.attached_by(vid, lambda seen, left: told.append(seen.revision)) is None
        assert told and set(told) == {item.revision}
    with_service(body)


def test_a_record_already_watched_is_taken_without_a_second_watch() -> None:
    async def body(svc: VolumeService) -> None:
        _, item = await _dead_elsewhere(svc, "v", 3600.0)  # a watch would last an hour
        h = await asyncio.wait_for(svc.open("t", "v", holder="m", watched=item.revision), 120)
        try:
            assert h.token == unpack(item.value)["token"] + 1
        finally:
            await h.close()
    with_service(body)


def test_a_record_renewed_since_the_watch_is_not_taken() -> None:
    """review18c: `watched` skips the second watch only for the very record watched. A holder
    that renewed meanwhile (a new revision: alive after all) still refuses the mount; with
    `watched` trusted whatever the revision, two writers would hold the volume at once."""
    from storage.volume_records import VolumeAttached

    async def body(svc: VolumeService) -> None:
        key, item = await _dead_elsewhere(svc, "v", 3600.0)
        rec = unpack(item.value)
        await svc.meta.put(key, pack({**rec, "expires": time.time() + 3600.0}))  # renewed
        try:
            h = await asyncio.wait_for(svc.open("t", "v", holder="m", watched=item.revision),
                                       120)
        except VolumeAttached:
            return
        await h.close()
        raise AssertionError("a lease renewed since the watch was taken over")
    with_service(body)
