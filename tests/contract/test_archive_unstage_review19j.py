"""Review19j probes of mend19h's archive cleanup (`ArchiveService._swap_in` / `_unstage`).

- a transition or restore completion whose swap APPLIED but raised (a timeout after
  sending): the cleanup must leave the version's new stripes indexed and untombstoned, and
  the object reads whole;
- a swap that raised without applying, delivered late (after the cleanup): it must fail, and
  the object still reads whole from its old parts.
Both for a copy indexed in the swap (1 part) and one staged ahead of it (50 parts).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from storage.cluster import Cluster
from storage.keyspace import discarded_key, stripe_index_key, unpack
from storage.metadata import Txn
from storage.workers.manifests import Manifest, load_manifest
from tests.contract.test_many_part_retire import _version, served  # noqa: F401
from tests.contract.test_retire_review19h import (
    _archive_profile,
    _put,
    _restore_job,
)


def _body(parts: int) -> bytes:
    return b"".join(bytes([n % 251]) * 100 for n in range(parts)) if parts else b"x" * 5000


async def _assert_whole(s3: Any, bucket: str, key: str, parts: int) -> None:
    got = await asyncio.to_thread(lambda: s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert got == _body(parts)


async def _assert_kept(cluster: Cluster, stripes: list[bytes]) -> None:
    for s in stripes:
        assert await cluster.meta.get(discarded_key(s)) is None, "an applied copy tombstoned"
        assert isinstance(await load_manifest(cluster.meta, s), Manifest)


def _applied_then_raised(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    real = cluster.archive.mutate

    async def mutate(*a: Any, **kw: Any) -> Any:
        res = await real(*a, **kw)
        if res is not None:
            raise TimeoutError("etcd: context deadline exceeded (the txn applied)")
        return res

    monkeypatch.setattr(cluster.archive, "mutate", mutate)


@pytest.mark.parametrize("parts", [0, 50])
async def test_an_applied_transition_that_raised_keeps_its_copy(
        served: tuple[Any, Cluster, str],  # noqa: F811
        monkeypatch: pytest.MonkeyPatch, parts: int) -> None:
    s3, cluster, bucket = served
    await _put(s3, bucket, "a", parts)
    v = await _version(cluster.meta, bucket, "a")
    _archive_profile(cluster)
    _applied_then_raised(cluster, monkeypatch)
    with pytest.raises(TimeoutError):
        await cluster.archive.transition(v, "GLACIER")
    now = await _version(cluster.meta, bucket, "a")
    assert now.storage_class == "GLACIER"
    await _assert_kept(cluster, [p.stripe_id for p in now.parts])
    size = len(_body(parts))
    assert b"".join([c async for c in cluster.objects.read(now, 0, size)]) == _body(parts)


@pytest.mark.parametrize("parts", [0, 50])
async def test_an_applied_restore_completion_that_raised_keeps_its_copy(
        served: tuple[Any, Cluster, str],  # noqa: F811
        monkeypatch: pytest.MonkeyPatch, parts: int) -> None:
    s3, cluster, bucket = served
    await _put(s3, bucket, "r", parts)
    _archive_profile(cluster)
    assert await cluster.archive.transition(await _version(cluster.meta, bucket, "r"),
                                            "GLACIER")
    job = await _restore_job(s3, cluster, bucket, "r")
    _applied_then_raised(cluster, monkeypatch)
    with pytest.raises(TimeoutError):
        await cluster.archive._complete(job)  # noqa: SLF001
    now = await _version(cluster.meta, bucket, "r")
    assert now.restore["state"] == "done"
    await _assert_kept(cluster, [bytes(p["stripe_id"]) for p in now.restore["parts"]])
    await _assert_kept(cluster, [p.stripe_id for p in now.parts])
    await _assert_whole(s3, bucket, "r", parts)


@pytest.mark.parametrize("parts", [0, 50])
async def test_a_transition_swap_delivered_after_its_cleanup_fails(
        served: tuple[Any, Cluster, str],  # noqa: F811
        monkeypatch: pytest.MonkeyPatch, parts: int) -> None:
    s3, cluster, bucket = served
    meta = cluster.meta
    await _put(s3, bucket, "l", parts)
    v = await _version(meta, bucket, "l")
    _archive_profile(cluster)
    real_mutate, real_txn = cluster.archive.mutate, meta.txn
    held: list[Txn] = []

    async def hold(t: Txn, *a: Any, **kw: Any) -> Any:
        held.append(t)  # sent, not yet applied (a proposal a member forwards late)
        raise TimeoutError("etcd: context deadline exceeded")

    async def mutate(*a: Any, **kw: Any) -> Any:
        monkeypatch.setattr(meta, "txn", hold)
        try:
            return await real_mutate(*a, **kw)
        finally:
            monkeypatch.setattr(meta, "txn", real_txn)

    monkeypatch.setattr(cluster.archive, "mutate", mutate)
    with pytest.raises(TimeoutError):
        await cluster.archive.transition(v, "GLACIER")
    assert len(held) == 1
    assert await real_txn(held[0]) is False, "the late swap applied over a discarded copy"
    now = await _version(meta, bucket, "l")
    assert [p.stripe_id for p in now.parts] == [p.stripe_id for p in v.parts]
    for p in now.parts:
        assert await meta.get(stripe_index_key(p.stripe_id)) is not None
    await _assert_whole(s3, bucket, "l", parts)


async def test_a_transition_killed_mid_staging_leaves_the_object_readable(
        served: tuple[Any, Cluster, str],  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The process dies after the first staged step (no cleanup runs): the version still
    names its old parts, and the staged entries resolve "gone" (the orphan sweep's)."""
    s3, cluster, bucket = served
    meta, archive = cluster.meta, cluster.archive
    await _put(s3, bucket, "k", 100)
    v = await _version(meta, bucket, "k")
    _archive_profile(cluster)
    real_txn = meta.txn
    steps: list[Txn] = []

    async def dies(t: Txn, *a: Any, **kw: Any) -> Any:
        if steps:  # after the first staging step (index entries put)
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
    assert await _version(meta, bucket, "k") == v
    await _assert_whole(s3, bucket, "k", 100)
    staged = [p for p in written if await meta.get(stripe_index_key(p.stripe_id))]
    assert len(staged) == 40
    for p in staged:  # (life20: "staging" while the staging's marker is there, not "gone")
        assert await load_manifest(meta, p.stripe_id) in ("gone", "staging")
