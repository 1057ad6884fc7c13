"""The deep scrub's keyed check of block-volume stripes across a volume's lineage: extents
sealed before a snapshot bumped the generation (`seal_gen`), pointers a snapshot keeps,
journal segments a snapshot holds (`VJK`), clones, clones of clones and flattened clones,
with snapshots and the origin deleted as allowed. Honest shards must never be named liars:
the scrub's check feeds repair's and rebalance's (a wrong key identity there would have
every honest shard of such a stripe rebuilt or refused)."""

from __future__ import annotations

from pathlib import Path

import pytest

import storage.volumes as volumes_module
from storage.keyspace import STRIPE, space, volume_gone_key
from storage.keyspace import unpack as unpack_key
from storage.pipeline import segment_count
from storage.records import unpack
from storage.shards.ids import shard_id
from storage.volume_journal import append, retire
from storage.workers.deepscrub import DeepScrubber, DeepScrubSettings
from storage.workers.manifests import Manifest, load_manifest
from tests.sim.test_repair_key_checks import _sim
from tests.sim.test_sim_repair import SEGMENT, Sim, _lie_in_segment

MIB = 1 << 20


async def _volume_stripes(s: Sim) -> list[Manifest]:
    """The manifests of every indexed volume stripe (extents and journal segments)."""
    out = []
    for item in await s.meta.range(*space(STRIPE), limit=100000):
        m = await load_manifest(s.meta, _stripe(item.key))
        if isinstance(m, Manifest) and m.kind == "extent":
            out.append(m)
    return out


def _stripe(key: bytes) -> bytes:
    return bytes.fromhex(str(unpack_key(key)[1]))


async def _all_honest(s: Sim, scrub: DeepScrubber, what: str) -> int:
    """Every volume stripe checks under its key with no liar named; how many there are."""
    mans = await _volume_stripes(s)
    for m in mans:
        key, p = m.items[0].key, m.part
        codec = await scrub.codec(m)
        assert codec is not None and codec.cipher is not None, (what, key)
        # the workers' codec opens the stripe (a wrong identity fails every GCM tag) ...
        got = b"".join([bytes(c) async for c in s.stripes.read(
            codec, p.nodes, p.size, 0, segment_count(p.size, p.segment_size) - 1)])
        assert len(got) == p.size, (what, key)
        # ... and the scrub's check of it authenticates and names nobody
        before = (scrub.stats.unverifiable, scrub.stats.bytes_checked)
        named = await scrub.check_stripe(p.stripe_id)
        assert named == [], f"{what}: honest shards {named} of {key!r} named liars"
        assert scrub.stats.unverifiable == before[0], f"{what}: {key!r} unverifiable"
        assert scrub.stats.bytes_checked > before[1], f"{what}: {key!r} not checked"
    return len(mans)


async def _rebuild_from_k(s: Sim, scrub: DeepScrubber, what: str, pick) -> None:  # noqa: ANN001
    """Two nodes (two zones) of the stripe `pick` chooses go down: it, and any other stripe
    on both, is rebuilt from exactly k sources under the key check (`ShardWorker._guard`);
    with honest shards none may be refused."""
    s.repair.verify_stripe = scrub.check_stripe
    target = next(m for m in await _volume_stripes(s) if pick(m))
    zone = {n.id: n.zone for n in s.cfg.nodes}
    a = str(target.part.nodes[0])  # two of its nodes, in two zones (each keeps two)
    b = next(str(n) for n in target.part.nodes if zone[str(n)] != zone[a])
    down = {a, b}
    s.sim.down.update(down)
    await s.health.probe_once()
    for _ in range(40):
        await s.repair.step()
        if not any(down & set(m.part.nodes) for m in await _volume_stripes(s)):
            break
    st = s.repair.stats
    assert (st.sources_disagree, st.rebuilds_refused) == (0, 0), \
        f"{what}: honest sources refused: {st}"
    left = [m.items[0].key for m in await _volume_stripes(s) if down & set(m.part.nodes)]
    assert left == [], f"{what}: not rebuilt: {left}"
    s.sim.down.clear()
    await s.health.probe_once()
    await _all_honest(s, scrub, f"{what}, rebuilt")


def _sealed_before(m: Manifest) -> bool:
    return m.items[0].key.startswith(b"VX\x00") and bool(unpack(m.items[0].value).get("seal_gen"))


def _kept_segment(m: Manifest) -> bool:
    return m.items[0].key.startswith(b"VJK\x00")


async def test_the_deep_scrub_names_no_honest_shard_across_snapshots_and_clones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s, scrub = await _sim(tmp_path, 71)
    vols = s.cluster.volumes
    rb = s.rnd.randbytes
    try:
        await vols.create("t", "v", 4 * MIB)
        h = await vols.open("t", "v", "w1")
        await h.write_extent(0, rb(MIB))
        await h.write_extent(1, rb(MIB))
        seg = await append(h, 1, [(4096, rb(3 * SEGMENT))])
        # snapshot s1 replays segment 1: folding it keeps its record (VJK)
        await vols.freeze("t", "v", "s1", journal=(1, 1))
        await retire(h, [seg])
        assert any(b"VJK" in m.items[0].key for m in await _volume_stripes(s))
        # s2 committed while the handle still sees the old generation: the next extent is
        # sealed at the old generation and committed at the new one (seal_gen)
        await vols.freeze("t", "v", "s2")
        await h.write_extent(2, rb(MIB))
        assert h._own[2].seal_gen and h._own[2].seal_gen != h._own[2].gen
        await h.write_extent(0, rb(MIB))  # the s1/s2 pointer of extent 0 is kept
        await h.close()
        n = await _all_honest(s, scrub, "origin with snapshots")
        assert n >= 5

        await vols.clone("t", "v", "s1", "c1")
        h = await vols.open("t", "c1", "w2")
        await h.write_extent(1, rb(MIB))
        seg = await append(h, 1, [(MIB + 4096, rb(SEGMENT + 5))])
        await h.close()
        await vols.snapshot("t", "c1", "cs")
        await vols.clone("t", "c1", "cs", "c2")
        h = await vols.open("t", "c2", "w3")
        await h.write_extent(3, rb(MIB))
        await h.close()
        await _all_honest(s, scrub, "clone and clone of clone")
        await _rebuild_from_k(s, scrub, "kept journal segment", _kept_segment)
        await _rebuild_from_k(s, scrub, "extent sealed before a snapshot", _sealed_before)
        c2 = (await vols.get("t", "c2")).id
        await _rebuild_from_k(s, scrub, "clone of a clone's extent",
                              lambda m: unpack_key(m.items[0].key)[1] == c2)

        await vols.flatten("t", "c2")
        await _all_honest(s, scrub, "flattened clone of a clone")
        await vols.delete_snapshot("t", "c1", "cs")
        await vols.flatten("t", "c1")
        await _all_honest(s, scrub, "flattened clone")
        await vols.delete_snapshot("t", "v", "s2")
        await _all_honest(s, scrub, "s2 deleted")
        await vols.delete_snapshot("t", "v", "s1")
        await _all_honest(s, scrub, "s1 deleted")
        # a delete killed after its record moved to (VD, id), before its pointers retired:
        # a scrubber that never saw the volume finds its tenant there
        await vols.create("t", "d", 2 * MIB)
        h = await vols.open("t", "d", "w4")
        await h.write_extent(1, rb(MIB))
        did = h.vol.id
        await h.close()

        async def killed(*_: object) -> None:
            raise RuntimeError("killed")
        monkeypatch.setattr(volumes_module, "gone_volume_step", killed)
        with pytest.raises(RuntimeError):
            await vols.delete("t", "d")
        monkeypatch.undo()
        fresh = DeepScrubber(s.cfg, s.meta, s.objects, s.sim, s.health, s.pool,
                             s.stripes.lies, DeepScrubSettings(rate_bytes_s=0))
        assert await s.meta.get(volume_gone_key(did)) is not None
        assert any(unpack_key(m.items[0].key)[1] == did for m in await _volume_stripes(s))
        await _all_honest(s, fresh, "a deleted volume's pointers")
        await vols.delete("t", "v")
        n = await _all_honest(s, scrub, "origin deleted")
        assert n >= 4
        # and the check still sees a lie (it is not vacuous)
        m = (await _volume_stripes(s))[0]
        p = m.part
        sid = shard_id(p.stripe_id, 3)
        good = bytes(s.sim.files[str(p.nodes[3])][sid])
        s.sim.files[str(p.nodes[3])][sid] = bytearray(_lie_in_segment(good, 0, 3))
        assert await scrub.check_stripe(p.stripe_id) == [3]
    finally:
        await s.close()
