"""`rebuild_shards` with `whole_bytes` against a real `python -m nodes` process: stripes of
small shards rebuilt at once read their sources and write their rebuilt shards whole through
the node's batch endpoint, several stripes' ops in one request (the repair lane), never a
streaming GET or PUT; the rebuilt files are byte-identical to the writer's, a missing source
is replaced by the next one, and a lying spare still stops the rebuild (`SourcesDisagree`)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from storage.config import NodeSpec
from storage.rebuild import SourcesDisagree, rebuild_shards
from storage.shards.client import NodeClient
from storage.shards.ids import shard_id
from tests.contract.node_harness import (  # noqa: F401 - fixtures
    Api,
    Node,
    api,
    http,
    node,
    put_shard,
    shard_path,
)
from tests.contract.test_rebuild_pooled import SEGMENT, stored_with_a_liar, stripe
from tests.contract.test_shard_fetch import client  # noqa: F401 - fixture

WHOLE = 1024 * 1024


class Counted:
    """Counts the batch requests a client sends and the ops in them, and any streaming call."""

    def __init__(self, c: NodeClient) -> None:
        self.requests: list[list[str]] = []
        self.streams = 0
        send, put, frames = c._send_batch, c.put_shard, c.read_frames_into

        async def send_batch(to: NodeSpec, ops: list[dict[str, Any]],
                             **kw: Any) -> list[dict[str, Any]]:
            self.requests.append([op["op"] for op in ops])
            return await send(to, ops, **kw)

        def streamed(f: Any) -> Any:
            def call(*a: Any, **kw: Any) -> Any:
                self.streams += 1
                return f(*a, **kw)
            return call

        c._send_batch = send_batch  # type: ignore[method-assign]
        c.put_shard = streamed(put)  # type: ignore[method-assign]
        c.read_frames_into = streamed(frames)  # type: ignore[method-assign]


async def test_small_stripes_are_rebuilt_whole_in_shared_batches(
        api: Api, node: Node, client: NodeClient) -> None:  # noqa: F811
    n = NodeSpec(id="n1", zone="az1", address=f"{node.host}:{node.port}")
    stripes = [stripe(3 * SEGMENT + 99) for _ in range(6)]
    for part, files in stripes:
        for i in range(1, 6):  # shard 0 is lost: 1-5 are the sources, 0 is rebuilt
            await put_shard(api, files[i], shard_id(part.stripe_id, i))
    counted = Counted(client)
    with ThreadPoolExecutor(2) as cpu:
        results = await asyncio.gather(*(
            rebuild_shards(client, cpu, part, [(i, n) for i in range(1, 6)], {0: n},
                           whole_bytes=WHOLE) for part, _ in stripes))
    for (part, files), res in zip(stripes, results, strict=True):
        assert res.written == {0: "n1"} and not res.failed and not res.bad_sources
        assert shard_path(node, shard_id(part.stripe_id, 0)).read_bytes() == files[0]
    ops = [op for r in counted.requests for op in r]
    assert ops.count("get") == 6 * 5 and ops.count("put") == 6  # k+1 sources, 1 rebuilt
    assert counted.streams == 0
    assert len(counted.requests) < len(ops) / 2  # ops of several stripes share requests


async def test_a_missing_source_is_replaced_and_a_lying_spare_refused(
        api: Api, node: Node, client: NodeClient) -> None:  # noqa: F811
    n = NodeSpec(id="n1", zone="az1", address=f"{node.host}:{node.port}")
    part, files = stripe(2 * SEGMENT)
    for i in (0, 2, 3, 4, 5):  # shard 1 is missing on its node: 5 takes its place
        await put_shard(api, files[i], shard_id(part.stripe_id, i))
    with ThreadPoolExecutor(2) as cpu:
        res = await rebuild_shards(client, cpu, part, [(i, n) for i in range(1, 6)], {1: n},
                                   whole_bytes=WHOLE)
    assert res.written == {1: "n1"} and list(res.bad_sources) == [1]
    assert shard_path(node, shard_id(part.stripe_id, 1)).read_bytes() == files[1]

    part = await stored_with_a_liar(api, 2)
    with ThreadPoolExecutor(2) as cpu, pytest.raises(SourcesDisagree):
        await rebuild_shards(client, cpu, part, [(i, n) for i in range(5)], {5: n},
                             whole_bytes=WHOLE)
    assert not shard_path(node, shard_id(part.stripe_id, 5)).exists()
