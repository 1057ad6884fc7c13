"""The key's check of a rebuild from exactly k sources (`ShardWorker._guard`): volume
extents have a key too, a failed key lookup defers the stripe, and the key is looked up only
when a segment has no spare block."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from storage.errors import StorageError
from storage.health import DOWN
from storage.pipeline import StripeCodec
from storage.shards.ids import shard_id
from storage.workers.deepscrub import DeepScrubber, DeepScrubSettings
from storage.workers.manifests import Manifest, load_manifest
from tests.sim.test_sim_repair import SEGMENT, Sim, _lie_in_segment


async def _sim(tmp_path: Path, seed: int) -> tuple[Sim, DeepScrubber]:
    s = Sim(tmp_path, seed)
    await s.open(tmp_path)
    scrub = DeepScrubber(s.cfg, s.meta, s.objects, s.sim, s.health, s.pool, s.stripes.lies,
                         DeepScrubSettings(rate_bytes_s=0))
    s.repair.stripe_codec = scrub.codec  # as `Cluster.workers` wires it
    return s, scrub


async def _extent(s: Sim) -> tuple[Manifest, bytes]:
    """A volume whose extent 0 is written: its stripe's manifest and the extent's bytes."""
    await s.cluster.volumes.create("t", "v", 2 << 20)
    h = await s.cluster.volumes.open("t", "v", "test")
    data = s.rnd.randbytes(1 << 20)
    await h.write_extent(0, data)
    p = h._own[0]
    await h.close()
    man = await load_manifest(s.meta, p.stripe)
    assert isinstance(man, Manifest) and man.kind == "extent"
    return man, data


def _shards(s: Sim, man: Manifest) -> list[bytes]:
    p = man.part
    return [bytes(s.sim.files[str(p.nodes[i])][shard_id(p.stripe_id, i)])
            for i in range(p.k + p.m)]


async def _lie_and_lose_two(s: Sim, man: Manifest) -> list[bytes]:
    """Shard 2 lies in segment 0; the nodes of shards 0 and 1 go down: k sources left."""
    p = man.part
    originals = _shards(s, man)
    s.sim.files[str(p.nodes[2])][shard_id(p.stripe_id, 2)] = bytearray(
        _lie_in_segment(originals[2], 0, 2))
    s.sim.down.update({str(p.nodes[0]), str(p.nodes[1])})
    await s.health.probe_once()
    assert {s.health.states[str(n)].state for n in p.nodes[:2]} == {DOWN}
    return originals


async def _committed_lie(s: Sim, man: Manifest, originals: list[bytes]) -> list[int]:
    """The indexes whose committed shard differs from the original (rebuilt from the lie)."""
    now = await load_manifest(s.meta, man.part.stripe_id)
    assert isinstance(now, Manifest)
    p = now.part
    return [i for i in range(p.k + p.m) if p.nodes[i] != man.part.nodes[i] and
            bytes(s.sim.files[str(p.nodes[i])][shard_id(p.stripe_id, i)]) != originals[i]]


async def test_a_volume_extent_rebuilt_from_k_sources_is_checked_with_its_key(
        tmp_path: Path) -> None:
    """An extent's pointer holds its data key wrapped by the tenant's: the check of a
    rebuild from k sources took the extent for keyless, so a liar among the k was decoded
    into the rebuilt shards and committed (ext4 then reads EIO once the nodes return). Now
    the rebuild is refused and nothing is committed; after the return the liar is named."""
    s, _ = await _sim(tmp_path, 41)
    try:
        man, data = await _extent(s)
        assert s.repair.stripe_codec is not None
        codec = await s.repair.stripe_codec(man)
        assert codec is not None and codec.cipher is not None, "no key for the extent"
        originals = await _lie_and_lose_two(s, man)
        for _ in range(3):
            await s.repair.step()
        assert await _committed_lie(s, man, originals) == [], \
            "repair committed an extent shard rebuilt from a lying source"
        await s.heal()
        h = await s.cluster.volumes.open("t", "v", "test2")
        try:
            assert await h.read_extent(0) == data
        finally:
            await h.close()
    finally:
        await s.close()


async def test_a_failed_key_lookup_defers_the_rebuild(tmp_path: Path,
                                                      monkeypatch) -> None:
    """A metadata or KMS error while the key's check is looked up gave the old unchecked
    rebuild from k sources (it committed the lie): now the stripe is deferred, retried."""
    s, _ = await _sim(tmp_path, 43)
    try:
        await s.put("x", 3 * SEGMENT + 7)
        man = next(m for m in await s.manifests() if m.kind == "object")
        originals = await _lie_and_lose_two(s, man)

        async def fails(*_a: object, **_k: object) -> object:
            raise StorageError("metadata store unreachable")
        monkeypatch.setattr(s.objects.data_keys, "cipher_for", fails)
        for _ in range(3):
            await s.repair.step()
        assert await _committed_lie(s, man, originals) == [], \
            "a failed key lookup let the rebuild from k sources go unchecked"
        monkeypatch.undo()
        await s.heal()
        assert await s.read("x") == s.data["x"]
    finally:
        await s.close()


async def test_the_key_is_looked_up_only_for_a_segment_without_a_spare(
        tmp_path: Path) -> None:
    """The common rebuild (one shard lost, a spare to compare with) never asks for the key
    (a tenant KEK read, an etcd round trip per stripe); a rebuild from k sources does."""
    s, scrub = await _sim(tmp_path, 47)
    try:
        asked: list[bytes] = []

        async def counted(man: Manifest) -> StripeCodec | None:
            asked.append(man.part.stripe_id)
            return await scrub.codec(man)
        s.repair.stripe_codec = counted
        await s.put("x", 3 * SEGMENT + 7)
        man = next(m for m in await s.manifests() if m.kind == "object")
        p = man.part
        assert s.sim.lose(str(p.nodes[0]), shard_id(p.stripe_id, 0))
        await s.heal()
        await s.check_redundant()
        assert asked == [], "the key was looked up for a rebuild with a spare"
        for i in (0, 1):
            assert s.sim.lose(str(p.nodes[i]), shard_id(p.stripe_id, i))
        await s.heal()
        await s.check_redundant()
        assert asked == [p.stripe_id]
    finally:
        await s.close()


async def test_a_refused_rebuild_backs_off_per_stripe_and_is_counted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """k sources left, one lying, nobody able to name it: the rebuild is refused. It was
    retried every 30 s forever (a full-rate read of the stripe each time), counted only as
    `sources_disagree`, which `tessera status` explained as "the deep scrub named it". Now
    each refusal doubles the stripe's retry delay and counts as `rebuilds_refused`. A stripe
    refused again and again (several liars, a wrong key identity) was only a count, tied to
    no stripe (final-s18): now the third refusal in a row logs an error naming it, and
    `tessera status` and `tessera fsck` list it."""
    from storage.keyspace import urgent_repair_key
    from storage.metadata import Txn
    from storage.records import pack, unpack

    s, scrub = await _sim(tmp_path, 53)
    s.repair.verify_stripe = scrub.check_stripe
    try:
        man, _ = await _extent(s)
        originals = await _lie_and_lose_two(s, man)
        key = urgent_repair_key(man.part.stripe_id)
        await s.meta.put(key, pack({"reason": "test", "queued": 0.0}))
        delays = []
        for _ in range(3):
            await s.repair.step()
            item = await s.meta.get(key)
            assert item is not None
            e = unpack(item.value)
            delays.append(round(e["retry_at"] - e["deferred_at"]))
            # the delay has passed: due again (the same entry, its count kept)
            await s.meta.txn(Txn(compares={key: item.revision},
                                 puts={key: pack({**e, "retry_at": 0})}))
        assert delays == [30, 60, 120], delays
        assert s.repair.stats.rebuilds_refused == 3
        assert await _committed_lie(s, man, originals) == []
        # the third refusal in a row names the stripe: `tessera status` and `tessera fsck`
        assert any(r.levelname == "ERROR" and man.part.stripe_id.hex() in r.getMessage()
                   for r in caplog.records), "no error line named the refused stripe"
        await _assert_alarm_shown(s, man.part.stripe_id.hex())
    finally:
        await s.close()


async def _assert_alarm_shown(s: Sim, stripe_hex: str) -> None:
    """`stripe_hex` is an alarm in the status document, its text and fsck's report."""
    from ops.status import render
    from storage.clusterstatus import collect_status
    from storage.fsck import fsck

    doc = await collect_status(s.cluster)
    assert [a["stripe"] for a in doc["repair"]["refused_stripes"]] == [stripe_hex]
    assert f"ALARM stripe {stripe_hex}: rebuild refused 3 times" in render(doc)
    report = await fsck(s.meta, s.sim, list(s.cfg.nodes))
    assert any(stripe_hex in f for f in report.findings["rebuild-refused"]), report.findings


async def _keyless_sim(tmp_path: Path, seed: int) -> Sim:
    """A sim whose repair sees every stripe as SSE-C data: a codec without a cipher."""
    from dataclasses import replace

    s, scrub = await _sim(tmp_path, seed)
    s.repair.verify_stripe = scrub.check_stripe

    async def keyless(man: Manifest) -> StripeCodec | None:
        codec = await scrub.codec(man)  # as for SSE-C data: no cipher
        return None if codec is None else replace(codec, cipher=None)
    s.repair.stripe_codec = keyless
    return s


async def test_an_sse_c_stripe_at_k_waits_for_its_down_nodes(tmp_path: Path) -> None:
    """SSE-C: the cluster has no key, so a rebuild from exactly k sources cannot be
    checked. While the lost shards' nodes are only DOWN it was rebuilt anyway and a liar
    among the k was committed (the honest copies on the returning nodes then orphans, the
    object unreadable for good). Now it is refused while a holder is DOWN; once the nodes
    return the liar is outvoted; a holder OUT (gone for good) lets the rebuild go ahead."""
    from storage.health import OUT
    from storage.keyspace import urgent_repair_key
    from storage.records import pack

    s = await _keyless_sim(tmp_path, 59)
    try:
        await s.put("x", 3 * SEGMENT + 7)
        man = next(m for m in await s.manifests() if m.kind == "object")
        originals = await _lie_and_lose_two(s, man)
        for _ in range(3):
            await s.repair.step()
        assert await _committed_lie(s, man, originals) == [], \
            "an SSE-C stripe was rebuilt unchecked from k sources while its nodes were down"
        assert s.repair.stats.rebuilds_refused >= 1
        await s.heal()
        assert await s.read("x") == s.data["x"]
        # gone for good: the rebuild from k goes ahead (nothing better can come back)
        p = await _part(s, man.part.stripe_id)
        s.sim.down.update({str(p.nodes[0]), str(p.nodes[1])})
        await s.health.probe_once()
        for n in p.nodes[:2]:
            s.health.states[str(n)].state = OUT
        await s.meta.put(urgent_repair_key(p.stripe_id), pack({"reason": "test", "queued": 0.0}))
        await s.repair.step()
        now = await _part(s, p.stripe_id)
        assert now.nodes[:2] != p.nodes[:2], "an SSE-C stripe with OUT holders was not rebuilt"
    finally:
        await s.close()


async def test_the_deep_scrub_checks_volume_stripes_under_their_key(tmp_path: Path) -> None:
    """With the key, the deep scrub's check of an extent's and a journal segment's stripe
    finds no liar among honest shards (a wrong key identity would name them all) and
    names the one that lies."""
    from storage.volume_journal import append

    s, scrub = await _sim(tmp_path, 61)
    try:
        man, _ = await _extent(s)
        h = await s.cluster.volumes.open("t", "v", "test2")
        seg = await append(h, 1, [(4096, s.rnd.randbytes(3 * SEGMENT))])
        await h.close()
        jman = await load_manifest(s.meta, seg.stripe)
        assert isinstance(jman, Manifest) and jman.kind == "extent"
        for m in (man, jman):
            codec = await scrub.codec(m)
            assert codec is not None and codec.cipher is not None
            assert await scrub.check_stripe(m.part.stripe_id) == []
            p = m.part
            sid = shard_id(p.stripe_id, 3)
            good = bytes(s.sim.files[str(p.nodes[3])][sid])
            s.sim.files[str(p.nodes[3])][sid] = bytearray(_lie_in_segment(good, 0, 3))
            assert await scrub.check_stripe(p.stripe_id) == [3]
    finally:
        await s.close()


async def test_a_node_return_drops_the_sweeps_stale_assessments(tmp_path: Path) -> None:
    """The sweep's assessment of a stripe, made while two of its nodes were down, was
    reused after they returned (`RepairWorker._fresh`, within FRESH_S): the step rebuilt
    their shards again from the k others, in place on the returned nodes (with the key the
    liar among the k stops it; for SSE-C it overwrote their honest copies with the lie).
    A return drops those assessments: the step sees all six shards and rebuilds nothing."""
    s, scrub = await _sim(tmp_path, 67)
    s.repair.verify_stripe = scrub.check_stripe
    try:
        await s.put("x", 3 * SEGMENT + 7)
        man = next(m for m in await s.manifests() if m.kind == "object")
        await _lie_and_lose_two(s, man)
        for _ in range(3):
            await s.repair.step()
        stopped = s.repair.stats.sources_disagree
        assert stopped >= 1
        s.sim.down.clear()
        await s.health.probe_once()
        await s.repair.step()
        assert s.repair.stats.sources_disagree == stopped, \
            "a rebuild after the nodes' return used the assessment made while they were down"
    finally:
        await s.close()


async def _part(s: Sim, stripe_id: bytes) -> Any:
    """The stripe's part as its manifest has it now (the stripe must still be named)."""
    m = await load_manifest(s.meta, stripe_id)
    assert m is not None and m.part is not None
    return m.part


async def test_a_refused_sse_c_stripe_is_retried_when_its_nodes_turn_out(
        tmp_path: Path) -> None:
    """An SSE-C stripe at k refused while its lost shards' nodes were DOWN waited out its
    back-off (30 s doubling, ~5 min after a few refusals) after those nodes turned OUT,
    although nothing then kept it from being rebuilt: DOWN -> OUT did not make deferred
    entries due. Now it is rebuilt at the next step after the change."""
    from storage.health import OUT
    from storage.keyspace import urgent_repair_key
    from storage.records import pack, unpack

    s = await _keyless_sim(tmp_path, 67)
    try:
        await s.put("x", 3 * SEGMENT + 7)
        man = next(m for m in await s.manifests() if m.kind == "object")
        p = man.part
        await _lie_and_lose_two(s, man)
        key = urgent_repair_key(p.stripe_id)
        await s.meta.put(key, pack({"reason": "test", "queued": 0.0}))
        await s.repair.step()
        item = await s.meta.get(key)
        assert item is not None and unpack(item.value).get("refused") == 1
        assert s.repair.stats.rebuilds_refused == 1
        for n in p.nodes[:2]:
            s.health.states[str(n)].state = OUT  # their down grace and out time passed
        await s.repair.step()
        now = await _part(s, p.stripe_id)
        assert now.nodes[:2] != p.nodes[:2], \
            "a refused SSE-C stripe waited its back-off after its nodes turned OUT"
    finally:
        await s.close()
