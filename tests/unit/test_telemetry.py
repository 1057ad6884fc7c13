"""storage/telemetry.py: the timing histograms behind the gateway's stage and metadata metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.metrics import Metrics
from storage.metadata import Item, Txn
from storage.metadata.sqlite import SqliteStore
from storage.telemetry import METADATA, TimedStore, Timings


def test_timings_are_cumulative_histograms_per_label() -> None:
    t = Timings(buckets=(0.01, 0.1))
    for s in (0.005, 0.05, 0.05, 5.0):
        t.observe("hash", s)
    cum, total = t.snapshot()["hash"]
    assert cum == [1, 3, 4]  # <= 0.01, <= 0.1, +Inf
    assert total == pytest.approx(5.105)


@pytest.mark.asyncio
async def test_timed_store_times_every_call_and_passes_the_rest_through(tmp_path: Path) -> None:
    before = METADATA.snapshot()
    store = TimedStore(await SqliteStore.open(tmp_path / "m.db"))
    try:
        await store.put(b"a", b"1")
        assert (await store.get(b"a")).value == b"1"  # type: ignore[union-attr]
        assert await store.txn(Txn(compares={b"b": 0}, puts={b"b": b"2"}))
        assert len(await store.range(b"a", b"c")) == 2
        assert await store.delete(b"a")
        await store.scrub()  # not part of the interface: passed through untimed
    finally:
        await store.close()
    after = METADATA.snapshot()
    for op in ("get", "put", "txn", "range", "delete"):
        assert after[op][0][-1] == before.get(op, ([0], 0.0))[0][-1] + 1, op


@pytest.mark.asyncio
async def test_timed_store_times_the_read_ahead() -> None:
    """etcd's `get_and_range` and `get_many` (the one metadata read of a GET, HEAD or
    DeleteObject on etcd) are timed like `get`, not passed through untimed."""

    class Inner:  # stands for EtcdStore's read (no etcd in a unit test)
        async def get_and_range(self, keys: tuple[bytes, ...], start: bytes, end: bytes,
                                limit: int) -> tuple[list[Item | None], list[Item]]:
            return [None] * len(keys), []

        async def get_many(self, keys: tuple[bytes, ...]) -> list[Item | None]:
            return [None] * len(keys)

    before = METADATA.snapshot()
    store = TimedStore(Inner())  # type: ignore[arg-type]
    assert await store.get_and_range((b"a", b"b"), b"c", b"d", 4) == ([None, None], [])
    assert await store.get_many((b"a", b"b")) == [None, None]
    after = METADATA.snapshot()
    for op in ("get_and_range", "get_many"):
        assert after[op][0][-1] == before.get(op, ([0], 0.0))[0][-1] + 1, op


def test_gateway_exports_stage_and_metadata_histograms() -> None:
    Timings.observe(METADATA, "get", 0.001)
    text = Metrics().render().decode()
    assert 'tessera_metadata_op_seconds_bucket{le="+Inf",op="get"}' in text
    assert "# TYPE tessera_pipeline_stage_seconds histogram" in text
    assert "tessera_lifecycle_passes_total" in text


@pytest.mark.asyncio
async def test_tenant_usage_sweeps_in_pages_up_to_its_limit(tmp_path: Path) -> None:
    from gateway.metrics_cluster import tenant_usage
    from storage.keyspace import object_key
    from storage.records import ObjectVersion

    store = await SqliteStore.open(tmp_path / "m.db")
    try:
        for i in range(7):
            v = ObjectVersion(bucket="b", key=f"k{i}", version_id="null",
                              tenant="t1" if i < 5 else "t2", size=10 * i, etag="e",
                              last_modified=0.0, delete_marker=i == 6)
            await store.put(object_key("b", f"k{i}"), v.encode())
        usage, truncated = await tenant_usage(store, limit=100, page=2)
        assert usage == {"t1": {"objects": 5, "bytes": 100}, "t2": {"objects": 1, "bytes": 50}}
        assert not truncated
        assert (await tenant_usage(store, limit=7, page=2))[1] is False
        usage, truncated = await tenant_usage(store, limit=4, page=3)
        assert truncated and usage == {"t1": {"objects": 4, "bytes": 60}}
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_a_lifecycle_pass_exports_when_it_began() -> None:
    """Review19h low 3: tests moving a faked clock wait for a pass that BEGAN after the
    move; the gauge carries the start of the last finished pass, not its end."""
    import time
    from types import SimpleNamespace

    from storage.lifecycle import LifecycleReport
    from storage.telemetry import LIFECYCLE_PASS_STARTED
    from storage.workers.lifecycle import LifecycleWorker

    seen: list[float] = []

    async def run_once() -> LifecycleReport:
        seen.append(time.time())
        assert LIFECYCLE_PASS_STARTED.get() < seen[0]  # not set until the pass finished
        return LifecycleReport()

    async def day_seconds() -> float:
        return 86400.0

    engine = SimpleNamespace(run_once=run_once, day_s=86400.0,
                             clock=SimpleNamespace(day_seconds=day_seconds))
    await LifecycleWorker(engine, 3600.0).step()  # type: ignore[arg-type]
    assert seen and LIFECYCLE_PASS_STARTED.get() <= seen[0]
    assert LIFECYCLE_PASS_STARTED.get() > seen[0] - 60
    text = Metrics().render().decode()
    line = [x for x in text.splitlines()
            if x.startswith("tessera_lifecycle_last_pass_started_seconds ")]
    assert line and float(line[0].split()[1]) == LIFECYCLE_PASS_STARTED.get()
