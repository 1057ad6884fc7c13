"""A block volume's commits refuse a stripe whose write was discarded (its `(XD, stripe)`
tombstone exists), as object commits do: an extent pointer or journal segment naming it
would be acknowledged data the collector deletes. The commit raises WriteExpired instead
of indexing the stripe (and does not loop on the compare)."""

from __future__ import annotations

from unittest import mock

import pytest

from storage import volume_io, volume_journal
from storage.errors import WriteExpired
from storage.keyspace import discarded_key, stripe_index_key
from storage.records import pack
from storage.volumes import VolumeService
from tests.unit.test_volume_journal import SIZE, with_service

STRIPE = bytes(range(16))


async def _tombstoned(svc: VolumeService) -> None:
    await svc.meta.put(discarded_key(STRIPE), pack({"until": 2**62}))


def test_extent_commit_refuses_a_discarded_stripe() -> None:
    async def body(svc: VolumeService) -> None:
        await svc.create("t", "v", SIZE)
        h = await svc.open("t", "v", holder="h")
        await _tombstoned(svc)
        with mock.patch.object(volume_io, "new_stripe_id", lambda: STRIPE), \
                pytest.raises(WriteExpired):
            await h.write_extent(0, b"x" * h.extent_len(0))
        assert await svc.meta.get(stripe_index_key(STRIPE)) is None
        assert h.pointer(0) is None
    with_service(body)


def test_journal_commit_refuses_a_discarded_stripe() -> None:
    async def body(svc: VolumeService) -> None:
        await svc.create("t", "v", SIZE)
        h = await svc.open("t", "v", holder="h")
        await _tombstoned(svc)
        with mock.patch.object(volume_journal, "new_stripe_id", lambda: STRIPE), \
                pytest.raises(WriteExpired):
            await volume_journal.append(h, 1, [(0, b"abc")])
        assert await svc.meta.get(stripe_index_key(STRIPE)) is None
    with_service(body)
