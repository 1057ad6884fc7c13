"""Placement: distinct nodes, at most m shards per zone, full width whenever the zones allow."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.config import NodeSpec, Profile, validate_layout
from storage.placement import place, place_for_write, rank, zone_safe


@dataclass(frozen=True)
class Case:
    nodes: tuple[NodeSpec, ...]
    profile: Profile
    exclude: frozenset[str]
    stripe_id: bytes


def make_nodes(sizes: list[int], weights: list[float] | None = None) -> tuple[NodeSpec, ...]:
    out = []
    for z, count in enumerate(sizes, start=1):
        for i in range(1, count + 1):
            w = weights[len(out) % len(weights)] if weights else 1.0
            out.append(NodeSpec(id=f"n{z}-{i}", zone=f"az{z}", address=f"127.0.{z}.{i}:1",
                                weight=w))
    return tuple(out)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    sizes = draw(st.lists(st.integers(1, 6), min_size=3, max_size=5))
    weights = draw(st.lists(st.sampled_from([0.5, 1.0, 2.0]), min_size=1, max_size=4))
    nodes = make_nodes(sizes, weights)
    m = draw(st.integers(1, 4))
    while sum(min(m, s) for s in sizes) - m < 1:
        m -= 1
    k = draw(st.integers(1, sum(min(m, s) for s in sizes) - m))
    profile = Profile("p", k, m)
    validate_layout(profile, nodes)  # only layouts the config accepts
    exclude = frozenset(draw(st.sets(st.sampled_from([n.id for n in nodes]),
                                     max_size=len(nodes))))
    stripe = draw(st.binary(min_size=16, max_size=16))
    return Case(nodes, profile, exclude, stripe)


def capacity(nodes: tuple[NodeSpec, ...], exclude: frozenset[str], m: int) -> int:
    per_zone: dict[str, int] = {}
    for n in nodes:
        if n.id not in exclude:
            per_zone[n.zone] = per_zone.get(n.zone, 0) + 1
    return sum(min(m, c) for c in per_zone.values())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_place_properties(case: Case) -> None:
    p = case.profile
    chosen = place(case.stripe_id, p, case.nodes, exclude=case.exclude)
    ids = [n.id for n in chosen]
    assert len(ids) == len(set(ids)), "duplicate node"
    assert not set(ids) & case.exclude, "excluded node chosen"
    per_zone: dict[str, int] = {}
    for n in chosen:
        per_zone[n.zone] = per_zone.get(n.zone, 0) + 1
    assert all(c <= p.m for c in per_zone.values()), per_zone
    assert zone_safe(ids, case.nodes, p.m)
    assert len(chosen) == min(p.width, capacity(case.nodes, case.exclude, p.m))
    if not case.exclude:
        assert len(chosen) == p.width  # validate_layout passed, so the full width fits
    # Deterministic for a given map, whatever the node order.
    again = place(case.stripe_id, p, tuple(reversed(case.nodes)), exclude=case.exclude)
    assert [n.id for n in again] == ids


@settings(max_examples=200, deadline=None)
@given(cases())
def test_excluding_an_unchosen_node_changes_nothing(case: Case) -> None:
    """Rendezvous hashing moves nothing when a node that held no shard goes away."""
    chosen = [n.id for n in place(case.stripe_id, case.profile, case.nodes, case.exclude)]
    others = [n.id for n in case.nodes if n.id not in chosen and n.id not in case.exclude]
    for extra in others[:3]:
        again = place(case.stripe_id, case.profile, case.nodes, case.exclude | {extra})
        assert [n.id for n in again] == chosen


@settings(max_examples=200, deadline=None)
@given(cases(), st.data())
def test_repair_placement_respects_existing_zone_counts(case: Case, data: st.DataObject) -> None:
    """Placing the missing shards of a stripe keeps the whole stripe zone-safe."""
    p = case.profile
    full = place(case.stripe_id, p, case.nodes)
    lost = data.draw(st.sets(st.integers(0, len(full) - 1), max_size=p.m))
    kept = [n for i, n in enumerate(full) if i not in lost]
    counts: dict[str, int] = {}
    for n in kept:
        counts[n.zone] = counts.get(n.zone, 0) + 1
    down = {full[i].id for i in lost}
    new = place(case.stripe_id, p, case.nodes, exclude={n.id for n in kept} | down,
                zone_counts=counts, count=len(lost))
    assert len(new) <= len(lost)
    assert zone_safe([n.id for n in kept + new], case.nodes, p.m)


def test_roles_are_respected() -> None:
    nodes = make_nodes([3, 3, 3]) + tuple(
        NodeSpec(id=f"a{z}", zone=f"az{z}", address="x:1", role="archive") for z in (1, 2, 3))
    for i in range(50):
        chosen = place(bytes([i]) * 16, Profile("s", 4, 2), nodes)
        assert all(n.role == "standard" for n in chosen) and len(chosen) == 6
        arch = place(bytes([i]) * 16, Profile("a", 2, 1, role="archive"), nodes)
        assert sorted(n.id for n in arch) == ["a1", "a2", "a3"]


def test_load_spreads_over_nodes() -> None:
    """Over many stripes every node of the default 9-node cluster gets a fair share."""
    nodes = make_nodes([3, 3, 3])
    hits = {n.id: 0 for n in nodes}
    stripes = 3000
    for i in range(stripes):
        for n in place(i.to_bytes(16, "big"), Profile("s", 4, 2), nodes):
            hits[n.id] += 1
    expected = stripes * 6 / 9
    assert all(abs(h - expected) / expected < 0.1 for h in hits.values()), hits


def test_rank_is_stable_and_complete() -> None:
    nodes = make_nodes([2, 2, 2])
    r = rank(b"s" * 16, nodes)
    assert sorted(n.id for n in r) == sorted(n.id for n in nodes)
    assert rank(b"s" * 16, list(reversed(nodes))) == r


def test_zone_safe_rejects_duplicates_and_crowded_zones() -> None:
    nodes = make_nodes([3, 3, 3])
    assert zone_safe(["n1-1", "n1-2", "n2-1", None], nodes, 2)
    assert not zone_safe(["n1-1", "n1-1"], nodes, 2)
    assert not zone_safe(["n1-1", "n1-2", "n1-3"], nodes, 2)


@pytest.mark.parametrize("down_zone", ["az1", "az2", "az3"])
def test_zone_loss_leaves_k_shards_in_default_cluster(down_zone: str) -> None:
    nodes = make_nodes([3, 3, 3])
    for i in range(200):
        chosen = place(i.to_bytes(16, "big"), Profile("s", 4, 2), nodes)
        assert sum(1 for n in chosen if n.zone != down_zone) >= 4


@settings(max_examples=150, deadline=None)
@given(cases())
def test_place_for_write(case: Case) -> None:
    """Zone-safe whenever all k+m shards fit zone-safely; otherwise spill, never duplicate."""
    p = case.profile
    healthy = tuple(n for n in case.nodes if n.id not in case.exclude)
    chosen = place_for_write(case.stripe_id, p, healthy)
    ids = [n.id for n in chosen]
    assert len(ids) == len(set(ids)) and not set(ids) & case.exclude
    safe = place(case.stripe_id, p, healthy)
    if len(safe) == p.width:
        assert chosen == safe
    else:
        assert chosen[: len(safe)] == safe  # the zone-safe part comes first, unchanged
        assert len(chosen) == min(p.width, len(healthy))


def test_zone_outage_spills_instead_of_refusing() -> None:
    nodes = make_nodes([3, 3, 3])
    up = tuple(n for n in nodes if n.zone != "az1")
    for i in range(50):
        stripe = i.to_bytes(16, "big")
        assert len(place(stripe, Profile("s", 4, 2), up)) == 4  # below the k+1 quorum
        chosen = place_for_write(stripe, Profile("s", 4, 2), up)
        assert len({n.id for n in chosen}) == 6
        assert {n.zone for n in chosen} == {"az2", "az3"}
        assert not zone_safe([n.id for n in chosen], nodes, 2)  # so it is queued for repair
        assert place_for_write(stripe, Profile("s", 4, 2), nodes) == \
            place(stripe, Profile("s", 4, 2), nodes)


async def test_spilled_stripe_returns_to_zone_safety_after_the_zone_is_back(
        tmp_path: Path) -> None:
    """The real object service and repair worker over simulated nodes (storage.testing)."""
    from storage.health import DOWN
    from tests.sim.test_sim_repair import SEGMENT, Sim

    sim = Sim(tmp_path, seed=11)
    await sim.open(tmp_path)
    try:
        az1 = {n.id for n in sim.cfg.nodes if n.zone == "az1"}
        sim.sim.down.update(az1)
        for nid in az1:
            sim.health.states[nid].state = DOWN
        await sim.put("spilled", 2 * SEGMENT + 3)
        (man,) = await sim.manifests()
        placed = man.part.nodes
        assert None not in placed and len(set(placed)) == 6 and not set(placed) & az1
        assert not zone_safe(placed, sim.cfg.nodes, 2)
        assert await sim.check_reads() == 1
        await sim.heal()  # az1 is back: repair moves the excess shards there
        await sim.check_redundant()
        (man,) = await sim.manifests()
        assert len(set(man.part.nodes) & az1) == 2
        assert await sim.check_reads() == 1
    finally:
        await sim.close()


async def test_a_write_with_one_node_of_a_zone_up_keeps_all_k_plus_m_shards(
        tmp_path: Path) -> None:
    """Two nodes of az2 down, its third up: zone-safe slots are 5 (the quorum), not 6. The
    write was acknowledged with a shard short (index 5 unplaced until az2 came back), so two
    more failures lost it. It now spills the sixth shard onto another zone: any two shards
    lost, it reads back; once az2 is back, repair makes it zone-safe."""
    from storage.shards.ids import shard_id
    from tests.sim.test_sim_repair import Sim

    sim = Sim(tmp_path, seed=12)
    await sim.open(tmp_path)
    try:
        sim.sim.down.update({"n4", "n6"})
        await sim.health.probe_once()
        await sim.put("x", 1000)
        (man,) = await sim.manifests()
        p = man.part
        placed = [n for n in p.nodes if n]
        assert len(set(placed)) == 6, p.nodes
        for i in (0, 1):  # two more failures, within m
            sim.sim.lose(str(p.nodes[i]), shard_id(p.stripe_id, i))
        assert await sim.check_reads() == 1
        await sim.heal()
        await sim.check_redundant()
        assert await sim.check_reads() == 1
    finally:
        await sim.close()
