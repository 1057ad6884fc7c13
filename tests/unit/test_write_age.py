"""A write does not commit once its first shard is older than the orphan grace less its
margin (storage/write_age.py): the sweep may already have deleted those shards, and a
manifest naming them would be an acknowledged object that cannot be read. Time is moved
by a fake boot clock (`leaseclock.now`, which the age is counted on), never slept."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.s3.errors_map import to_s3_error
from storage import leaseclock
from storage.cluster import Cluster
from storage.config import config_from_mapping
from storage.errors import ObjectNotFound, WriteExpired
from storage.keyspace import STRIPE as STRIPE_SPACE
from storage.keyspace import space
from storage.objects import PutOptions
from storage.testing.simnodes import SimNodes
from tests.inproc import wired_cluster

GRACE_S = 1000.0  # margin max(10%, 60 s) = 100 s: a write may commit up to 900 s in
BODY = bytes(range(256)) * 400  # 100 KiB: shards, not inline


class FakeClock:
    """The real boot clock plus `now` seconds moved by the test (a suspend, a slow write):
    CLOCK_MONOTONIC, and so the event loop's clock, does not see them."""

    def __init__(self) -> None:
        self.real, self.now = leaseclock.now, 0.0

    def __call__(self) -> float:
        return self.real() + self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    c = FakeClock()
    monkeypatch.setattr(leaseclock, "now", c)
    return c


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    nodes = [{"id": f"n{z * 3 + i + 1}", "zone": f"az{z + 1}",
              "address": f"127.0.{z + 1}.{i + 1}:1"} for z in range(3) for i in range(3)]
    cfg = config_from_mapping({
        "data_dir": str(tmp_path), "nodes": nodes,
        "profiles": {"standard": {"k": 4, "m": 2},
                     "archive": {"k": 4, "m": 2, "compress": True}},
        "storage_classes": {"GLACIER": "archive"},
        "repair": {"orphan_grace_s": GRACE_S}}, tmp_path)
    async with wired_cluster(tmp_path, cfg, SimNodes(list(cfg.nodes))) as c:  # type: ignore[arg-type]
        yield c


def slow_writes(c: Cluster, clock: FakeClock, took_s: float,
                monkeypatch: pytest.MonkeyPatch) -> None:
    """Every part write takes `took_s` seconds of the fake clock."""
    write_part = c.objects.write_part

    async def slow(*args: Any, **kwargs: Any) -> Any:
        lay = await write_part(*args, **kwargs)
        clock.now += took_s
        return lay
    monkeypatch.setattr(c.objects, "write_part", slow)


async def body() -> AsyncIterator[bytes]:
    yield BODY


async def stripe_entries(c: Cluster) -> int:
    return len(await c.meta.range(*space(STRIPE_SPACE)))


async def test_put_older_than_the_grace_is_refused_with_nothing_committed(
        cluster: Cluster, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    b = await cluster.buckets.create("t", "bk")
    slow_writes(cluster, clock, 901.0, monkeypatch)
    with pytest.raises(WriteExpired) as exc:
        await cluster.objects.put(b, "k", body(), PutOptions(size_hint=len(BODY)))
    with pytest.raises(ObjectNotFound):
        await cluster.objects.head(b, "k")
    assert await stripe_entries(cluster) == 0  # nothing indexed: its shards are orphans
    err = to_s3_error(exc.value, "bk", "k")
    assert (err.code, err.status) == ("RequestTimeout", 400)


async def test_a_gateway_suspended_mid_write_past_the_grace_commits_nothing(
        cluster: Cluster, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """review21d F7: the age was counted on CLOCK_MONOTONIC, which stops while the host is
    suspended, while the orphan sweep elsewhere counts real time. A gateway suspended
    mid-write past the grace resumed with the write as young as before and committed
    shards the sweep may have deleted. The suspend is injected: only the boot clock moves."""
    b = await cluster.buckets.create("t", "bk")
    slow_writes(cluster, clock, GRACE_S, monkeypatch)  # suspended that long after a part
    with pytest.raises(WriteExpired):
        await cluster.objects.put(b, "k", body(), PutOptions(size_hint=len(BODY)))
    with pytest.raises(ObjectNotFound):
        await cluster.objects.head(b, "k")
    assert await stripe_entries(cluster) == 0


async def test_put_within_the_grace_commits(cluster: Cluster, clock: FakeClock,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    b = await cluster.buckets.create("t", "bk")
    slow_writes(cluster, clock, 899.0, monkeypatch)
    await cluster.objects.put(b, "k", body(), PutOptions(size_hint=len(BODY)))
    v = await cluster.objects.head(b, "k")
    assert b"".join([bytes(x) async for x in cluster.objects.read(v)]) == BODY


@pytest.mark.parametrize(("took_s", "swapped"), [(901.0, False), (899.0, True)])
async def test_transition_swaps_only_within_the_grace(
        cluster: Cluster, clock: FakeClock, monkeypatch: pytest.MonkeyPatch,
        took_s: float, swapped: bool) -> None:
    b = await cluster.buckets.create("t", "bk")
    await cluster.objects.put(b, "k", body(), PutOptions(size_hint=len(BODY)))
    v = await cluster.objects.head(b, "k")
    slow_writes(cluster, clock, took_s, monkeypatch)
    assert await cluster.archive.transition(v, "GLACIER") is swapped
    cur = await cluster.objects.head(b, "k")
    assert cur.storage_class == ("GLACIER" if swapped else "STANDARD")
    assert b"".join([bytes(x) async for x in cluster.objects.read(cur)]) == BODY
