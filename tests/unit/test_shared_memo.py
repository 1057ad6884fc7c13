"""Values derived from GET/HEAD's shared decoded version (storage/shared_memo.py): computed
once per shared instance, never for one a caller may edit, never outliving a shred, and
every caller gets its own headers to change."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.s3.handlers import objects as handlers
from storage import datakeys
from storage.cluster import Cluster
from storage.errors import KeyUnavailable
from storage.objects import PutOptions
from storage.shared_memo import derived, share
from storage.testing.simnodes import SimNodes
from tests.inproc import sim_config, wired_cluster


class _Plain:
    """Any object with a `__dict__`, as the record dataclasses are."""


def test_derived_is_kept_only_for_shared_instances() -> None:
    calls: list[int] = []

    def make() -> int:
        calls.append(1)
        return len(calls)

    private, shared = _Plain(), _Plain()
    assert derived(private, "x", make) == 1
    assert derived(private, "x", make) == 2  # not shared: computed every time
    share(shared)
    assert derived(shared, "x", make) == 3
    assert derived(shared, "x", make) == 3  # shared: once per name
    assert derived(shared, "y", make) == 4


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    cfg = sim_config(tmp_path, 4096)
    async with wired_cluster(tmp_path, cfg, SimNodes(list(cfg.nodes))) as c:  # type: ignore[arg-type]
        yield c


async def _put(c: Cluster, body: bytes) -> Any:
    b = await c.buckets.create("t", "bk")

    async def chunks() -> AsyncIterator[bytes]:
        yield body
    await c.objects.put(b, "k", chunks(), PutOptions(size_hint=len(body)))
    return b


async def _read(c: Cluster, v: Any) -> bytes:
    return b"".join([bytes(x) async for x in c.objects.read(v)])


@pytest.mark.asyncio
async def test_shared_version_opens_its_data_key_once(cluster: Cluster,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    unwraps: list[bytes] = []
    real = datakeys.keys.unwrap_dek

    def counted(kek: bytes, tenant: str, identity: str, blob: bytes) -> bytes:
        unwraps.append(blob)
        return real(kek, tenant, identity, blob)

    monkeypatch.setattr(datakeys.keys, "unwrap_dek", counted)
    b = await _put(cluster, b"body")
    shared = await cluster.objects.head(b, "k", shared=True)
    assert await _read(cluster, shared) == b"body"
    assert await _read(cluster, shared) == b"body"
    assert len(unwraps) == 1  # the shared version's cipher is kept with it
    private = await cluster.objects.head(b, "k")
    assert await _read(cluster, private) == b"body"
    assert await _read(cluster, private) == b"body"
    assert len(unwraps) == 3  # a version a caller may edit is opened every time
    await cluster.tenants.shred("t")
    with pytest.raises(KeyUnavailable):  # the KEK is still looked up on every read
        await _read(cluster, shared)


@pytest.mark.asyncio
async def test_shared_version_headers_built_once_each_caller_its_own(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[bool] = []
    real = handlers._object_headers

    def counted(v: Any, versioned: bool) -> dict[str, str]:
        builds.append(versioned)
        return real(v, versioned)

    monkeypatch.setattr(handlers, "_object_headers", counted)
    b = await _put(cluster, b"body")
    v = await cluster.objects.head(b, "k", shared=True)
    first = handlers.object_headers(v, False)
    first["Content-Range"] = "bytes 0-1/4"  # a caller adds to its own dict
    second = handlers.object_headers(v, False)
    assert second == real(v, False) and "Content-Range" not in second
    assert builds == [False]  # built once for the shared version
    assert handlers.object_headers(v, True)["x-amz-version-id"] == v.version_id
    assert builds == [False, True]  # the bucket's versioning is part of the key
    private = await cluster.objects.head(b, "k")
    handlers.object_headers(private, False)
    handlers.object_headers(private, False)
    assert builds == [False, True, False, False]


@pytest.mark.asyncio
async def test_archived_shared_version_headers_follow_the_clock(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[bool] = []
    real = handlers._object_headers
    monkeypatch.setattr(handlers, "_object_headers",
                        lambda v, versioned: builds.append(versioned) or real(v, versioned))
    b = await _put(cluster, b"body")
    v = await cluster.objects.head(b, "k", shared=True)
    object.__setattr__(v, "storage_class", "GLACIER")  # x-amz-restore depends on the time
    handlers.object_headers(v, False)
    handlers.object_headers(v, False)
    assert builds == [False, False]
