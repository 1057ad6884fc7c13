"""A large streamed shard PUT to a real node process (`nodes.directio`): the shard
commits byte for byte and reads back, and its bulk was written around the page cache (a
read that must not wait for the disk finds it absent), unlike a small shard's; a data
shard's pages are then read back into the page cache (GETs read data shards), a parity
shard's are not."""

from __future__ import annotations

import asyncio
import errno
import os

import pytest

from nodes.directio import BUFFER_BYTES, DIRECT_MIN_BYTES
from nodes.leanput import LEAN_MAX_BODY
from storage.widereads import WIDE_BODY_BYTES
from tests.contract.node_harness import (
    Api,
    Node,
    api,
    http,
    make_shard,
    node,
    shard_path,
    wait_for_log,
)
from tests.pagecache import resident_pages

__all__ = ["api", "http", "node"]  # fixtures, used by name


def _cached(path: os.PathLike[str], offset: int, n: int) -> bool:
    """Whether bytes [offset, offset+n) of the file are all in the page cache."""
    buf = bytearray(n)
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.preadv(fd, [buf], offset, os.RWF_NOWAIT) == n
    except BlockingIOError:
        return False
    except OSError as exc:  # tmpfs: no RWF_NOWAIT, so no way to tell here
        if exc.errno != errno.EOPNOTSUPP:
            raise
        pytest.skip("RWF_NOWAIT not supported on this file system")
    finally:
        os.close(fd)


def assert_bulk_uncached(path: os.PathLike[str], failure: str) -> None:
    """Fail with `failure` if the shard's first BUFFER_BYTES are in the page cache (skip
    where the file system has no O_DIRECT, the only place a cached bulk is allowed)."""
    if _cached(path, 0, BUFFER_BYTES):
        try:
            os.close(os.open(path, os.O_RDONLY | os.O_DIRECT))
        except OSError:
            pytest.skip("no O_DIRECT on this file system")
        pytest.fail(failure)


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="needs preadv2 RWF_NOWAIT")
@pytest.mark.parametrize("frames", [5, 3])  # ~4 MiB: a 16 MiB object's shard; ~2 MiB: an 8 MiB one's
async def test_a_large_streamed_shard_is_written_around_the_page_cache(
        api: Api, node: Node, frames: int) -> None:
    small_sid, _, _, small = make_shard(index=2, frames=3, block_size=64 * 1024, last=None)
    assert (await api.call("PUT", f"/v1/shards/{small_sid}", data=small))[0] == 201
    probe = shard_path(node, small_sid)  # its file, or its record in a pack
    if not _cached(probe.path, probe.base, len(small)):
        pytest.skip("this file system keeps no written pages cached")
    sid, _, _, body = make_shard(index=4, frames=frames, block_size=BUFFER_BYTES,
                                 last=777)  # parity
    assert len(body) > LEAN_MAX_BODY  # streamed, not taken whole
    status, _, answer = await api.call("PUT", f"/v1/shards/{sid}", data=body,
                                       headers={"X-Tessera-Segments": str(frames)})
    assert status == 201, answer
    path = shard_path(node, sid)
    assert_bulk_uncached(path, "the bulk of a large shard went through the page cache")
    status, _, got = await api.call("GET", f"/v1/shards/{sid}")
    assert status == 200 and got == body
    assert path.read_bytes() == body



async def test_a_large_data_shard_is_read_back_into_the_page_cache_after_its_commit(
        api: Api, node: Node) -> None:
    sid, _, _, body = make_shard(index=1, frames=5, block_size=BUFFER_BYTES, last=777)
    status, _, answer = await api.call("PUT", f"/v1/shards/{sid}", data=body,
                                       headers={"X-Tessera-Segments": "5"})
    assert status == 201, answer
    path = shard_path(node, sid)
    # The hint's reads are queued at the commit and finish on the disk's time: wait for
    # them (a node that never asked would leave the bulk uncached for good).
    for _ in range(600):
        cached, pages = resident_pages(path)
        if cached == pages:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the data shard's pages were not read back into the page cache")
    assert path.read_bytes() == body


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="needs preadv2 RWF_NOWAIT")
async def test_aiohttps_streamed_handler_writes_a_2_mib_shard_around_the_page_cache(
        api: Api, node: Node) -> None:
    """`Expect: 100-continue` hands the PUT to aiohttp (`handlers.put_shard`), which must
    take the same rule as the lean front (`directio.writes_direct`), not a threshold of
    its own: a ~2 MiB parity shard's bulk stays out of the page cache there too."""
    small_sid, _, _, small = make_shard(index=2, frames=3, block_size=64 * 1024, last=None)
    assert (await api.call("PUT", f"/v1/shards/{small_sid}", data=small))[0] == 201
    probe = shard_path(node, small_sid)  # its file, or its record in a pack
    if not _cached(probe.path, probe.base, len(small)):
        pytest.skip("this file system keeps no written pages cached")
    sid, _, _, body = make_shard(index=4, frames=3, block_size=BUFFER_BYTES, last=777)
    assert DIRECT_MIN_BYTES < len(body) < WIDE_BODY_BYTES  # the range the rule widened
    rid = "direct-aiohttp-" + sid[:8]
    status, _, answer = await api.call(
        "PUT", f"/v1/shards/{sid}", data=body, expect100=True,
        headers={"X-Tessera-Segments": "3", "X-Request-Id": rid})
    assert status == 201, answer
    rec = await wait_for_log(node, rid)
    assert rec.get("front") != "lean", rec  # aiohttp's handler took it
    path = shard_path(node, sid)
    assert_bulk_uncached(path, "aiohttp's handler wrote a 2 MiB shard through the page cache")
    assert path.read_bytes() == body


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="needs preadv2 RWF_NOWAIT")
@pytest.mark.parametrize("expect100", [False, True])  # the lean front; aiohttp's handler
async def test_a_streamed_shard_below_the_rule_stays_in_the_page_cache(
        api: Api, node: Node, expect100: bool) -> None:
    """The other side of `writes_direct`: a ~1.5 MiB streamed shard (a 5-8 MiB object's,
    whose GETs right after its PUT cost ~1.5x when written direct) is written buffered."""
    sid, _, _, body = make_shard(index=4, frames=4, block_size=512 * 1024, last=777)
    assert LEAN_MAX_BODY < len(body) < DIRECT_MIN_BYTES
    status, _, answer = await api.call(
        "PUT", f"/v1/shards/{sid}", data=body, expect100=expect100,
        headers={"X-Tessera-Segments": "4"})
    assert status == 201, answer
    path = shard_path(node, sid)
    assert _cached(path, 0, len(body)), "a shard below the rule skipped the page cache"
