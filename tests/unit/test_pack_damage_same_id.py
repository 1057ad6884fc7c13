"""packs21 (mend20i's residual): at start a revived stale shard file beats the packed copy
of its id only when the pack scan found damage that could have held a newer record of THAT
id (its lost tombstone). Rot in another shard's record after the packed copy (its head or
its trailer) names that other shard: the packed copy still wins and the stale file goes."""

from __future__ import annotations

import os
from pathlib import Path

from nodes import packformat as pf
from nodes.packdamage import held_ids
from tests.contract.node_harness import make_shard
from tests.unit.test_packed_node import BLOCK, PACK_MAX, Node, put
from tests.unit.test_revived_shard_file import _file_beside_packed


async def test_rot_in_other_shards_records_never_lets_a_stale_file_win(
        tmp_path: Path) -> None:
    data, sid, body, path = await _file_beside_packed(tmp_path)
    other, _, _, other_body = make_shard(frames=2, block_size=BLOCK, last=None)
    third, _, _, third_body = make_shard(frames=2, block_size=BLOCK, last=None)
    fourth, _, _, fourth_body = make_shard(frames=2, block_size=BLOCK, last=None)
    on = Node(data, PACK_MAX)
    await on.start()
    try:  # that start dropped the file: plant it again below; two more shards packed after
        assert (await put(on, other_body, other))[0] == 201
        assert (await put(on, third_body, third))[0] == 201
        assert (await put(on, fourth_body, fourth))[0] == 201  # complete: no torn tail
        packs = on.store.packs
        assert packs is not None
        loc, hit, hit2 = packs.locate(sid), packs.locate(other), packs.locate(third)
        assert loc is not None and hit is not None and hit2 is not None
        assert hit.seq == hit2.seq == loc.seq and loc.offset < hit.offset < hit2.offset
        pack = packs.path_of(hit.seq)
    finally:
        await on.stop()
    assert not path.exists()
    os.link(tmp_path / "kept", path)  # revived again
    with open(pack, "r+b") as f:  # one's trailer (a bad record: its head names it), the
        for at in (hit.offset + hit.length + 1, hit2.offset - 20):  # next one's head (a gap:
            # known by its body)
            f.seek(at)
            byte = f.read(1)
            f.seek(at)
            f.write(bytes([byte[0] ^ 0xFF]))
    again = Node(data, PACK_MAX)
    await again.start()
    try:
        packs = again.store.packs
        assert packs is not None and len(packs.damage) == 1  # the rot was found
        harm = packs.damage[0]
        assert len(harm.bad) == 1 and len(harm.gaps) == 1 and harm.torn is None
        got = await again.call("GET", f"/v1/shards/{sid}?first=0&count=2")
        print("damage:", getattr(harm, "held", None), "stale file kept:", path.exists(), "packed copy indexed:",
              sid in packs.index, "serves the packed bytes:", got == (200, body))
        assert got == (200, body) and sid in packs.index and not path.exists()
    finally:
        await again.stop()


def _pack(*recs: tuple[int, str, bytes]) -> tuple[bytearray, list[int]]:
    """Records (kind, shard id, body) as one pack's bytes, and each record's head offset."""
    out, offs = bytearray(), []
    for kind, sid, body in recs:
        stripe, index = bytes.fromhex(sid.split(".")[0]), int(sid.split(".")[1])
        offs.append(len(out))
        out += b"".join(bytes(p) for p in pf.encode(kind, stripe, index, 1, [body] if body else []))
    return out, offs


def test_a_gap_is_known_only_as_far_as_its_records_name_themselves() -> None:
    """A PUT whose head rotted is named by its verified body; a tombstone whose head rotted
    names nothing: its range could hold any id (None), the same id's included."""
    x, _, _, xb = make_shard(frames=3, block_size=BLOCK, last=100)
    y, _, _, yb = make_shard(frames=2, block_size=BLOCK, last=None)
    sid = make_shard()[0]
    raw, offs = _pack((pf.PUT, x, xb), (pf.TOMBSTONE, sid, b""), (pf.PUT, y, yb))
    raw[offs[0] + 10] ^= 0xFF  # X's head
    got = pf.scan(pf.bytes_reader(raw), len(raw))
    assert got.gaps == [(offs[0], offs[1])]
    assert held_ids(pf.bytes_reader(raw), *got.gaps[0]) == frozenset({x})
    raw[offs[1] + 10] ^= 0xFF  # and the tombstone's
    got = pf.scan(pf.bytes_reader(raw), len(raw))
    assert got.gaps == [(offs[0], offs[2])]
    assert held_ids(pf.bytes_reader(raw), *got.gaps[0]) is None
