"""Review20a: the 'storage full' rule (`storage.fullness`) on a streamed write, refused
mid-stream before any spare is tried.

The same scenario as test_full_refusal_cause (9 nodes, 4+2, every disk full, the first
attempt on two shards unreachable), for an object of several segments: the refusal must
say storage full there too (the rule does not depend on the object's size)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from storage.errors import QuorumNotReached
from storage.objects import PutOptions
from tests.inproc import wired_cluster
from tests.unit.test_full_refusal_cause import FullNodes, _body, _cfg

SIZE = 3 << 20  # three 1 MiB segments: the streamed write path


@pytest.mark.parametrize("hint", [True, False], ids=["sized", "unsized"])
def test_a_streamed_refusal_on_full_disks_says_full_though_two_targets_failed(
        tmp_path: Path, hint: bool) -> None:
    async def scenario() -> tuple[QuorumNotReached, list[tuple[str, int, str]]]:
        cfg = _cfg(tmp_path)
        sim = FullNodes(list(cfg.nodes), unreachable={0, 1})
        async with wired_cluster(tmp_path, cfg, sim) as c:  # type: ignore[arg-type]
            b = await c.buckets.create("t", "bk")
            with pytest.raises(QuorumNotReached) as exc:
                await c.objects.put(b, "k", _body(bytes(SIZE)),
                                    PutOptions(size_hint=SIZE if hint else None))
            return exc.value, sim.attempts

    refused, attempts = asyncio.run(scenario())
    assert refused.full, (refused.causes, attempts)
