"""review15c: unknown-length writes whose shard PUTs share a per-node connection limit (the
chunked path's aiohttp connector: limit_per_host=64, no timeout on waiting for a connection)
at a budget whose admissions fill its ceiling, so about one frame set is left for frames.
A write's frames queued to a sender still waiting for a connection stay counted; the writes
holding those connections wait in `acquire_frames` for that room; no queue is full, so no
stall timer runs: every write waits for ever. Scaled 1/64 (64 KiB segments, receive and
boundary buffers scaled alike), per-node limit 1. Passes on a82e62b (before mem15).
mend15c: the gateway runs at most `CHUNKED_WRITES` unknown-length writes at once, the
per-node connection limit (set here to the scaled one); hangs without that cap."""

from __future__ import annotations

import asyncio
import http.client
import os
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import storage.stripes
import storage.uploadbudget
from storage.config import NodeSpec
from storage.testing.simnodes import SimNodes
from tests.inproc import served_s3, sim_config, wired_cluster

KiB = 1024
SEG = 64 * KiB
PER_NODE = 1  # connections to one node at once


class _Limited(SimNodes):
    def __init__(self, nodes: list[NodeSpec]) -> None:
        super().__init__(nodes)
        self.sem: dict[str, asyncio.Semaphore] = {}

    async def put_shard(self, node: NodeSpec, sid: str, body: Any, segments: int,
                        length: int | None = None, *, replace: bool = False) -> None:
        sem = self.sem.setdefault(node.id, asyncio.Semaphore(PER_NODE))
        async with sem:
            await super().put_shard(node, sid, body, segments, length, replace=replace)


def _chunked_put(url: str, body: bytes) -> int:
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=45)
    try:
        conn.putrequest("PUT", f"{u.path}?{u.query}", skip_accept_encoding=True)
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        for i in range(0, len(body), 32 * KiB):
            c = body[i:i + 32 * KiB]
            conn.send(b"%x\r\n" % len(c) + c + b"\r\n")
        conn.send(b"0\r\n\r\n")
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


async def test_unknown_length_writes_with_a_per_node_connection_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage.stripes, "RECEIVE_BYTES", 48 * KiB)
    monkeypatch.setattr(storage.uploadbudget, "BOUNDARY_BYTES", 16 * KiB)
    monkeypatch.setattr(storage.stripes, "CHUNKED_WRITES", PER_NODE)  # read by StripeStore
    sim = sim_config(tmp_path, 1024)
    cfg = replace(sim, segment_size=SEG, large_segment_size=SEG,
                  gateway=replace(sim.gateway, upload_budget_bytes=1024 * KiB))
    nodes = _Limited(list(cfg.nodes))
    async with wired_cluster(tmp_path, cfg, nodes) as cluster:
        cred = await cluster.tenants.create_key("t")
        await cluster.buckets.create("t", "cycle")
        async with served_s3(cluster, cfg, cred.access_key, cred.secret_key) as s3:
            b = cluster.stripes.uploads
            bodies = [os.urandom(2048 * KiB + i) for i in range(8)]
            urls = [s3.generate_presigned_url("put_object", Params={
                "Bucket": "cycle", "Key": f"o{i}"}) for i in range(8)]
            async with asyncio.timeout(40):  # a82e62b: ~4 s on a loaded box
                got = await asyncio.gather(*(asyncio.to_thread(_chunked_put, u, body)
                                             for u, body in zip(urls, bodies, strict=True)))
            assert got == [200] * 8
            assert b.in_use == 0
