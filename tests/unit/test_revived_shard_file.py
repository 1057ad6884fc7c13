"""A shard file whose unlink was lost at a power cut comes back (`DiskShardStore.delete`: a
file's unlink is not fsynced, the orphan sweep repeats it). With packing on by default such
a file can sit beside a packed copy of the same id written since: reads, stat and listing
must take the packed copy (the newer word), and one DELETE must remove both; a revived
file alone must be listed with its own (old) age and be deleted by the sweep's DELETE."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tests.contract.node_harness import make_shard
from tests.unit.test_packed_node import BLOCK, PACK_MAX, Node, put, same_header_other_bytes


async def test_a_revived_file_never_shadows_the_packed_copy_and_goes_with_its_delete(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    sid, h, _, body = make_shard(frames=2, block_size=BLOCK, last=None)
    old = Node(data, 0)  # the id once held as a file (older layout, or above the limit)
    await old.start()
    try:
        stale = same_header_other_bytes(h, 2)
        assert (await put(old, stale, sid))[0] == 201
        kept = tmp_path / "kept"
        shutil.copy2(old.store.shard_path(sid), kept)  # what the disk still holds
        assert (await old.call("DELETE", f"/v1/shards/{sid}"))[0] in (200, 204)
    finally:
        await old.stop()
    on = Node(data, PACK_MAX)
    await on.start()
    try:
        assert (await put(on, body, sid))[0] == 201  # packed now
        assert on.store.packs is not None and sid in on.store.packs.index
    finally:
        await on.stop()
    path = Path(on.store.shard_path(sid))
    os.link(kept, path)  # the power cut: the unlink of the file is undone
    os.utime(path, (1.0, 1.0))
    on = Node(data, PACK_MAX)
    await on.start()
    try:
        assert await on.call("GET", f"/v1/shards/{sid}?first=0&count=2") == (200, body)
        status, got = await on.call("GET", f"/v1/shards/{sid}/stat")
        assert status == 200 and json.loads(got)["age_s"] < 3600  # the packed copy's age
        status, got = await on.call("GET", "/v1/shards")
        assert json.loads(got)["shards"].count(sid) == 1
        assert (await on.call("DELETE", f"/v1/shards/{sid}"))[0] in (200, 204)
        assert not path.exists() and sid not in on.store.packs.index  # type: ignore[union-attr]
        assert (await on.call("GET", f"/v1/shards/{sid}?first=0&count=2"))[0] == 404
    finally:
        await on.stop()


async def test_a_revived_file_alone_is_listed_old_and_deleted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    sid, _, _, body = make_shard(frames=2, block_size=BLOCK, last=None)
    old = Node(data, 0)
    await old.start()
    try:
        assert (await put(old, body, sid))[0] == 201
        path = Path(old.store.shard_path(sid))
    finally:
        await old.stop()
    os.utime(path, (1.0, 1.0))  # a file deleted long ago, revived by the cut
    on = Node(data, PACK_MAX)
    await on.start()
    try:
        status, got = await on.call("GET", "/v1/shards")
        assert sid in json.loads(got)["shards"]
        status, got = await on.call("GET", f"/v1/shards/{sid}/stat")
        assert status == 200 and json.loads(got)["age_s"] > 86400  # past the orphan grace
        assert (await on.call("DELETE", f"/v1/shards/{sid}"))[0] in (200, 204)
        assert not path.exists()
        assert (await on.call("GET", f"/v1/shards/{sid}?first=0&count=2"))[0] == 404
    finally:
        await on.stop()


async def _file_beside_packed(tmp_path: Path) -> tuple[Path, str, bytes, Path]:
    """A node's data dir where shard `sid` is packed and a revived file of it sits beside
    (a power cut undid the file's unlink); returns (data dir, sid, packed body, file)."""
    data = tmp_path / "data"
    sid, h, _, body = make_shard(frames=2, block_size=BLOCK, last=None)
    old = Node(data, 0)
    await old.start()
    try:
        assert (await put(old, same_header_other_bytes(h, 2), sid))[0] == 201
        kept = tmp_path / "kept"
        shutil.copy2(old.store.shard_path(sid), kept)
        assert (await old.call("DELETE", f"/v1/shards/{sid}"))[0] in (200, 204)
    finally:
        await old.stop()
    on = Node(data, PACK_MAX)
    await on.start()
    try:
        assert (await put(on, body, sid))[0] == 201
    finally:
        await on.stop()
    path = Path(on.store.shard_path(sid))
    os.link(kept, path)
    return data, sid, body, path


async def test_a_file_a_whole_packed_copy_shadows_is_removed_at_start(tmp_path: Path) -> None:
    """review19i L2: the file is dropped at start (the packed copy checked first), so it is
    counted once and cannot be served after the packed copy is quarantined."""
    data, sid, body, path = await _file_beside_packed(tmp_path)
    on = Node(data, PACK_MAX)
    await on.start()
    try:
        assert not path.exists()
        usage = await on.store.usage()
        assert (usage["shards"], usage["used_bytes"]) == (1, len(body))
        assert await on.call("GET", f"/v1/shards/{sid}?first=0&count=2") == (200, body)
    finally:
        await on.stop()


async def test_a_file_beside_a_damaged_packed_copy_is_kept(tmp_path: Path) -> None:
    """The packed copy fails its checks: the file may be the only good copy, so it stays."""
    data, sid, _, path = await _file_beside_packed(tmp_path)
    probe = Node(data, PACK_MAX)
    await probe.start()
    try:
        packs = probe.store.packs
        assert packs is not None
        loc = packs.locate(sid)
        assert loc is not None
        pack = packs.path_of(loc.seq)
    finally:
        await probe.stop()
    assert not path.exists()  # that start removed it: plant it again, then spoil the pack
    shutil.copy2(tmp_path / "kept", path)
    with open(pack, "r+b") as f:
        f.seek(loc.offset + loc.length - 8)
        byte = f.read(1)
        f.seek(loc.offset + loc.length - 8)
        f.write(bytes([byte[0] ^ 0xFF]))
    on = Node(data, PACK_MAX)
    await on.start()
    try:
        assert path.exists()
        assert (await on.store.usage())["shards"] == 2
    finally:
        await on.stop()
