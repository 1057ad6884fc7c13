"""Deterministic simulation: the real object service and repair worker over simulated nodes.

Seeded fault schedules (nodes down, shards lost, bits flipped, nodes wiped) run against
in-memory nodes; after every step a checker asserts that every object either reads back
byte-identical or fails with DataUnavailable (never wrong bytes), and that after repair
every stripe is back to k+m healthy shards placed zone-safely.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from storage.cluster import Cluster
from storage.config import config_from_mapping
from storage.crypto.keys import FileRootKey
from storage.errors import DataUnavailable, QuorumNotReached
from storage.health import DOWN
from storage.keyspace import GC, REPAIR, STRIPE, space, stripe_of
from storage.metadata.sqlite import SqliteStore
from storage.objects import PutOptions
from storage.placement import zone_safe
from storage.shards.ids import shard_id
from storage.tenants import TenantService
from storage.testing.simnodes import SimNodes
from storage.workers.gcfence import Fence
from storage.workers.manifests import Commit, Manifest, load_manifest
from storage.workers.repair import RepairSettings, RepairWorker

SEGMENT = 64 * 1024


class Sim:
    def __init__(self, tmp: Path, seed: int) -> None:
        self.rnd = random.Random(seed)
        nodes = [{"id": f"n{z * 3 + i + 1}", "zone": f"az{z + 1}",
                  "address": f"127.0.{z + 1}.{i + 1}:1"} for z in range(3) for i in range(3)]
        self.cfg = config_from_mapping({
            "data_dir": str(tmp), "cluster": {"segment_size": SEGMENT,
                                              "inline_max_bytes": 0},  # every object on shards
            "profiles": {"standard": {"k": 4, "m": 2}}, "nodes": nodes}, tmp)
        self.sim = SimNodes(list(self.cfg.nodes))
        self.pool = ThreadPoolExecutor(2)
        self.data: dict[str, bytes] = {}

    async def open(self, tmp: Path) -> None:
        self.meta = await SqliteStore.open(tmp / "meta.db")
        self.tenants = TenantService(self.meta, FileRootKey(tmp / "root.key"))
        await self.tenants.load()
        await self.tenants.create("t")
        # the real wiring over the simulated nodes
        self.cluster = Cluster.wire(self.cfg, self.meta, self.tenants, self.sim, self.pool,
                                    self.pool, gc_grace_s=0, stall_s=5)
        self.health, self.stripes = self.cluster.health, self.cluster.stripes
        self.buckets, self.objects = self.cluster.buckets, self.cluster.objects
        await self.buckets.create("t", "b")
        self.bucket = await self.buckets.get("t", "b")
        self.repair = RepairWorker(self.cfg, self.meta, self.sim, self.health, self.pool,
                                   RepairSettings(rate_bytes_s=0, down_grace_s=0,
                                                  sweep_interval_s=0, orphan_grace_s=0))

    async def close(self) -> None:
        await self.meta.close()
        self.pool.shutdown()

    async def put(self, key: str, size: int) -> None:
        body = self.rnd.randbytes(size)

        async def src():
            for i in range(0, len(body), 50_000):
                yield body[i:i + 50_000]

        await self.objects.put(self.bucket, key, src(), PutOptions(size_hint=size))
        self.data[key] = body

    async def read(self, key: str) -> bytes:
        v = await self.objects.head(self.bucket, key)
        return b"".join([c async for c in self.objects.read(v, on_damage=lambda *a: None)])

    async def check_reads(self) -> int:
        """Every object reads back exactly or fails cleanly; returns how many were readable."""
        ok = 0
        for key, body in self.data.items():
            try:
                got = await self.read(key)
            except DataUnavailable:
                continue
            assert got == body, f"{key}: wrong bytes"
            ok += 1
        return ok

    async def manifests(self) -> list[Manifest]:
        out = []
        for item in await self.meta.range(*space(STRIPE), limit=100000):
            m = await load_manifest(self.meta, stripe_of(item.key))
            if isinstance(m, Manifest):
                out.append(m)
        return out

    async def check_redundant(self) -> None:
        for m in await self.manifests():
            p = m.part
            assert None not in p.nodes and len(p.nodes) == p.k + p.m, p.nodes
            assert zone_safe(p.nodes, self.cfg.nodes, p.m)
            for i, nid in enumerate(p.nodes):
                assert shard_id(p.stripe_id, i) in self.sim.files[nid], (i, nid)

    async def heal(self, rounds: int = 40) -> None:
        self.sim.down.clear()
        await self.health.probe_once()
        for n in self.sim.files:
            self.sim.scrub(n)
        for _ in range(rounds):
            await self.repair.step()
            backlog = await self.meta.range(*space(REPAIR), limit=1)
            if not backlog and self.repair.stats.last_sweep_end and \
                    self.repair._sweep_cursor == space(STRIPE)[0]:
                break

    def random_shard(self) -> tuple[str, str]:
        choices = sorted((n, s) for n, fs in self.sim.files.items() for s in fs)
        return self.rnd.choice(choices)


@pytest.fixture
async def sim_factory(tmp_path: Path):
    sims: list[Sim] = []

    async def make(seed: int) -> Sim:
        d = tmp_path / f"s{seed}"
        d.mkdir()
        s = Sim(d, seed)
        await s.open(d)
        sims.append(s)
        return s

    yield make
    for s in sims:
        await s.close()


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
async def test_seeded_faults_within_budget_never_lose(sim_factory, seed: int) -> None:
    s = await sim_factory(seed)
    for i in range(6):
        await s.put(f"o{i}", s.rnd.choice([1, 1000, SEGMENT, 3 * SEGMENT + 7]))
    for _step in range(6):
        kind = s.rnd.choice(["lose", "flip", "down", "wipe"])
        if kind == "lose":
            n, sid = s.random_shard()
            s.sim.lose(n, sid)
        elif kind == "flip":
            n, sid = s.random_shard()
            s.sim.flip(n, sid, s.rnd.randrange(60, 10_000), s.rnd.randrange(8))
        elif kind == "down":
            n = s.rnd.choice(sorted(s.sim.files))
            s.sim.down.add(n)
            s.health.states[n].state = DOWN
        else:
            s.sim.wipe(s.rnd.choice(sorted(s.sim.files)))
        # writes keep working while faults are present
        try:
            await s.put(f"w{_step}", s.rnd.choice([10, SEGMENT + 1]))
        except QuorumNotReached:
            pass
        await s.check_reads()
        await s.heal()
        await s.check_redundant()
        assert await s.check_reads() == len(s.data)


async def test_beyond_budget_is_a_clean_error(sim_factory) -> None:
    s = await sim_factory(9)
    await s.put("x", 2 * SEGMENT + 5)
    m = (await s.manifests())[0]
    p = m.part
    for i in range(p.m + 1):
        s.sim.lose(p.nodes[i], shard_id(p.stripe_id, i))
    with pytest.raises(DataUnavailable):
        await s.read("x")
    await s.heal(rounds=5)
    assert s.repair.stats.unrepairable >= 1
    with pytest.raises(DataUnavailable):
        await s.read("x")


async def test_repair_commit_after_delete_collects_new_shards(sim_factory) -> None:
    s = await sim_factory(11)
    await s.put("d", SEGMENT)
    m = (await s.manifests())[0]
    p = m.part
    s.sim.lose(p.nodes[0], shard_id(p.stripe_id, 0))
    a = await s.repair.assess(p)
    assert a.missing == [0]
    await s.objects.delete(s.bucket, "d")
    ok = await s.repair._commit(p.stripe_id, list(p.nodes), {0: "n9"}, Fence())
    assert ok is Commit.GAVE_UP  # the version is gone: its copies go to GC
    gc = await s.meta.range(*space(GC), limit=100)
    assert gc, "the rebuilt shard must be queued for collection"


async def test_lying_shard_read_then_rebuilt_although_its_node_was_not_told(sim_factory,
                                                                            monkeypatch) -> None:
    """A shard with valid checksums but other bytes: the read authenticates around it, the
    stripe is queued with the liar named, and repair rewrites it even though the node could
    not be told to quarantine it (its stat and checksums look healthy)."""
    from storage.errors import StorageError
    from storage.lying import LyingShards
    from storage.testing.lies import lie

    s = await sim_factory(13)
    s.stripes.lies = LyingShards(s.meta, s.sim)

    async def unreachable(*_a: object, **_k: object) -> bool:
        raise StorageError("node unreachable (simulated)")

    monkeypatch.setattr(s.sim, "quarantine_shard", unreachable)
    await s.put("big", 3 * SEGMENT + 7)
    await s.put("small", 1000)
    for key in ("big", "small"):
        v = await s.objects.head(s.bucket, key)
        p = v.parts[0]
        sid = shard_id(p.stripe_id, 2)
        original = bytes(s.sim.files[p.nodes[2]][sid])
        s.sim.files[p.nodes[2]][sid] = bytearray(lie(original, key, None))
        assert await s.read(key) == s.data[key]
        await s.stripes.lies.settle()
        assert s.stripes.lies.found["read"] >= 1
        await s.heal()
        p = (await s.objects.head(s.bucket, key)).parts[0]
        assert bytes(s.sim.files[p.nodes[2]][sid]) == original
        assert await s.read(key) == s.data[key]
    assert s.stripes.lies.found["read"] == 2


async def test_rebuild_never_spreads_a_lying_source(sim_factory) -> None:
    """Shard 1 lies and shard 5 is lost: a rebuild from shards 0-3 would write shard 5 from
    the lie. The rebuild reads a spare source, sees they disagree and stops; the deep
    scrub's check (with the key) names shard 1; then both are rebuilt right."""
    from storage.lying import LyingShards
    from storage.testing.lies import lie
    from storage.workers.deepscrub import DeepScrubber, DeepScrubSettings

    s = await sim_factory(17)
    s.stripes.lies = LyingShards(s.meta, s.sim)
    scrub = DeepScrubber(s.cfg, s.meta, s.objects, s.sim, s.health, s.pool,
                         s.stripes.lies, DeepScrubSettings(rate_bytes_s=0))
    s.repair.verify_stripe = scrub.check_stripe
    await s.put("x", 2 * SEGMENT + 3)
    p = (await s.objects.head(s.bucket, "x")).parts[0]
    sids = [shard_id(p.stripe_id, i) for i in range(6)]
    originals = [bytes(s.sim.files[p.nodes[i]][sids[i]]) for i in range(6)]
    s.sim.files[p.nodes[1]][sids[1]] = bytearray(lie(originals[1], "x", None))
    s.sim.lose(p.nodes[5], sids[5])
    await s.heal()
    await s.stripes.lies.settle()
    await s.heal()
    assert s.repair.stats.sources_disagree >= 1
    p = (await s.objects.head(s.bucket, "x")).parts[0]
    for i in range(6):
        assert bytes(s.sim.files[p.nodes[i]][sids[i]]) == originals[i], i
    assert await s.read("x") == s.data["x"]


@pytest.mark.parametrize("size", [3 * SEGMENT + 7, 1000], ids=["streamed", "small"])
async def test_keyless_sealed_read_never_copies_a_lie(sim_factory, size: int) -> None:
    """Re-coding SSE-C data reads sealed segments without the key (no tag to check): k+1
    blocks must agree, and a lying shard is outvoted by the codeword k+1 shards agree on."""
    from storage.lying import LyingShards
    from storage.testing.lies import lie

    s = await sim_factory(19)
    s.stripes.lies = LyingShards(s.meta, s.sim)
    await s.put("x", size)
    v = await s.objects.head(s.bucket, "x")
    p = v.parts[0]

    async def sealed() -> bytes:
        return b"".join([c async for c in s.objects.read_sealed(v, p)])

    before = await sealed()
    sid = shard_id(p.stripe_id, 0)
    s.sim.files[p.nodes[0]][sid] = bytearray(lie(bytes(s.sim.files[p.nodes[0]][sid]), "x",
                                                 None))
    assert await sealed() == before
    await s.stripes.lies.settle()
    assert s.stripes.lies.found == {"read": 1}


def _lie_in_segment(raw: bytes, seg: int, seed: int) -> bytes:
    """A shard file whose block of segment `seg` alone is other bytes under valid CRCs."""
    from storage.shards.format import (
        FRAME_HEAD,
        FRAME_HEAD_BYTES,
        HEADER_BYTES,
        ShardHeader,
        pack_frame,
    )

    out = bytearray(raw)
    header = ShardHeader.unpack(bytes(out[:HEADER_BYTES]))
    off, n = HEADER_BYTES, 0
    while off + FRAME_HEAD_BYTES <= len(out):
        length, _ = FRAME_HEAD.unpack_from(out, off)
        if n == seg:
            out[off:off + FRAME_HEAD_BYTES + length] = pack_frame(
                header, seg, random.Random(seed).randbytes(length))
        off += FRAME_HEAD_BYTES + length
        n += 1
    return bytes(out)


async def test_keyless_repair_of_named_liars_is_outvoted_by_their_honest_blocks(
        sim_factory) -> None:
    """Without the key (SSE-C): shard 0 lies in segment 0, 1 in 1, 2 in 2. A read named 0
    and 1 but not yet 2. Rebuilding 0 and 1 from the other k shards alone would copy shard
    2's lie into segment 2 of both (three bad blocks: the segment lost); the named shards'
    honest blocks must outvote it, name shard 2, and every shard end up as written."""
    from dataclasses import replace

    from storage.lying import LyingShards

    s = await sim_factory(23)
    s.stripes.lies = LyingShards(s.meta, s.sim)
    await s.put("x", 3 * SEGMENT + 7)
    p = (await s.objects.head(s.bucket, "x")).parts[0]
    sids = [shard_id(p.stripe_id, i) for i in range(6)]
    originals = [bytes(s.sim.files[p.nodes[i]][sids[i]]) for i in range(6)]
    for i in (0, 1, 2):
        s.sim.files[p.nodes[i]][sids[i]] = bytearray(_lie_in_segment(originals[i], i, i))
    from storage.workers.deepscrub import DeepScrubber, DeepScrubSettings

    keyed = DeepScrubber(s.cfg, s.meta, s.objects, s.sim, s.health, s.pool, s.stripes.lies,
                         DeepScrubSettings(rate_bytes_s=0)).codec

    async def keyless(man):  # the cluster holds no key for SSE-C data
        codec = await keyed(man)
        return None if codec is None else replace(codec, cipher=None)

    s.repair.stripe_codec = keyless
    for i in (0, 1):
        await s.stripes.lies.record(p.stripe_id, i, s.cfg.node(p.nodes[i]), "read", i)
    await s.heal()
    p = (await s.objects.head(s.bucket, "x")).parts[0]
    for i in range(6):
        assert bytes(s.sim.files[p.nodes[i]][sids[i]]) == originals[i], i
    assert await s.read("x") == s.data["x"]


async def test_orphan_age_is_taken_on_the_node_clock(sim_factory) -> None:
    """A shard file's age is its node's clock now less its mtime (the node's clock too).
    The sweep took the gateway's clock less the node's mtime: a node two hours behind had
    the shards of a write still in flight (no stripe index entry until its commit) deleted
    as orphans at once, under a one-hour grace; one two hours ahead kept real orphans."""
    import os

    s = await sim_factory(21)
    repair = RepairWorker(s.cfg, s.meta, s.sim, s.health, s.pool,
                          RepairSettings(rate_bytes_s=0, down_grace_s=0, sweep_interval_s=0,
                                         orphan_grace_s=3600))
    await s.put("x", SEGMENT)
    p = (await s.manifests())[0].part
    body = bytes(s.sim.files[p.nodes[0]][shard_id(p.stripe_id, 0)])
    behind, ahead = sorted(set(s.sim.files) - set(p.nodes))[:2]
    s.sim.clock_offset = {behind: -7200.0, ahead: 7200.0}
    in_flight = shard_id(os.urandom(16), 0)  # written just now, its write not committed yet
    s.sim.files[behind][in_flight] = bytearray(body)
    s.sim.mtime[(behind, in_flight)] = s.sim.now(behind)
    orphan = shard_id(os.urandom(16), 0)  # an aborted write's, 4000 s ago
    s.sim.files[ahead][orphan] = bytearray(body)
    s.sim.mtime[(ahead, orphan)] = s.sim.now(ahead) - 4000
    await s.health.probe_once()
    await repair.sweep_step()  # a pass start: the volume stripes are known
    watched = [0.0]
    repair._orphan_watch.clock = lambda: watched[0]  # (life20: watched for the grace too)
    await repair._collect_orphans()
    assert orphan in s.sim.files[ahead], "an orphan deleted at first sight"
    watched[0] = 3600.0
    await repair._collect_orphans()
    assert in_flight in s.sim.files[behind], "a write in flight was swept as an orphan"
    assert orphan not in s.sim.files[ahead], "an orphan past the grace was kept"


async def test_a_clock_stepped_forward_does_not_sweep_a_write_in_flight(sim_factory) -> None:
    """A node's clock stepped forward by more than the orphan grace between a write's first
    shard and its commit (NTP; seen under libfaketime in test_archive_clock) made the fresh
    shard look a grace old: the sweep deleted it, and the commit, within its WriteAge limit
    on the writer's monotonic clock, then named it. The sweep now also needs to have
    watched the shard without an owner for the grace on its own monotonic clock (no step
    moves it); a real orphan still goes once that has passed."""
    import os

    s = await sim_factory(22)
    repair = RepairWorker(s.cfg, s.meta, s.sim, s.health, s.pool,
                          RepairSettings(rate_bytes_s=0, down_grace_s=0, sweep_interval_s=0,
                                         orphan_grace_s=3600))
    await s.put("x", SEGMENT)
    p = (await s.manifests())[0].part
    body = bytes(s.sim.files[p.nodes[0]][shard_id(p.stripe_id, 0)])
    node = sorted(set(s.sim.files) - set(p.nodes))[0]
    in_flight = shard_id(os.urandom(16), 0)
    s.sim.files[node][in_flight] = bytearray(body)
    s.sim.mtime[(node, in_flight)] = s.sim.now(node)
    await s.health.probe_once()
    await repair.sweep_step()
    watched = [0.0]
    repair._orphan_watch.clock = lambda: watched[0]
    await repair._collect_orphans()  # seen young: not an orphan yet
    s.sim.clock_offset = {node: 2 * 86400.0}  # the node's clock steps two days forward
    watched[0] = 5.0  # (the sweep's next check, seconds later on a clock no step moves)
    await repair._collect_orphans()
    assert in_flight in s.sim.files[node], "a write in flight swept after a clock step"
    watched[0] = 3600.0 + 5.0
    await repair._collect_orphans()
    assert in_flight not in s.sim.files[node], "an orphan watched for the grace was kept"


async def test_repair_of_an_open_part_racing_its_completion(sim_factory, monkeypatch) -> None:
    """Repair commits an open part's rebuilt shard after CompleteMultipartUpload read the
    part's old nodes and before it commits: the completion must fail its compare (the
    repair rewrote the upload record) and read the part again, so the object names the
    rebuilt shard and not the lost one (the part record alone changing went unnoticed)."""
    from storage.multipart import MultipartService
    from storage.multipart_records import ListedPart

    s = await sim_factory(23)
    mp = s.cluster.multipart
    up, part, body = await open_upload_with_a_part(s)
    lost = part.nodes[0]
    assert lost is not None
    s.sim.down.add(lost)  # its shard 0 is rebuilt on another node
    real = MultipartService._assemble
    raced: list[bool] = []

    async def assemble_then_repair(self, *a, **k):
        out = await real(self, *a, **k)
        if not raced:
            raced.append(True)
            await s.health.probe_once()
            for _ in range(10):  # the sweep finds the part short, repair commits shard 0
                await s.repair.step()
            assert s.repair.stats.shards_rebuilt == 1
        return out

    monkeypatch.setattr(MultipartService, "_assemble", assemble_then_repair)
    await mp.complete(s.bucket, "mp", up.upload_id, [ListedPart(1, part.etag)])
    assert raced
    p = (await s.objects.head(s.bucket, "mp")).parts[0]
    assert p.nodes[0] != lost, "the object names the lost shard"
    assert shard_id(p.stripe_id, 0) in s.sim.files[str(p.nodes[0])]
    assert await s.read("mp") == body


async def open_upload_with_a_part(s: Any) -> tuple[Any, Any, bytes]:
    """An upload of key "mp" in the sim's bucket with one part of two segments and a bit
    (the prologue of the tests that race a completion against repair or the orphan sweep):
    the upload, its part and the part's bytes."""
    from storage.multipart_records import UploadOptions

    up = await s.cluster.multipart.create(s.bucket, "mp", UploadOptions())
    body = s.rnd.randbytes(2 * SEGMENT + 5)

    async def src() -> AsyncIterator[bytes]:
        yield body

    part = await s.cluster.multipart.upload_part(s.bucket, "mp", up.upload_id, 1, src(), [],
                                                 len(body))
    return up, part, body


async def test_rebalance_rebuild_from_k_sources_never_copies_a_lie(sim_factory) -> None:
    """A drain whose source node is down rebuilds the shard instead of copying it. With
    another shard's node down too only k sources are left, one of them lying in segment 0
    (nobody has named it): with no spare block to compare with, the rebuild decoded the lie
    into the moved shard and committed it (the stripe then agreed on a codeword that never
    authenticates). It is now checked with the key: refused, nothing committed."""
    from storage.health import DOWN
    from storage.workers.deepscrub import DeepScrubber, DeepScrubSettings
    from storage.workers.rebalance import Rebalancer, _Move

    s = await sim_factory(23)
    await s.put("x", 3 * SEGMENT + 7)
    man = next(iter(await s.manifests()))
    p = man.part
    sids = [shard_id(p.stripe_id, i) for i in range(6)]
    originals = [bytes(s.sim.files[p.nodes[i]][sids[i]]) for i in range(6)]
    s.sim.files[p.nodes[2]][sids[2]] = bytearray(_lie_in_segment(originals[2], 0, 2))
    s.sim.down.update({p.nodes[0], p.nodes[1]})  # 0 is the drained shard's node
    await s.health.probe_once()
    assert {s.health.states[n].state for n in p.nodes[:2]} == {DOWN}
    dst = next(n for n in s.cfg.nodes if n.id not in p.nodes and
               n.zone == s.cfg.node(p.nodes[0]).zone)
    rebalance = Rebalancer(s.cfg, s.meta, s.sim, s.health, s.pool)
    rebalance.stripe_codec = DeepScrubber(s.cfg, s.meta, s.objects, s.sim, s.health, s.pool,
                                          s.stripes.lies, DeepScrubSettings(rate_bytes_s=0)).codec
    await rebalance._execute(_Move(man, {0: (str(p.nodes[0]), dst)}), {})
    now = (await s.objects.head(s.bucket, "x")).parts[0]
    if now.nodes[0] != p.nodes[0]:
        assert bytes(s.sim.files[str(now.nodes[0])][sids[0]]) == originals[0], \
            "the drain committed a shard rebuilt from a lying source"
    assert now.nodes == p.nodes
    await s.heal()  # the nodes are back: five honest shards, the read names the liar
    assert await s.read("x") == s.data["x"]


async def test_a_liar_lying_again_within_a_minute_is_named_at_once(sim_factory) -> None:
    """Shard 0 lies, a read names it, repair rewrites it in place. Within the minute it lies
    again while shard 1 is lost: the rebuild of 1 meets the lie (SourcesDisagree) and the
    deep scrub's check finds it, but `LyingShards` reports a (stripe, index, node) once a
    minute, so nothing named it: the entry waited 30 s, retried, met the lie again, and the
    stripe stayed a shard short for about a minute. Repair now names what the check found."""
    from storage.lying import LyingShards
    from storage.testing.lies import lie
    from storage.workers.deepscrub import DeepScrubber, DeepScrubSettings

    s = await sim_factory(29)
    s.stripes.lies = LyingShards(s.meta, s.sim)
    scrub = DeepScrubber(s.cfg, s.meta, s.objects, s.sim, s.health, s.pool,
                         s.stripes.lies, DeepScrubSettings(rate_bytes_s=0))
    s.repair.verify_stripe, s.repair.stripe_codec = scrub.check_stripe, scrub.codec
    await s.put("x", 3 * SEGMENT + 7)
    p = (await s.objects.head(s.bucket, "x")).parts[0]
    sids = [shard_id(p.stripe_id, i) for i in range(6)]
    originals = [bytes(s.sim.files[p.nodes[i]][sids[i]]) for i in range(6)]
    s.sim.files[p.nodes[0]][sids[0]] = bytearray(lie(originals[0], "first", None))
    assert await s.read("x") == s.data["x"]  # names shard 0
    await s.stripes.lies.settle()
    await s.heal()
    now = (await s.objects.head(s.bucket, "x")).parts[0]
    assert now.nodes[0] == p.nodes[0]  # rewritten in place (the scenario needs it)
    assert bytes(s.sim.files[p.nodes[0]][sids[0]]) == originals[0]
    s.sim.files[p.nodes[0]][sids[0]] = bytearray(lie(originals[0], "again", 1))
    s.sim.lose(p.nodes[1], sids[1])
    await s.heal()
    await s.stripes.lies.settle()
    await s.heal()
    await s.check_redundant()
    now = (await s.objects.head(s.bucket, "x")).parts[0]
    for i in range(6):
        assert bytes(s.sim.files[now.nodes[i]][sids[i]]) == originals[i], i
