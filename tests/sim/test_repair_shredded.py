"""Repair of a shredded tenant's stripe (its keys destroyed): it never needs the key. A named
liar and a lost shard are rebuilt from the honest shards, byte for byte the ciphertext they
held, and the object stays unreadable (nothing is decrypted or re-encrypted on the way)."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.errors import StorageError
from storage.keyspace import urgent_repair_key
from storage.metadata import Txn
from storage.records import pack
from storage.shards.ids import shard_id
from storage.testing.lies import lie
from storage.workers.deepscrub import DeepScrubber
from tests.sim.test_sim_repair import SEGMENT, Sim


async def test_a_shredded_stripe_is_rebuilt_without_its_key(tmp_path: Path) -> None:
    s = Sim(tmp_path, 31)
    await s.open(tmp_path)
    try:
        scrubber = DeepScrubber(s.cfg, s.meta, s.objects, s.sim, s.health, s.pool,
                                s.stripes.lies)
        s.repair.stripe_codec = scrubber.codec  # as the cluster wires it
        await s.put("o", 3 * SEGMENT + 7)
        p = (await s.objects.head(s.bucket, "o")).parts[0]
        before = {i: bytes(s.sim.files[n][shard_id(p.stripe_id, i)])
                  for i, n in enumerate(p.nodes) if n}
        liar, lost = 2, 5
        sid = shard_id(p.stripe_id, liar)
        s.sim.files[str(p.nodes[liar])][sid] = bytearray(lie(before[liar], "o", None))
        assert s.sim.lose(str(p.nodes[lost]), shard_id(p.stripe_id, lost))
        await s.tenants.shred("t")
        key = urgent_repair_key(p.stripe_id)
        await s.meta.txn(Txn(puts={key: pack({"reason": "test", "queued": 0.0,
                                              "lying": {str(liar): p.nodes[liar]}})}))
        for _ in range(5):
            if await s.meta.get(key) is None:
                break
            await s.repair.queue_step()
        assert await s.meta.get(key) is None
        p = (await s.objects.head(s.bucket, "o")).parts[0]
        after = {i: bytes(s.sim.files[n][shard_id(p.stripe_id, i)]) for i, n in enumerate(p.nodes)}
        assert after == before  # the liar rewritten, the lost shard back: the same ciphertext
        with pytest.raises(StorageError):
            await s.read("o")
    finally:
        await s.close()
