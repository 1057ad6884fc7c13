"""A node whose data directory is on tmpfs (the chaos `fill_disk` fault mounts one): a
shard it just wrote reads back. Its hot-read path asks `preadv(RWF_NOWAIT)`, which tmpfs
refuses with EOPNOTSUPP rather than EAGAIN; that must mean "read it in the thread", not 500."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from ops.localports import free_port
from storage.shards.auth import load_or_create_secret
from tests.contract.node_harness import (
    Api,
    Node,
    make_shard,
    shard_path,
    start_node,
    stop_node,
)

SHM = Path("/dev/shm")


def _on_tmpfs(path: Path) -> bool:
    with open("/proc/mounts") as fh:
        mounts = [line.split()[1:3] for line in fh]
    best = max((m for m in mounts if str(path).startswith(m[0])), key=lambda m: len(m[0]),
               default=None)
    return best is not None and best[1] == "tmpfs"


@pytest.fixture
def tmpfs_node() -> Iterator[Node]:
    if not SHM.is_dir() or not _on_tmpfs(SHM):
        pytest.skip("no tmpfs at /dev/shm")
    base = Path(tempfile.mkdtemp(prefix="tessera-tmpfs-node-", dir=SHM))
    try:
        secret_file = base / "cluster.key"
        secret = load_or_create_secret(secret_file)
        data = base / "data"
        port = free_port()
        proc, url, log = start_node(base, [
            "--id", "n1", "--listen", f"127.0.0.1:{port}", "--zone", "az1", "--data",
            str(data), "--secret-file", str(secret_file), "--window", "60",
            "--shard-size-limit", str(16 * 1024 * 1024)])
        try:
            yield Node(url=url, host="127.0.0.1", port=port, data=data, base=base,
                       secret=secret, proc=proc, log=log)
        finally:
            stop_node(proc)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("frames,block_size", [(3, 64 * 1024), (3, 1024 * 1024)])
async def test_a_shard_written_on_tmpfs_reads_back(tmpfs_node: Node, frames: int,
                                                   block_size: int) -> None:
    async with aiohttp.ClientSession() as http:
        api = Api(tmpfs_node, http)
        sid, _, _, body = make_shard(index=1, frames=frames, block_size=block_size, last=777)
        status, _, answer = await api.call("PUT", f"/v1/shards/{sid}", data=body,
                                           headers={"X-Tessera-Segments": str(frames)})
        assert status == 201, answer
        status, _, got = await api.call("GET", f"/v1/shards/{sid}")
        assert status == 200, got[:300]
        assert got == body
        assert shard_path(tmpfs_node, sid).read_bytes() == body
        assert shard_path(tmpfs_node, sid).size == len(body)
