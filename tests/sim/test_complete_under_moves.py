"""CompleteMultipartUpload while repair or the rebalancer keeps moving its parts' shards:
each move rewrites the upload record, so each read of the parts is stale by its commit.
The completion must give up after a bounded number of reads with 503 SlowDown (an
`Overloaded`, which SDKs retry after a backoff), leave the upload open and lose nothing,
rather than loop for as long as the moves go on."""

from __future__ import annotations

import pytest

from storage.errors import Overloaded
from storage.workers.gcfence import read_fence
from storage.workers.manifests import Commit, commit_shard_moves
from tests.sim.test_sim_repair import (  # noqa: F401 - the fixture
    open_upload_with_a_part,
    sim_factory,
)

MOVES = 50  # moves the "rebalancer" makes, one after each read of the parts


async def test_completion_under_endless_part_moves_gives_up_then_succeeds(
        sim_factory, monkeypatch) -> None:  # noqa: F811
    from storage.multipart import MultipartService
    from storage.multipart_records import ListedPart

    s = await sim_factory(41)
    mp = s.cluster.multipart
    up, part, body = await open_upload_with_a_part(s)
    real = MultipartService._assemble
    reads: list[int] = []

    async def assemble_then_move(self, *a, **k):
        out = await real(self, *a, **k)
        reads.append(1)
        if len(reads) <= MOVES:  # a move of the part's shard commits before the completion
            fence = await read_fence(s.meta, part.stripe_id)
            done, _ = await commit_shard_moves(s.meta, part.stripe_id, list(part.nodes),
                                               {0: str(part.nodes[0])}, fence)
            assert done is Commit.DONE
        return out

    monkeypatch.setattr(MultipartService, "_assemble", assemble_then_move)
    listed = [ListedPart(1, part.etag)]
    with pytest.raises(Overloaded):
        await mp.complete(s.bucket, "mp", up.upload_id, listed)
    assert len(reads) < MOVES, f"the completion read the parts {len(reads)} times"
    await mp.get(s.bucket, "mp", up.upload_id)  # still open: nothing committed, nothing lost

    reads.extend([1] * MOVES)  # the moves are over: the client's retry completes it
    await mp.complete(s.bucket, "mp", up.upload_id, listed)
    assert await s.read("mp") == body
