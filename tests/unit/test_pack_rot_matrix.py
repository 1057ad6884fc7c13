"""Rot anywhere in a node's packs (issue 17): one flipped byte, or the file cut short, at every
kind of place in a sealed pack (with its footer) and in the active one (scanned at restart):
a record's head (magic, length field, head crc), its body (the shard's header, a frame's
payload, a frame's crc), its trailer, the last record, a tombstone, and the footer's head,
entries, crc, end offset and magic.

After the node's store restarts on the damaged packs, for every shard:
- it is served byte-identical, or it is not served (not indexed, or its frames fail the
  check scrub and reads make): never other bytes behind passing checks;
- only a shard whose own record holds the damage (or lies past a cut) may be lost or fail;
- a shard whose frames fail is quarantined (what scrub does), and the store keeps serving:
  a new PUT is acknowledged and it and every intact shard survive another restart.
A deleted shard may come back only when its own tombstone rotted (a low: its stripe is
gone, the orphan sweep collects it again; ids are never reused)."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from nodes import packformat as pf
from nodes.disk import DiskShardStore
from nodes.packrecovery import pack_name
from nodes.shardfile import verify_file
from storage.config import PackSettings
from storage.errors import NotFound, ShardCorrupt
from tests.contract.node_harness import make_shard

SEAL = 30_000  # four 8 KiB shards fill a pack: the fifth PUT seals it with a footer
SETTINGS = PackSettings(max_shard_bytes=1 << 20, seal_bytes=SEAL)


@dataclass(frozen=True)
class Held:
    sid: str
    body: bytes
    seq: int
    start: int  # the record's head
    end: int  # past its trailer


@dataclass(frozen=True)
class Pristine:
    root: Path
    shards: list[Held]
    deleted: Held  # a PUT, then its TOMBSTONE (the record given here)
    records: dict[int, list[pf.Record]]  # pack -> its records (footer included)


def _store(root: Path) -> DiskShardStore:
    return DiskShardStore(root, packs=SETTINGS)


async def _build(root: Path) -> Pristine:
    store = _store(root)
    await store.start()
    bodies = []
    try:
        for i in range(7):
            sid, _, _, body = make_shard(index=i % 6, frames=2, block_size=4096, last=None)
            assert await store.put_packed(sid, [body], replace=False) == -1
            bodies.append((sid, body))
        gone = bodies.pop()
        assert await store.delete(gone[0])
    finally:
        await store.close()
    records = {}
    for p in sorted((root / "packs").glob("*.pack")):
        data = p.read_bytes()
        records[int(p.stem, 16)] = pf.scan(pf.bytes_reader(data), len(data)).records
    assert len(records) == 2 and records[1][-1].kind == pf.FOOTER  # sealed, then active
    by_id = {r.shard_id: (seq, r) for seq, recs in records.items() for r in recs
             if r.kind != pf.FOOTER}
    shards = [Held(sid, body, by_id[sid][0], by_id[sid][1].offset, by_id[sid][1].end)
              for sid, body in bodies]
    tomb = records[2][-1]
    assert tomb.kind == pf.TOMBSTONE and tomb.shard_id == gone[0]
    return Pristine(root, shards, Held(gone[0], gone[1], 2, tomb.offset, tomb.end), records)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    return asyncio.run(_build(tmp_path_factory.mktemp("packs") / "node"))


# -- the damage: (pack, byte offset or cut point, flip or cut), by where it lands -----------

HEAD_LEN = 36  # the body length field's offset in a record's head (`packformat._HEAD`)


def _places(p: Pristine) -> list[tuple[str, int, int, str]]:
    out = []
    for seq, recs in p.records.items():
        for i, r in enumerate(recs):
            what = f"pack{seq}.rec{i}.{'put tomb footer'.split()[r.kind - 1]}"
            spots = {"magic": r.offset, "length": r.offset + HEAD_LEN + 7,
                     "headcrc": r.offset + pf.HEAD_BYTES - 1, "trailer": r.end - 1}
            if r.kind == pf.PUT:
                spots |= {"shardheader": r.body_offset + 9,
                          "payload": r.body_offset + r.body_len // 2,
                          "framecrc": r.body_offset + r.body_len - 1}
            if r.kind == pf.FOOTER:
                spots |= {"entries": r.body_offset + 20, "entriescrc": r.end - 4 - 13,
                          "endoffset": r.end - 4 - 5, "endmagic": r.end - 4 - 2}
            out += [(f"{what}.{k}", seq, at, "flip") for k, at in spots.items()]
            out.append((f"{what}.cut", seq, r.offset + pf.HEAD_BYTES + 3, "cut"))
    return out


def _damage(root: Path, seq: int, at: int, how: str) -> None:
    path = root / "packs" / pack_name(seq)
    with open(path, "r+b") as f:
        if how == "cut":
            f.truncate(at)
            return
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0x10]))


def _hit(h: Held, seq: int, at: int, how: str) -> bool:
    """Whether the damage lands in this shard's own record (or cuts it off)."""
    if h.seq != seq:
        return False
    return h.end > at if how == "cut" else h.start <= at < h.end


def _served(store: DiskShardStore, sid: str) -> bytes | None:
    """The shard's bytes as a node serves them (its checks pass), or None."""
    where = store.locate(sid)
    if where.base == 0:  # no pack holds it (there are no shard files here)
        return None
    try:
        if verify_file(where, sid).bad:
            return None
    except (ShardCorrupt, NotFound):
        return None
    packs = store.packs
    assert packs is not None
    loc = packs.locate(sid)
    assert loc is not None
    return packs.read(loc)


async def _attack(p: Pristine, root: Path, seq: int, at: int, how: str) -> None:
    shutil.copytree(p.root, root)
    _damage(root, seq, at, how)
    store = _store(root)
    await store.start()
    intact: list[Held] = []
    try:
        for h in p.shards:
            got = _served(store, h.sid)
            assert got is None or got == h.body, f"{h.sid}: other bytes served"
            if got is None:
                assert _hit(h, seq, at, how), f"{h.sid} lost by damage outside its record"
                if store.packs is not None and store.packs.locate(h.sid) is not None:
                    assert await store.quarantine(h.sid, "rot") is not None  # scrub's move
                    assert _served(store, h.sid) is None
            else:
                intact.append(h)
        back = _served(store, p.deleted.sid)
        assert back is None or _hit(p.deleted, seq, at, how), "a delete came back"
        sid, _, _, body = make_shard(index=0, frames=2, block_size=4096, last=None)
        assert await store.put_packed(sid, [body], replace=False) == -1  # still serving
    finally:
        await store.close()
    again = _store(root)
    await again.start()
    try:
        assert _served(again, sid) == body
        for h in intact:
            assert _served(again, h.sid) == h.body, h.sid
    finally:
        await again.close()


def test_rot_anywhere_in_a_pack_is_never_served_and_costs_only_its_own_record(
        pristine: Pristine, tmp_path: Path) -> None:
    places = _places(pristine)
    assert len(places) > 50
    failures = []
    for i, (name, seq, at, how) in enumerate(places):
        try:
            asyncio.run(_attack(pristine, tmp_path / str(i), seq, at, how))
        except AssertionError as exc:
            failures.append(f"{name} ({how} at {at}): {str(exc).splitlines()[0]}")
    assert failures == []
