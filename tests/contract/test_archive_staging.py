"""A many-part archive copy staged ahead of its swap (`storage/archive_staging.py`), on SQLite
and etcd: review19j's findings 2-4 and what mend19h left open.

- a transition killed after its first staging step: the staged entries resolve "staging"
  (repair defers a degraded stripe's queue entry instead of dropping it; fsck warns instead
  of `dangling-index`), the reclaim worker leaves them while the staging may be live (seen
  for less than the orphan grace on its own clock) and then removes them, their repair
  entries, and queues the copy (review19j F2: they stayed for ever);
- a swap that applied, raised, and whose version was removed before the cleanup: the copy's
  stripes keep the GC grace the removal gave them (F3: the cleanup queued them due at once);
- a second cancellation while the cleanup runs does not stop it half way (F4).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from storage.cluster import Cluster
from storage.fsck import FsckReport, _Records, _Stripes
from storage.keyspace import (
    GC,
    STAGING,
    discarded_key,
    space,
    stripe_index_key,
    unpack,
    urgent_repair_key,
)
from storage.metadata import Txn
from storage.metadata import fence as fence_module
from storage.records import pack
from storage.workers.manifests import load_manifest
from storage.workers.reclaim import TenantReclaimer
from tests.contract.test_many_part_retire import _version, served  # noqa: F401
from tests.contract.test_retire_review19h import _archive_profile, _put

GRACE_S = 3600.0


def _body(parts: int) -> bytes:
    return b"".join(bytes([n % 251]) * 100 for n in range(parts)) if parts else b"x" * 5000


async def _whole(s3: Any, bucket: str, key: str) -> bytes:
    return await asyncio.to_thread(lambda: s3.get_object(Bucket=bucket, Key=key)["Body"].read())


async def _killed_mid_staging(s3: Any, cluster: Cluster, bucket: str, key: str,
                              monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """A 100-part transition whose process dies after its first staging step (no cleanup
    runs); returns the copy's parts."""
    meta, archive = cluster.meta, cluster.archive
    await _put(s3, bucket, key, 100)
    v = await _version(meta, bucket, key)
    _archive_profile(cluster)
    real_txn = meta.txn
    steps: list[Txn] = []

    async def dies(t: Txn, *a: Any, **kw: Any) -> Any:
        if steps:
            raise SystemExit("killed mid-staging")
        if any(unpack(k)[0] == "X" for k in t.puts):
            steps.append(t)
        return await real_txn(t, *a, **kw)

    async def no_cleanup(*_: Any, **__: Any) -> None:
        return None  # a killed process runs none

    written: list[Any] = []
    rewrite = archive._rewrite_parts  # noqa: SLF001

    async def noted(*a: Any, **kw: Any) -> Any:
        parts = await rewrite(*a, **kw)
        written.extend(parts)
        monkeypatch.setattr(meta, "txn", dies)
        return parts

    monkeypatch.setattr(archive, "_rewrite_parts", noted)
    monkeypatch.setattr(archive, "_unstage", no_cleanup)
    with pytest.raises(SystemExit):
        await archive.transition(v, "GLACIER")
    monkeypatch.setattr(meta, "txn", real_txn)
    monkeypatch.setattr(archive, "_rewrite_parts", rewrite)
    assert await _version(meta, bucket, key) == v
    assert len(written) == 100
    return written


async def test_a_staging_killed_mid_way_is_removed_by_the_reclaim_worker_after_the_grace(
        served: tuple[Any, Cluster, str],  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    s3, cluster, bucket = served
    meta = cluster.meta
    written = await _killed_mid_staging(s3, cluster, bucket, "k", monkeypatch)
    stripes = [p.stripe_id for p in written]
    staged = [s for s in stripes if await meta.get(stripe_index_key(s)) is not None]
    assert len(staged) == 40
    urgent = urgent_repair_key(staged[0])  # as a degraded stripe's staging step writes
    await meta.put(urgent, pack({"bucket": bucket, "key": "k", "reason": "write"}))
    now = [1000.0]
    worker = TenantReclaimer(meta, 60.0, clock=lambda: now[0], orphan_grace_s=GRACE_S)
    for at in (0.0, GRACE_S - 1):  # may still be live: a slow writer, not a dead one
        now[0] = 1000.0 + at
        while await worker._finish_marker():  # noqa: SLF001 - (other tests' markers too)
            pass
        assert [s for s in staged if await meta.get(stripe_index_key(s))] == staged, at
    now[0] = 1000.0 + GRACE_S
    while await worker._finish_marker():  # noqa: SLF001
        pass
    for s in stripes:
        assert await meta.get(stripe_index_key(s)) is None, "a staged entry left for ever"
        assert await meta.get(discarded_key(s)) is not None, "the copy not discarded"
    assert await meta.get(urgent) is None, "a repair entry of an undone staging left"
    queued = {unpack(i.key)[2] for i in await meta.range(*space(GC), limit=1_000_000)}
    assert {s.hex() for s in stripes} <= queued
    assert await meta.range(*space(STAGING), limit=10) == []
    assert await _whole(s3, bucket, "k") == _body(100)


async def test_staged_entries_are_staging_for_repair_and_fsck(
        served: tuple[Any, Cluster, str],  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Mend19h's open lows: a degraded stripe's repair entry written while staging was
    dropped by repair ("gone"), so the stripe stayed degraded once swapped in; fsck during
    a large copy's staging reported its entries as `dangling-index` errors."""
    s3, cluster, bucket = served
    meta = cluster.meta
    written = await _killed_mid_staging(s3, cluster, bucket, "s", monkeypatch)
    staged = [p.stripe_id for p in written
              if await meta.get(stripe_index_key(p.stripe_id)) is not None]
    for s in staged:
        assert await load_manifest(meta, s) == "staging"
    urgent = urgent_repair_key(staged[0])
    await meta.put(urgent, pack({"bucket": bucket, "key": "s", "reason": "write"}))
    repair = cluster.workers()[1]
    item = await meta.get(urgent)
    assert item is not None
    await repair._assess_items([item])  # noqa: SLF001
    assert await meta.get(urgent) is not None, "the repair entry of a staged stripe dropped"
    report = FsckReport()  # fsck's check of these stripes' X entries (not the whole store's:
    # the contract session's etcd holds every earlier test's many-part objects)
    check = _Stripes(meta, cluster.nodes, cluster.cfg.nodes, _Records(meta, report), report)
    for s in staged:
        await check.check(s, await meta.get(stripe_index_key(s)), set())
    assert "dangling-index" not in report.findings
    assert len(report.findings.get("archive-staging", [])) == len(staged)


@pytest.mark.parametrize("parts", [0, 50])  # indexed in the swap / staged ahead of it
async def test_a_swapped_copy_whose_version_was_removed_keeps_the_gc_grace(
        served: tuple[Any, Cluster, str],  # noqa: F811
        monkeypatch: pytest.MonkeyPatch, parts: int) -> None:
    """Review19j F3: the swap applied but raised (a timeout after sending), and the version
    was deleted before the cleanup read it: the cleanup took the copy for unapplied and
    queued its stripes due at once, ahead of the GC grace the delete gave reads in flight."""
    s3, cluster, bucket = served
    meta, archive = cluster.meta, cluster.archive
    await _put(s3, bucket, "g", parts)
    v = await _version(meta, bucket, "g")
    _archive_profile(cluster)
    real = archive.mutate
    copy: list[bytes] = []
    deleted_ns: list[int] = []

    async def applied_removed_raised(*a: Any, **kw: Any) -> Any:
        res = await real(*a, **kw)
        assert res is not None
        copy.extend(p.stripe_id for p in res[0].parts)
        deleted_ns.append(time.time_ns())
        await asyncio.to_thread(s3.delete_object, Bucket=bucket, Key="g")
        raise TimeoutError("etcd: context deadline exceeded (the txn applied)")

    monkeypatch.setattr(archive, "mutate", applied_removed_raised)
    with pytest.raises(TimeoutError):
        await archive.transition(v, "GLACIER")
    earliest = deleted_ns[0] + int(cluster.objects.gc_grace_s * 1e9)
    due = {}
    for i in await meta.range(*space(GC), limit=1_000_000):
        _, at, stripe = unpack(i.key)
        if bytes.fromhex(stripe) in copy:
            due[stripe] = min(due.get(stripe, int(at)), int(at))
    assert len(due) == len(copy)
    early = [s for s, at in due.items() if at < earliest]
    assert early == [], f"{len(early)} of {len(copy)} stripes due before the GC grace"


@pytest.mark.parametrize("parts", [0, 50])
async def test_a_second_cancel_does_not_stop_the_cleanup(
        served: tuple[Any, Cluster, str],  # noqa: F811
        monkeypatch: pytest.MonkeyPatch, parts: int) -> None:
    """Review19j F4: the cleanup ran as a task its caller awaited, so a second cancellation
    (a shutdown, nested timeouts) during it cancelled it half way."""
    s3, cluster, bucket = served
    meta, archive = cluster.meta, cluster.archive
    await _put(s3, bucket, "c", parts)
    v = await _version(meta, bucket, "c")
    _archive_profile(cluster)
    swapping, cleaning, release = asyncio.Event(), asyncio.Event(), asyncio.Event()
    written: list[Any] = []
    rewrite, real_txn = archive._rewrite_parts, meta.txn  # noqa: SLF001

    async def noted(*a: Any, **kw: Any) -> Any:
        written.extend(await rewrite(*a, **kw))
        return written

    async def stuck(*_: Any, **__: Any) -> Any:
        swapping.set()
        await asyncio.Event().wait()  # a swap that never answers

    async def held(t: Txn, *a: Any, **kw: Any) -> Any:
        if swapping.is_set() and not release.is_set():
            cleaning.set()
            await release.wait()
        return await real_txn(t, *a, **kw)

    monkeypatch.setattr(archive, "_rewrite_parts", noted)
    monkeypatch.setattr(archive, "mutate", stuck)
    monkeypatch.setattr(meta, "txn", held)
    task = asyncio.create_task(archive.transition(v, "GLACIER"))
    await swapping.wait()
    task.cancel()  # the first: the swap's wait ends, the cleanup starts
    await cleaning.wait()
    task.cancel()  # the second, while the cleanup's first transaction is held
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.gather(*getattr(fence_module, "_CLEANUPS", set()))
    assert written
    for p in written:
        assert await meta.get(stripe_index_key(p.stripe_id)) is None, p.number
        assert await meta.get(discarded_key(p.stripe_id)) is not None, (
            f"part {p.number}: the cleanup stopped half way")
    assert await _whole(s3, bucket, "c") == _body(parts)
