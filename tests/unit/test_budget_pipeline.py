"""The upload budget on the real write pipeline (`storage/stripes.py`, `storage/writehold.py`)
over in-memory nodes, at 1/16 scale (64 KiB and 256 KiB segments, a 16 MiB budget): many
concurrent PUTs, some aborted by their client mid-body and some losing a node mid-write,
keep every acknowledged object exact, never reserve more than the budget, and leave
nothing reserved once they have all ended."""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from storage.cluster import Cluster
from storage.testing.simnodes import SimNodes
from tests.inproc import served_s3, sim_config, wired_cluster

BUCKET = "budget"
MiB = 1024 * 1024
SEG, LARGE = 64 * 1024, 256 * 1024
BUDGET = 16 * MiB  # three or four streaming writes at once (their minimum is ~4.3 MiB)


class _Aborting(io.RawIOBase):
    """A body that fails after `cut` bytes: the client drops the connection mid-body."""

    def __init__(self, data: bytes, cut: int) -> None:
        self._data, self._cut, self._at = data, cut, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._at >= self._cut:
            raise OSError("client gave up")
        n = min(len(b), self._cut - self._at, 64 * 1024)
        b[:n] = self._data[self._at:self._at + n]
        self._at += n
        return n


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Any, SimNodes, Cluster]]:
    sim = sim_config(tmp_path, 1024)
    cfg = replace(sim, segment_size=SEG, large_segment_size=LARGE,
                  gateway=replace(sim.gateway, upload_budget_bytes=BUDGET))
    nodes = SimNodes(list(cfg.nodes))
    async with wired_cluster(tmp_path, cfg, nodes) as cluster:
        cred = await cluster.tenants.create_key("t")
        await cluster.buckets.create("t", BUCKET)
        async with served_s3(cluster, cfg, cred.access_key, cred.secret_key) as s3:
            yield s3, nodes, cluster


async def test_concurrent_puts_with_aborts_and_a_lost_node_keep_the_accounting(
        gateway: tuple[Any, SimNodes, Cluster]) -> None:
    s3, nodes, cluster = gateway
    budget = cluster.stripes.uploads
    rng = random.Random(17)
    jobs = []
    for i in range(24):
        size = rng.choice([0, 5000, SEG + 1, 3 * LARGE, 5 * LARGE + 777, 3 * MiB])
        body = rng.randbytes(size)
        cut = rng.randrange(1, size) if size > SEG and i % 4 == 3 else None
        jobs.append((f"o{i}", body, cut))

    def put(key: str, body: bytes, cut: int | None) -> str | None:
        data: Any = body if cut is None else _Aborting(body, cut)
        try:
            return s3.put_object(Bucket=BUCKET, Key=key, Body=data,
                                 ContentLength=len(body))["ETag"].strip('"')
        except (BotoCoreError, ClientError, OSError):
            assert cut is not None, f"{key} failed"
            return None

    async def lose_a_node() -> None:
        while budget.in_use == 0:  # once uploads are in flight
            await asyncio.sleep(0.01)
        nodes.down.add("n5")

    loser = asyncio.create_task(lose_a_node())
    etags = await asyncio.gather(*(asyncio.to_thread(put, *j) for j in jobs))
    loser.cancel()
    for (key, body, cut), etag in zip(jobs, etags, strict=True):
        if cut is None:
            assert etag == hashlib.md5(body).hexdigest()
            got = await asyncio.to_thread(
                lambda k=key: s3.get_object(Bucket=BUCKET, Key=k)["Body"].read())
            assert got == body
    assert 0 < budget.peak <= budget.limit
    # every write, acknowledged or not, gives all of it back; an aborted client returns
    # before the server has seen the disconnect, so wait for that (no bound on timing)
    async with asyncio.timeout(60):
        while budget.in_use:
            await asyncio.sleep(0.01)
