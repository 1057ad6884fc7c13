"""A node with packing on ([packs] max_shard_bytes, issue 17 step 4): whole shards up to the
limit go to its packs, not a file each, and read, stat, list, delete, replace and restart
as shard files do; larger shards and shard files from before stay files and readable."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from nodes import packformat as pf
from nodes.app import create_app
from nodes.disk import DiskShardStore
from nodes.handlers import NODE
from nodes.leanput import LeanListener
from storage.config import PackSettings
from storage.shards.auth import sign
from storage.shards.format import HEADER_BYTES, ShardHeader, pack_frame
from tests.contract.node_harness import make_shard
from tests.unit.test_node_get_abort import SECRET, _exchange, _split

BLOCK = 64 * 1024
PACK_MAX = 1 << 20


class Node:
    """An in-process node (lean front before aiohttp) that can be restarted on its data."""

    def __init__(self, data: Path, pack_max: int | None) -> None:  # None: the default
        self.data, self.pack_max = data, pack_max
        self.host, self.port = "", 0

    async def start(self) -> None:
        packs = None if self.pack_max is None else PackSettings(max_shard_bytes=self.pack_max,
                                                                       reserve_bytes=0)
        app = create_app("n1", "az1", self.data, SECRET, 60, packs=packs)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        self.listener = LeanListener(app[NODE], self.runner)
        self.host, self.port = await self.listener.start("127.0.0.1", 0)
        self.store: DiskShardStore = app[NODE].store

    async def stop(self) -> None:
        await self.listener.stop(5)
        await self.runner.cleanup()

    async def call(self, method: str, path: str, body: bytes = b"",
                   headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        if headers:
            answer = await self._raw(method, path, headers)
        else:
            answer = await _exchange(self.host, self.port, method, path, body)
        head, rest = _split(answer)
        return int(head.split()[1]), rest

    async def _raw(self, method: str, path: str, extra: dict[str, str]) -> bytes:
        import asyncio
        headers = {**sign(SECRET, method, path, "n1"), **extra}
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write((f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                          "Content-Length: 0\r\n"
                          + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                          + "\r\n").encode())
            return await asyncio.wait_for(reader.read(), 30)
        finally:
            writer.close()


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    n = Node(tmp_path / "data", PACK_MAX)
    await n.start()
    try:
        yield n
    finally:
        await n.stop()


def same_header_other_bytes(h: ShardHeader, frames: int) -> bytes:
    return h.pack() + b"".join(pack_frame(h, i, os.urandom(BLOCK)) for i in range(frames))


def packs_of(n: Node) -> list[Path]:
    return sorted((n.data / "packs").glob("*.pack"))


async def put(n: Node, body: bytes, sid: str) -> tuple[int, bytes]:
    return await n.call("PUT", f"/v1/shards/{sid}", body)


async def test_a_whole_shard_is_packed_and_reads_back(node: Node) -> None:
    sid, h, _, body = make_shard(frames=4, block_size=BLOCK, last=None)
    status, doc = await put(node, body, sid)
    assert status == 201, doc
    assert not Path(node.store.shard_path(sid)).exists()
    assert len(packs_of(node)) == 1 and node.store.packs is not None
    assert sid in node.store.packs.index
    for first in (0, 2):
        status, got = await node.call("GET", f"/v1/shards/{sid}?first={first}&count=4")
        assert status == 200 and got == body[:HEADER_BYTES] + body[h.frame_offset(first):]
    status, got = await node.call("GET", f"/v1/shards/{sid}/stat")
    info = json.loads(got)
    assert status == 200 and info["size"] == len(body) and info["segments"] == 4
    assert 0 <= info["age_s"] < 3600
    status, got = await node.call("GET", "/v1/shards")
    assert status == 200 and sid in json.loads(got)["shards"]
    status, got = await node.call("POST", f"/v1/shards/{sid}/verify")
    assert status == 200 and json.loads(got)["corrupt_segments"] == []


async def test_same_bytes_again_other_bytes_refused_replace_and_delete(node: Node) -> None:
    sid, h, blocks, body = make_shard(frames=2, block_size=BLOCK, last=None)
    assert (await put(node, body, sid))[0] == 201
    assert (await put(node, body, sid))[0] == 201  # a retry of the same bytes
    other = same_header_other_bytes(h, 2)
    status, doc = await put(node, other, sid)
    assert status == 409 and b"shard_exists" in doc
    status, got = await node.call("GET", f"/v1/shards/{sid}?first=0&count=2")
    assert got == body
    status, doc = await node.call("DELETE", f"/v1/shards/{sid}")
    assert status in (200, 204), doc
    assert (await node.call("GET", f"/v1/shards/{sid}?first=0&count=2"))[0] == 404
    assert sid not in node.store.packs.index  # type: ignore[union-attr]


async def test_restart_keeps_packed_shards_and_deletes(tmp_path: Path) -> None:
    n = Node(tmp_path / "data", PACK_MAX)
    await n.start()
    shards = [make_shard(frames=3, block_size=BLOCK, last=None) for _ in range(5)]
    try:
        for sid, _, _, body in shards:
            assert (await put(n, body, sid))[0] == 201
        await n.call("DELETE", f"/v1/shards/{shards[0][0]}")
    finally:
        await n.stop()
    n = Node(tmp_path / "data", PACK_MAX)
    await n.start()
    try:
        assert (await n.call("GET", f"/v1/shards/{shards[0][0]}?first=0&count=3"))[0] == 404
        for sid, _, _, body in shards[1:]:
            assert await n.call("GET", f"/v1/shards/{sid}?first=0&count=3") == (200, body)
        usage = await n.store.usage()
        assert usage["shards"] == 4
    finally:
        await n.stop()


async def test_files_from_before_and_packs_after_a_switch(tmp_path: Path) -> None:
    """Shard files written with packing off stay readable with it on; packed shards stay
    readable with it off again; a shard above the limit is still a file."""
    data = tmp_path / "data"
    old = Node(data, 0)
    await old.start()
    sid_a, _, _, body_a = make_shard(frames=2, block_size=BLOCK, last=None)
    try:
        assert (await put(old, body_a, sid_a))[0] == 201
        assert Path(old.store.shard_path(sid_a)).exists() and old.store.packs is None
    finally:
        await old.stop()
    on = Node(data, 3 * BLOCK)
    await on.start()
    sid_b, _, _, body_b = make_shard(frames=2, block_size=BLOCK, last=None)
    sid_c, _, _, body_c = make_shard(frames=5, block_size=BLOCK, last=None)  # > 3 blocks
    try:
        assert await on.call("GET", f"/v1/shards/{sid_a}?first=0&count=2") == (200, body_a)
        assert (await put(on, body_a, sid_a))[0] == 201  # same bytes: the file decides
        assert Path(on.store.shard_path(sid_a)).exists()
        assert (await put(on, body_b, sid_b))[0] == 201
        assert (await put(on, body_c, sid_c))[0] == 201
        assert not Path(on.store.shard_path(sid_b)).exists()
        assert Path(on.store.shard_path(sid_c)).exists()
        status, got = await on.call("GET", "/v1/shards")
        assert {sid_a, sid_b, sid_c} <= set(json.loads(got)["shards"])
    finally:
        await on.stop()
    off = Node(data, 0)
    await off.start()
    try:
        for sid, body, n in ((sid_a, body_a, 2), (sid_b, body_b, 2), (sid_c, body_c, 5)):
            assert await off.call("GET", f"/v1/shards/{sid}?first=0&count={n}") == (200, body)
    finally:
        await off.stop()


async def test_by_default_a_node_packs_and_reads_its_shard_files_from_before(
        tmp_path: Path) -> None:
    """The upgrade: a data directory of shard files (packing off, the old default) under a
    node with the default settings: the files read back, new small shards are packed."""
    data = tmp_path / "data"
    old = Node(data, 0)
    await old.start()
    files = [make_shard(frames=2, block_size=BLOCK, last=None) for _ in range(3)]
    try:
        for sid, _, _, body in files:
            assert (await put(old, body, sid))[0] == 201
    finally:
        await old.stop()
    n = Node(data, None)
    await n.start()
    sid_new, _, _, body_new = make_shard(frames=2, block_size=BLOCK, last=None)
    try:
        for sid, _, _, body in files:
            assert await n.call("GET", f"/v1/shards/{sid}?first=0&count=2") == (200, body)
            assert Path(n.store.shard_path(sid)).exists()
        assert (await put(n, body_new, sid_new))[0] == 201
        assert n.store.packs is not None and sid_new in n.store.packs.index
        assert not Path(n.store.shard_path(sid_new)).exists()
        status, got = await n.call("GET", "/v1/shards")
        assert {sid_new, *(f[0] for f in files)} <= set(json.loads(got)["shards"])
    finally:
        await n.stop()


async def test_a_repair_rewrite_of_a_shard_file_moves_it_into_a_pack(tmp_path: Path) -> None:
    data = tmp_path / "data"
    old = Node(data, 0)
    await old.start()
    sid, h, _, body = make_shard(frames=2, block_size=BLOCK, last=None)
    try:
        assert (await put(old, body, sid))[0] == 201
    finally:
        await old.stop()
    n = Node(data, PACK_MAX)
    await n.start()
    try:
        new_body = same_header_other_bytes(h, 2)
        status, doc = await _put_replace(n, sid, new_body)
        assert status == 201, doc
        assert not Path(n.store.shard_path(sid)).exists()
        assert await n.call("GET", f"/v1/shards/{sid}?first=0&count=2") == (200, new_body)
        assert (await n.store.usage())["shards"] == 1
    finally:
        await n.stop()


async def _put_replace(n: Node, sid: str, body: bytes) -> tuple[int, bytes]:
    """A PUT with the rewrite flag a repair sends."""
    import asyncio

    from nodes.handlers import REPLACE_HEADER
    from storage.shards.auth import seal
    path = f"/v1/shards/{sid}"
    headers = sign(SECRET, "PUT", path, "n1", headers={REPLACE_HEADER: "1"}, trailer=True)
    sealed = seal(SECRET, headers, body)
    reader, writer = await asyncio.open_connection(n.host, n.port)
    try:
        writer.write((f"PUT {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                      f"Content-Length: {len(sealed)}\r\n"
                      + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                      + "\r\n").encode() + sealed)
        answer = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    head, rest = _split(answer)
    return int(head.split()[1]), rest


def flip_packed(n: Node, sid: str, offset: int) -> None:
    """Flip one byte of a packed shard where it lies in its pack (bit rot at rest)."""
    where = n.store.locate(sid)
    with open(where.path, "r+b") as f:
        f.seek(where.base + offset)
        b = f.read(1)
        f.seek(where.base + offset)
        f.write(bytes([b[0] ^ 0x20]))


@pytest.mark.parametrize("first", [0, 1])  # the lean front's GET, aiohttp's
async def test_a_rotten_packed_shard_is_refused_and_set_aside(node: Node, first: int) -> None:
    """Bit rot in a packed shard is found without keys (its frame checksums) by a read:
    409, its bytes copied to quarantine with a sidecar naming the pack and offset, a
    tombstone (404 after), and the shards around it in the pack untouched."""
    shards = [make_shard(frames=3, block_size=BLOCK, last=None) for _ in range(3)]
    for sid, _, _, body in shards:
        assert (await put(node, body, sid))[0] == 201
    sid, h, _, body = shards[1]
    flip_packed(node, sid, h.frame_offset(2) + 50)
    status, doc = await node.call("GET", f"/v1/shards/{sid}?first={first}&count=3")
    if status == 200:  # the bad frame was past the first window: the body is cut short
        assert len(doc) < len(body) - h.frame_offset(first) + HEADER_BYTES
    else:
        assert status == 409, doc
    assert (await node.call("GET", f"/v1/shards/{sid}?first=0&count=3"))[0] == 404
    sides = await node.store.quarantined()
    assert [s["shard_id"] for s in sides] == [sid]
    assert str(sides[0]["from"]).startswith("packs/") and sides[0]["size"] == len(body)
    kept = next(node.store.quarantine_dir.glob(f"{sid}.*[0-9]"))
    assert kept.read_bytes() != body and len(kept.read_bytes()) == len(body)
    for other, _, _, other_body in (shards[0], shards[2]):
        assert await node.call("GET", f"/v1/shards/{other}?first=0&count=3") == (200, other_body)


async def test_quarantine_spares_a_copy_appended_since_the_bad_read(node: Node) -> None:
    """A read found a packed shard bad; before its quarantine ran, a repair appended a good
    copy to the same pack. The quarantine names the record it read (pack and offset), so
    the good copy stays."""
    sid, h, _, body = make_shard(frames=2, block_size=BLOCK, last=None)
    assert (await put(node, body, sid))[0] == 201
    flip_packed(node, sid, h.frame_offset(1) + 9)
    check = await node.store.verify(sid)
    assert check.bad == [1]
    repaired = same_header_other_bytes(h, 2)
    bad_at = node.store.locate(sid)
    assert (await _put_replace(node, sid, repaired))[0] == 201
    now_at = node.store.locate(sid)
    assert now_at.path == bad_at.path and now_at.base != bad_at.base  # same pack, later
    assert await node.store.quarantine(sid, "frame 1", check.file) is None
    assert await node.call("GET", f"/v1/shards/{sid}?first=0&count=2") == (200, repaired)


async def test_a_torn_tail_at_restart_is_set_aside_and_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A node that died in mid-append: at its restart the acknowledged shards read back,
    the torn bytes are in quarantine and a "pack damage" warning names them."""
    n = Node(tmp_path / "data", PACK_MAX)
    await n.start()
    sid, _, _, body = make_shard(frames=2, block_size=BLOCK, last=None)
    try:
        assert (await put(n, body, sid))[0] == 201
    finally:
        await n.stop()
    pack = packs_of(n)[-1]
    size = pack.stat().st_size
    with open(pack, "ab") as f:
        f.write(pf.encode_head(pf.PUT, bytes(16), 1, 1, 5000) + b"half a shard")
    caplog.set_level(logging.WARNING)
    n = Node(tmp_path / "data", PACK_MAX)
    await n.start()
    try:
        assert await n.call("GET", f"/v1/shards/{sid}?first=0&count=2") == (200, body)
        assert pack.stat().st_size == size
        assert len(list(n.store.quarantine_dir.glob("*.torn"))) == 1
        lines = [json.loads(r.getMessage()) for r in caplog.records
                 if "pack damage" in r.getMessage()]
        assert len(lines) == 1 and lines[0]["torn"] == [size, size + 48 + 12]
    finally:
        await n.stop()


async def test_batched_puts_are_packed_and_a_shard_file_still_decides(node: Node) -> None:
    """Small stripes' shards come in batches (`/v1/batch`): with packing on they are packed
    like single PUTs (were: always a file each), by the same rule (`put_packed`)."""
    from nodes.batch import _put_all

    st = node.runner.app[NODE]
    shards = [make_shard(index=i, frames=2, block_size=BLOCK, last=None) for i in range(3)]
    (a, _, _, body_a), (b, _, _, body_b), (f, hf, _, body_f) = shards
    held = Path(node.store.shard_path(f))  # a shard file from before packing was on
    held.parent.mkdir(parents=True, exist_ok=True)
    held.write_bytes(same_header_other_bytes(hf, 2))
    results: list[dict[str, object] | None] = [None] * 3
    await _put_all(st, [(0, a, body_a, 2, False), (1, b, body_b, 2, False),
                        (2, f, body_f, 2, False)], results)
    assert [r["status"] for r in results if r] == [201, 201, 409]  # the file decides f
    packs = node.store.packs
    assert packs is not None and a in packs.index and b in packs.index
    assert f not in packs.index
    assert not Path(node.store.shard_path(a)).exists()
    for sid, body in ((a, body_a), (b, body_b)):
        status, got = await node.call("GET", f"/v1/shards/{sid}?first=0&count=2")
        assert status == 200 and got == body
    again: list[dict[str, object] | None] = [None] * 2
    await _put_all(st, [(0, a, body_a, 2, False), (1, f, body_f, 2, True)], again)
    assert [r["status"] for r in again if r] == [201, 201]  # a retry; a rewrite of f packs it
    assert f in packs.index and not held.exists()
