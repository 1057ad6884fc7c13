"""A streamed shard PUT goes to disk in batches of `STREAM_BATCH_BYTES` (one thread hop per
batch, not per MiB received: on this VM each hop's wake-ups cost more CPU than the MiB's
MAC), every byte in order, and the shard reads back whole."""

from __future__ import annotations

from typing import Any

import pytest

from nodes.handlers import STREAM_BATCH_BYTES
from nodes.shardwrite import ShardWriter
from tests.contract.test_node_api import make_shard
from tests.unit import test_node_get_abort as served

node = served.node  # an in-process node with its lean front, as served


async def _put_counting_batches(node: tuple[str, int],
                                monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], int]:
    """PUT a ~10 MiB shard, read it back whole; (the byte count of each write batch, the
    body's length). The PUT goes to aiohttp's streamed handler (the one these batches are
    its): the lean front's stream budget is made to look spent."""
    from nodes import leanput
    monkeypatch.setattr(leanput, "take_stream", lambda: False)
    host, port = node
    batches: list[int] = []
    real = ShardWriter.write_many

    async def counted(self: ShardWriter, parts: list[Any]) -> None:
        batches.append(sum(len(p) for p in parts))
        await real(self, parts)

    monkeypatch.setattr(ShardWriter, "write_many", counted)
    sid, _, _, body = make_shard(index=0, frames=40, block_size=262144, last=None)
    answer = await served._exchange(host, port, "PUT", f"/v1/shards/{sid}", body)
    assert answer.startswith(b"HTTP/1.1 201 "), answer[:200]
    got = await served._exchange(host, port, "GET", f"/v1/shards/{sid}?first=0&count=40")
    assert got.partition(b"\r\n\r\n")[2] == body
    return batches, len(body)


async def test_a_streamed_put_is_written_in_large_batches(
        node: tuple[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    batches, size = await _put_counting_batches(node, monkeypatch)
    assert batches and all(n >= STREAM_BATCH_BYTES for n in batches)
    assert len(batches) <= size // STREAM_BATCH_BYTES  # the rest goes with the commit


async def test_past_the_node_wide_count_a_stream_batches_one_chunk_at_a_time(
        node: tuple[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """Large batches are lent to BIG_BATCH_STREAMS streams at once (a node's unwritten
    received bytes stay bounded however many PUTs stream in); past that, CHUNK_BYTES."""
    from nodes import handlers
    monkeypatch.setattr(handlers, "BIG_BATCH_STREAMS", 0)  # every large batch lent out
    batches, size = await _put_counting_batches(node, monkeypatch)
    assert batches and max(batches) < STREAM_BATCH_BYTES
    assert len(batches) > size // STREAM_BATCH_BYTES
