"""review20d F4: a packed copy superseded by a rewrite's shard file (packing off now, or the
new copy above the limit) is removed by a TOMBSTONE. If that tombstone is lost (rot, or a
torn tail), the old packed record is indexed again at the restart - and `nodes.packshadow.file_shadowed`
then deletes the acknowledged rewrite's FILE and serves the old bytes. The stripe is live
and names this node, so the orphan sweep never looks at it."""

from __future__ import annotations

from pathlib import Path

from tests.contract.node_harness import make_shard
from tests.unit.test_packed_node import (
    BLOCK,
    PACK_MAX,
    Node,
    _put_replace,
    packs_of,
    put,
    same_header_other_bytes,
)


async def test_a_lost_tombstone_never_undoes_an_acknowledged_rewrite(tmp_path: Path) -> None:
    data = tmp_path / "data"
    sid, h, _, body = make_shard(frames=2, block_size=BLOCK, last=None)
    on = Node(data, PACK_MAX)
    await on.start()
    try:
        assert (await put(on, body, sid))[0] == 201  # packed
    finally:
        await on.stop()
    off = Node(data, 0)  # packing switched off: the rewrite is a file
    await off.start()
    new_body = same_header_other_bytes(h, 2)
    try:
        status, doc = await _put_replace(off, sid, new_body)
        assert status == 201, doc
        assert Path(off.store.shard_path(sid)).exists()
        assert await off.call("GET", f"/v1/shards/{sid}?first=0&count=2") == (200, new_body)
    finally:
        await off.stop()
    pack = packs_of(off)[-1]
    raw = bytearray(pack.read_bytes())
    raw[-5] ^= 0xFF  # rot in the tombstone, the pack's last record
    pack.write_bytes(bytes(raw))
    again = Node(data, 0)
    await again.start()
    try:
        got = await again.call("GET", f"/v1/shards/{sid}?first=0&count=2")
        print("file still there:", Path(again.store.shard_path(sid)).exists(),
              "serves new:", got == (200, new_body), "serves old:", got == (200, body))
        assert got == (200, new_body)
    finally:
        await again.stop()


async def test_a_rotten_rewrite_file_never_tombstones_the_packed_copy(tmp_path: Path) -> None:
    """mend20i: with the tombstone lost, a rewrite's file that fails its checks is kept
    but tombstones nothing: the start never destroys a copy on a doubt."""
    data = tmp_path / "data"
    sid, h, _, body = make_shard(frames=2, block_size=BLOCK, last=None)
    on = Node(data, PACK_MAX)
    await on.start()
    try:
        assert (await put(on, body, sid))[0] == 201  # packed
    finally:
        await on.stop()
    off = Node(data, 0)
    await off.start()
    try:
        assert (await _put_replace(off, sid, same_header_other_bytes(h, 2)))[0] == 201
    finally:
        await off.stop()
    pack = packs_of(off)[-1]
    raw = bytearray(pack.read_bytes())
    raw[-5] ^= 0xFF  # the tombstone rots
    pack.write_bytes(bytes(raw))
    path = Path(off.store.shard_path(sid))
    rot = bytearray(path.read_bytes())
    rot[-3] ^= 0xFF  # and so does the rewrite's file
    path.write_bytes(bytes(rot))
    again = Node(data, 0)
    await again.start()
    try:
        packs = again.store.packs
        print("file kept:", path.exists(), "packed copy indexed:",
              packs is not None and sid in packs.index)
        assert path.exists() and packs is not None and sid in packs.index
    finally:
        await again.stop()
